"""Save and load the tiny models as safetensors (config in the file's metadata)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from .classifier import ShapeClassifier
from .model import TinyDiT, TinyDiTConfig
from .video.classifier import VideoClassifier
from .video.model import TinyVideoDiT, TinyVideoDiTConfig

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MODEL_NAMES = ("target", "lite", "svd")
VIDEO_MODEL_NAMES = ("video_target", "video_lite")


def save_model(model: torch.nn.Module, path: str | Path, *, dtype=torch.float16, meta: dict | None = None) -> None:
    """Store weights in ``dtype`` (fp16 halves the shipped size; they are used in fp32)."""
    meta = dict(meta or {})
    if isinstance(model, TinyDiT):
        meta["kind"] = "tinydit"
        meta["config"] = json.dumps(model.cfg.to_dict())
    elif isinstance(model, TinyVideoDiT):
        meta["kind"] = "tinyvideodit"
        meta["config"] = json.dumps(model.cfg.to_dict())
    elif isinstance(model, VideoClassifier):
        meta["kind"] = "video_classifier"
        meta["frames"] = model.frames
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
            f"them with `python -m sdsv.tiny.train` (the video models: `python -m sdsv.tiny.video.train`)"
        )
    meta = read_metadata(path)
    if meta.get("kind") == "tinydit":
        model = TinyDiT(TinyDiTConfig.from_dict(json.loads(meta["config"])))
    elif meta.get("kind") == "classifier":
        model = ShapeClassifier()
    elif meta.get("kind") == "tinyvideodit":
        model = TinyVideoDiT(TinyVideoDiTConfig.from_dict(json.loads(meta["config"])))
    elif meta.get("kind") == "video_classifier":
        model = VideoClassifier(frames=int(meta["frames"]))
    else:
        raise ValueError(f"{path} is not a tiny-model file written by sdsv (metadata: {meta})")
    model.load_state_dict({k: v.to(dtype) for k, v in load_file(str(path)).items()})
    return model.eval().requires_grad_(False)


def shipped_path(name: str, weights_dir: str | Path | None = None) -> Path:
    known = MODEL_NAMES + ("classifier",) + VIDEO_MODEL_NAMES + ("video_classifier",)
    if name not in known:
        raise ValueError(f"unknown tiny model {name!r}; choose from {known}")
    return Path(weights_dir or WEIGHTS_DIR) / f"{name}.safetensors"
