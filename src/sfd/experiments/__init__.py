"""Experiments built from the library, each a chain of cached, resumable stages:

- :mod:`~sfd.experiments.stages`: the stage machinery and the data stages every experiment shares
  (texture VAE -> encoder features -> SemVAE -> composite latents -> SFD -> samples);
- :mod:`~sfd.experiments.run` and :mod:`~sfd.experiments.run_metrics`: one run of the pipeline (data
  stages, SFD, samples and pictures, metrics) from a plan;
- :mod:`~sfd.experiments.custom`: ``sfd pipeline``, the plan for your images (budgets);
- :mod:`~sfd.experiments.demo`: ``sfd demo``, the plan of the embedded default on Fashion-MNIST;
- :mod:`~sfd.experiments.ablate` and :mod:`~sfd.experiments.ablate_report`: ``sfd ablate``, the
  paper's ablation grid and its table and plots.

The top of the library: the modules below (config, data, latents, flow, training, eval,
generation) do not know these exist.
"""
