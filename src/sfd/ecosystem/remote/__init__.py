"""The code a diffusers export carries, as it sits in the package.

An export (``sfd export-diffusers``) is loaded without ``sfd`` by diffusers' remote code: each
component folder holds its module file, ``model_index.json`` names ``["module_file", "Class"]``,
and the user passes ``trust_remote_code=True`` (docs/ECOSYSTEM.md). The module files are this
package's own source, written verbatim: the three diffusers classes in this folder
(``transformer_sfd``, ``scheduler_sfd``, ``pipeline_sfd``) and the model and sampling maths they
import (:data:`SOURCES`), which import nothing but torch, numpy and their siblings.

In an export the files sit side by side, so the classes import their siblings flat
(``from .lightningdit import LightningDiT``); here those flat names are registered as the
package's modules themselves (not copies), so ``sfd.ecosystem.SFDPipeline`` and the exported
pipeline run the same code. diffusers copies a remote module's direct relative imports only,
so each class file imports every sibling of its folder itself (:data:`PARTS`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from sfd.flow import guidance, latent_sampling, numerics, path, progress, schedule, solvers
from sfd.latents import composite
from sfd.model import layers, lightningdit

# exported file name -> the package module whose source it is
SOURCES = {
    "layers": layers,
    "lightningdit": lightningdit,
    "composite": composite,
    "path": path,
    "progress": progress,
    "schedule": schedule,
    "solvers": solvers,
    "latent_sampling": latent_sampling,
    "guidance": guidance,
    "numerics": numerics,
}
for _name, _module in SOURCES.items():
    sys.modules.setdefault(f"{__name__}.{_name}", _module)

HERE = Path(__file__).resolve().parent

# component folder ("" = the export's root) -> (its module file and class, the siblings it needs)
PARTS = {
    "transformer": (
        "transformer_sfd",
        "SFDTransformer2DModel",
        ("lightningdit", "layers", "composite"),
    ),
    "scheduler": (
        "scheduler_sfd",
        "SFDScheduler",
        (
            "path",
            "progress",
            "schedule",
            "solvers",
            "latent_sampling",
            "guidance",
            "numerics",
        ),
    ),
    "": (
        "pipeline_sfd",
        "SFDPipeline",
        (
            "composite",
            "path",
            "progress",
            "schedule",
            "solvers",
            "latent_sampling",
            "guidance",
            "numerics",
        ),
    ),
}


def source_file(name: str) -> Path:
    """The package file an export's ``name.py`` is a copy of."""
    if name in SOURCES:
        return Path(SOURCES[name].__file__)
    return HERE / f"{name}.py"
