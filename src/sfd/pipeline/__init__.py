"""Experiments built from the library, each a chain of cached, resumable stages:

- :mod:`~sfd.pipeline.stages`: the stage machinery and the data stages every experiment shares
  (texture VAE -> encoder features -> SemVAE -> composite latents -> SFD -> samples);
- :mod:`~sfd.pipeline.custom`: ``sfd pipeline``, SFD end to end on your images (budgets);
- :mod:`~sfd.pipeline.demo` and :mod:`~sfd.pipeline.demo_eval`: ``sfd demo``, the embedded
  default on Fashion-MNIST and its metrics and pictures;
- :mod:`~sfd.pipeline.ablate` and :mod:`~sfd.pipeline.ablate_report`: ``sfd ablate``, the
  paper's ablation grid and its table and plots.

The top of the library: the modules below (config, data, latents, flow, training, eval,
generation) do not know these exist.
"""
