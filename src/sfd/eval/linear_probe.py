"""A linear probe: how well classes can be told apart from fixed features.

Multinomial logistic regression on standardised features, fitted full-batch with L-BFGS from a
fixed seed, so the same features give the same probe. ``sfd demo`` and ``sfd pipeline`` score
their samples and reconstructions with it (``probe_acc_*``); the probe scripts compare latents.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def train_probe(
    features: torch.Tensor, labels: torch.Tensor, classes: int, steps: int = 300
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Multinomial logistic regression (L2 1e-4) on standardised features, full-batch L-BFGS;
    returns the classifier: (N, D) features -> (N,) predicted classes."""
    mean, std = features.mean(0), features.std(0) + 1e-6
    x = (features - mean) / std
    torch.manual_seed(0)
    layer = torch.nn.Linear(x.shape[1], classes)
    opt = torch.optim.LBFGS(
        layer.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        ce = torch.nn.functional.cross_entropy(layer(x), labels)
        loss = ce + 1e-4 * layer.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return lambda f: layer((f - mean) / std).argmax(1)
