"""Procedural text-to-video data: "a <colour> <shape> <motion>" over a panning textured background.

Clips are generated on the fly from a seed (no files), as the image set is, and reuse its
colours, shapes, shape masks and backgrounds (:mod:`sdsv.tiny.data`). A clip is ``[3, T, H, W]``
in [-1, 1] (the (C, T, H, W) layout of video latents such as Wan's), rendered at 2x and
box-filtered. The shape moves left/right/up/down, rotates, grows or shrinks at a random speed;
the background pans slowly in a random direction of its own, so "moving left" is motion
relative to the frame, not a still picture, and the model has to move the texture too.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F

from ..data import COLOR_NAMES, COLORS, SHAPES, _backgrounds, _shape_masks

MOTIONS: tuple[str, ...] = ("moving left", "moving right", "moving up", "moving down", "rotating", "growing", "shrinking")
FRAMES = 8
FRAME_SIZE = 32
# background pan, in output pixels per frame (the shape moves 1.5-3.5 pixels per frame)
MAX_PAN = 0.75


def prompt_of(color: int, shape: int, motion: int) -> str:
    name = COLOR_NAMES[color]
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name} {SHAPES[shape]} {MOTIONS[motion]}"


_PROMPT_RE = re.compile(r"^\s*(?:an?\s+)?(\w+)\s+(\w+)\s+(\w+(?:\s+\w+)?)\s*$", re.IGNORECASE)


def parse_prompt(prompt: str) -> tuple[int, int, int]:
    """``"a red circle moving left"`` -> ``(color, shape, motion)`` indices."""
    m = _PROMPT_RE.match(prompt)
    motion = " ".join(m.group(3).lower().split()) if m else ""
    if not m or m.group(1).lower() not in COLORS or m.group(2).lower() not in SHAPES or motion not in MOTIONS:
        raise ValueError(
            f"the tiny video model understands prompts of the form 'a <color> <shape> <motion>' with color in "
            f"{list(COLORS)}, shape in {list(SHAPES)} and motion in {list(MOTIONS)}; got {prompt!r}"
        )
    return COLOR_NAMES.index(m.group(1).lower()), SHAPES.index(m.group(2).lower()), MOTIONS.index(motion)


def _trajectories(motion: torch.Tensor, frames: int, g: torch.Generator):
    """Per-frame centre, radius and rotation of each clip's shape, each ``[b, T]``.

    Units are those of the image set: the frame spans [-1, 1], radius 1 = half the frame.
    """
    b = motion.shape[0]
    t = torch.linspace(0, 1, frames)[None]  # [1, T]
    ones = torch.ones_like(t)
    r0 = 0.36 + 0.14 * torch.rand(b, 1, generator=g)
    room = (1 - r0) * 0.9
    # moving: from a random start, half to all of the room along the motion's axis
    travel = (0.5 + 0.5 * torch.rand(b, 1, generator=g)) * 2 * room
    along = -room + (2 * room - travel) * torch.rand(b, 1, generator=g) + travel * t  # increasing
    across = (torch.rand(b, 1, generator=g) * 2 - 1) * room * ones
    # rotating, growing, shrinking: in place, anywhere a shape of radius 0.75 fits
    still_x = (torch.rand(b, 1, generator=g) * 2 - 1) * 0.25 * 0.9 * ones
    still_y = (torch.rand(b, 1, generator=g) * 2 - 1) * 0.25 * 0.9 * ones
    rot0 = (torch.rand(b, 1, generator=g) * 2 - 1) * math.radians(20)
    spin = (torch.rand(b, 1, generator=g) < 0.5).float() * 2 - 1  # either direction
    turn = spin * torch.deg2rad(60 + 60 * torch.rand(b, 1, generator=g)) * t
    big = 0.6 + 0.15 * torch.rand(b, 1, generator=g)
    factor = 1.5 + 0.4 * torch.rand(b, 1, generator=g)  # the large radius over the small one
    growing = big / factor * (1 + (factor - 1) * t)
    m = motion[:, None]
    cx = torch.where(m == 0, -along, torch.where(m == 1, along, torch.where(m <= 3, across, still_x)))
    cy = torch.where(m == 2, along, torch.where(m == 3, -along, torch.where(m <= 1, across, still_y)))
    radius = torch.where(m == 5, growing, torch.where(m == 6, growing.flip(1), r0 * ones))
    rot = rot0 + torch.where(m == 4, turn, torch.zeros_like(turn))
    return cx, cy, radius, rot


def _panned(bg: torch.Tensor, ox: torch.Tensor, oy: torch.Tensor, size: int) -> torch.Tensor:
    """Crops ``[b, 3, T, size, size]`` of ``bg [b, 3, S, S]`` at integer offsets ``ox, oy [b, T]``."""
    b, c, s, _ = bg.shape
    t = ox.shape[1]
    ar = torch.arange(size)
    rows = (oy[:, :, None] + ar)[:, None, :, :, None].expand(b, c, t, size, s)
    out = bg[:, :, None].expand(b, c, t, s, s).gather(3, rows)
    cols = (ox[:, :, None] + ar)[:, None, :, None, :].expand(b, c, t, size, size)
    return out.gather(4, cols)


def make_clips(batch: int, generator: torch.Generator, color=None, shape=None, motion=None,
               frames: int = FRAMES, size: int = FRAME_SIZE, return_mask: bool = False):
    """Render ``batch`` clips: ``(clips [b, 3, T, H, W] in [-1, 1], color [b], shape [b], motion [b])``.

    ``color`` / ``shape`` / ``motion`` (int tensors) fix the classes; otherwise they are drawn
    uniformly. With ``return_mask`` a fifth tensor ``[b, 1, T, H, W]`` gives the shape's
    coverage of each pixel (for the shape-weighted loss of :mod:`sdsv.tiny.train`).
    """
    g = generator
    if color is None:
        color = torch.randint(0, len(COLORS), (batch,), generator=g)
    if shape is None:
        shape = torch.randint(0, len(SHAPES), (batch,), generator=g)
    if motion is None:
        motion = torch.randint(0, len(MOTIONS), (batch,), generator=g)
    render = 2 * size
    # the background is drawn once on a grid larger than the frame and panned across it
    margin = math.ceil(2 * MAX_PAN * (frames - 1) / 2)
    lin = (torch.arange(-margin, render + margin) + 0.5) / render * 2 - 1
    yy, xx = torch.meshgrid(-lin, lin, indexing="ij")
    bg = _backgrounds(batch, g, xx, yy)
    pan = (torch.rand(batch, 2, generator=g) * 2 - 1) * 2 * MAX_PAN  # render pixels per frame
    step = torch.arange(frames) - (frames - 1) / 2
    ox = (margin + pan[:, :1] * step).round().long()
    oy = (margin + pan[:, 1:] * step).round().long()
    bg = _panned(bg, ox, oy, render)  # [b, 3, T, R, R]

    cx, cy, radius, rot = _trajectories(motion, frames, g)
    inner = lin[margin:margin + render]
    gy, gx = torch.meshgrid(-inner, inner, indexing="ij")
    flat = lambda a: a.reshape(-1)[:, None, None]  # noqa: E731 - [b*T, 1, 1]
    dx = (gx[None] - flat(cx)) / flat(radius)
    dy = (gy[None] - flat(cy)) / flat(radius)
    cr, sr = torch.cos(flat(rot)), torch.sin(flat(rot))
    u, v = cr * dx + sr * dy, -sr * dx + cr * dy
    mask = _shape_masks(shape.repeat_interleave(frames), u, v).float()
    mask = mask.view(batch, 1, frames, render, render)
    palette = torch.tensor(list(COLORS.values()))
    fg = (palette[color] * (0.85 + 0.15 * torch.rand(batch, 1, generator=g))).clamp(0, 1)
    clip = bg * (1 - mask) + fg[:, :, None, None, None] * mask
    clip = F.avg_pool3d(clip, (1, 2, 2))  # anti-aliasing, frame by frame
    if return_mask:
        return clip * 2 - 1, color, shape, motion, F.avg_pool3d(mask, (1, 2, 2))
    return clip * 2 - 1, color, shape, motion
