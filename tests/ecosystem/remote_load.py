"""Load an sfd export as a diffusers user does, without sfd, and write what it generates.

``python remote_load.py EXPORT OUT SPEC`` runs ``DiffusionPipeline.from_pretrained(EXPORT,
trust_remote_code=True)`` (``sfd`` is made unimportable first), then calls the pipeline with the
JSON ``SPEC`` (``labels``, ``seed``, ``kwargs``; optional ``scheduler`` config changes,
``threads`` and ``latent``) and writes ``OUT/NNNNNN.png`` per image, or
``OUT/latents.safetensors``. A failure to load prints one line ``LOAD-ERROR <type>: <message>``
and exits 3. Run by the tests in a subprocess (the lead environment with ``sfd`` blocked, or a
fresh one without it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.modules["sfd"] = None  # an `import sfd` anywhere below raises ImportError

import torch  # noqa: E402
from diffusers import DiffusionPipeline  # noqa: E402
from safetensors.torch import save_file  # noqa: E402


def main(export: str, out: str, spec: dict) -> int:
    try:
        pipe = DiffusionPipeline.from_pretrained(export, trust_remote_code=True)
    except Exception as err:  # the loader's own error, reported on one line
        print(f"LOAD-ERROR {type(err).__name__}: {err}".replace("\n", " "))
        return 3
    if spec.get("threads"):  # CPU kernels split reductions by thread count: match sfd sample's
        torch.set_num_threads(spec["threads"])
    if spec.get("scheduler"):
        pipe.scheduler.register_to_config(**spec["scheduler"])
    labels = spec["labels"]
    if spec.get("names"):
        labels = pipe.get_label_ids(labels)
    gens = [torch.Generator().manual_seed(spec["seed"] + i) for i in range(len(labels))]
    kind = "latent" if spec.get("latent") else "pil"
    images = pipe(class_labels=labels, generator=gens, output_type=kind, **spec["kwargs"]).images
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if kind == "latent":
        save_file({"latents": images.contiguous()}, str(out_dir / "latents.safetensors"))
    else:
        for i, image in enumerate(images):
            image.save(out_dir / f"{i:06d}.png")
    print(json.dumps({"pipeline": type(pipe).__module__, "labels": list(labels)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
