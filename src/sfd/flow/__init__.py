"""Asynchronous flow matching: time convention, staged schedule, the solver registry, guidance,
and the one generation function (:mod:`sfd.flow.latent_sampling`)."""
