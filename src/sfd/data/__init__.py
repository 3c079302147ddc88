"""Datasets: image folders, Fashion-MNIST, safetensors shards of features and latents."""
