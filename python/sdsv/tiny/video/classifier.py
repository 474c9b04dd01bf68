"""A small CNN that tells a clip's colour, shape and motion: the video metrics' stand-in for a
pretrained video classifier (none can be downloaded here).

It is the image classifier (:class:`~sdsv.tiny.classifier.ShapeClassifier`) reading the clip's
frames stacked as channels, with one logit group per prompt word: the motion is a difference
between frames, which the first convolution sees directly.
"""

from __future__ import annotations

import torch

from ..classifier import ShapeClassifier
from ..data import COLORS, SHAPES
from .data import FRAMES, MOTIONS

GROUPS = (len(COLORS), len(SHAPES), len(MOTIONS))


class VideoClassifier(ShapeClassifier):
    def __init__(self, frames: int = FRAMES, width: int = 32):
        super().__init__(width=width, classes=sum(GROUPS), in_channels=3 * frames)
        self.frames = frames

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """``[b, 3, T, H, W]`` in [-1, 1] -> logits ``[b, colours + shapes + motions]``."""
        return super().forward(clips.flatten(1, 2))

    def predict(self, clips: torch.Tensor) -> torch.Tensor:
        """``[b, 3]``: the (colour, shape, motion) each clip is classified as."""
        return torch.stack([part.argmax(1) for part in self(clips).split(GROUPS, dim=1)], 1)
