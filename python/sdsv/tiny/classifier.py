"""A small CNN that tells the (colour, shape) class of a 32x32 image.

It is the project's stand-in for the pretrained networks that image metrics are usually
computed with (Inception for FID/IS, CLIP for prompt alignment): no hub weights can be
downloaded here, so the training script trains this one on the procedural data and ships it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .data import num_classes


class ShapeClassifier(nn.Module):
    def __init__(self, width: int = 32, classes: int | None = None, in_channels: int = 3):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), nn.GroupNorm(8, w), nn.SiLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.GroupNorm(8, w), nn.SiLU(), nn.MaxPool2d(2),  # 16
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.GroupNorm(8, 2 * w), nn.SiLU(), nn.MaxPool2d(2),  # 8
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.GroupNorm(8, 4 * w), nn.SiLU(), nn.MaxPool2d(2),  # 4
        )
        self.embed = nn.Linear(4 * w * 16, 128)
        self.head = nn.Linear(128, classes or num_classes())

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features, [b, 128]: the space distribution metrics are computed in."""
        return F.silu(self.embed(self.features(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(x))
