"""Save and load the tiny models as safetensors (config in the file's metadata)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from .classifier import ShapeClassifier
from .model import TinyDiT, TinyDiTConfig

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MODEL_NAMES = ("target", "lite", "svd")


def save_model(model: torch.nn.Module, path: str | Path, *, dtype=torch.float16, meta: dict | None = None) -> None:
    """Store weights in ``dtype`` (fp16 halves the shipped size; they are used in fp32)."""
    meta = dict(meta or {})
    if isinstance(model, TinyDiT):
        meta["kind"] = "tinydit"
        meta["config"] = json.dumps(model.cfg.to_dict())
    elif isinstance(model, ShapeClassifier):
        meta["kind"] = "classifier"
    tensors = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={k: str(v) for k, v in meta.items()})


def read_metadata(path: str | Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_model(path: str | Path, dtype=torch.float32) -> torch.nn.Module:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: the tiny weights ship with the package; reinstall it or train "
            f"them with `python -m sdsv.tiny.train`"
        )
    meta = read_metadata(path)
    if meta.get("kind") == "tinydit":
        model = TinyDiT(TinyDiTConfig.from_dict(json.loads(meta["config"])))
    elif meta.get("kind") == "classifier":
        model = ShapeClassifier()
    else:
        raise ValueError(f"{path} is not a tiny-model file written by sdsv (metadata: {meta})")
    model.load_state_dict({k: v.to(dtype) for k, v in load_file(str(path)).items()})
    return model.eval().requires_grad_(False)


def shipped_path(name: str, weights_dir: str | Path | None = None) -> Path:
    if name not in MODEL_NAMES + ("classifier",):
        raise ValueError(f"unknown tiny model {name!r}; choose from {MODEL_NAMES + ('classifier',)}")
    return Path(weights_dir or WEIGHTS_DIR) / f"{name}.safetensors"
