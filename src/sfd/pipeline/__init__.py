"""Experiments built from the library, each a chain of cached, resumable stages:

- :mod:`~sfd.pipeline.stages`: the stage machinery and the data stages every experiment shares
  (texture VAE -> encoder features -> SemVAE -> composite latents -> SFD -> samples);
- :mod:`~sfd.pipeline.run` and :mod:`~sfd.pipeline.metrics`: one run of the pipeline (data
  stages, SFD, samples and pictures, metrics) from a plan;
- :mod:`~sfd.pipeline.custom`: ``sfd pipeline``, the plan for your images (budgets);
- :mod:`~sfd.pipeline.demo`: ``sfd demo``, the plan of the embedded default on Fashion-MNIST;
- :mod:`~sfd.pipeline.ablate` and :mod:`~sfd.pipeline.ablate_report`: ``sfd ablate``, the
  paper's ablation grid and its table and plots.

The top of the library: the modules below (config, data, latents, flow, training, eval,
generation) do not know these exist.
"""
