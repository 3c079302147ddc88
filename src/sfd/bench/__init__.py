"""Benchmarks (``sfd bench``):

- :mod:`~sfd.bench.throughput`: training and sampling throughput, FLOPs and MFU on this device;
- :mod:`~sfd.bench.compare`: ``sfd bench --compare REF``, this tree against another version of
  sfd, each side timed in its own :mod:`~sfd.bench.worker` process.

Nothing is imported here, so ``sfd.bench.compare`` starts without torch's import cost.
"""
