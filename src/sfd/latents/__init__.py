"""Latent spaces: the composite latent, Semantic VAE, texture autoencoders, frozen encoders."""
