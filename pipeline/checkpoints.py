"""Checkpoint files: the state dict plus what rebuilds the model, readable with `weights_only=True`.

The bytes depend only on the weights (saved through a buffer, so the temporary file name never enters the
archive), which lets DVC skip evaluation when a retrained baseline comes out identical.
"""

import io
from pathlib import Path

import torch

from pipeline import models
from pipeline.artifacts import atomic_path
from pipeline.errors import ArtifactError


def save(path: Path, model: models.SequenceModel, kind: str, shape: models.Shape) -> None:
    buffer = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"kind": kind, "shape": shape.__dict__, "state_dict": state}, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load(path: Path, device: torch.device) -> models.SequenceModel:
    """Rebuild a model; `weights_only=True` means no pickled code ever runs."""
    if not path.exists():
        raise ArtifactError(f"{path} does not exist; run `dvc repro` to train it")
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
        model = models.build(saved["kind"], models.Shape(**saved["shape"]))
        model.load_state_dict(saved["state_dict"])
    except Exception as exc:  # a damaged zip or pickle raises many types; all mean the same to the user
        raise ArtifactError(f"{path} is corrupt or from another version ({type(exc).__name__}); "
                            "delete it and run `dvc repro`") from None
    return model.to(device)
