"""Procedural text-to-image data: "a <colour> <shape>" on a textured background.

Everything is generated on the fly from a seed, so the training script, the classifier and
the tests need no files. Images are 32x32 RGB in [-1, 1], rendered at 2x and box-filtered
(anti-aliased edges). Backgrounds are muted flat colours, gradients, stripes, checkerboards
or smooth noise, and each shape has a random size, position and small rotation: enough
variety that the sampling trajectories are curved (a flat-background set is nearly a straight
line from noise to image and would flatter every few-step method).
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.12, 0.12),
    "green": (0.12, 0.75, 0.20),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.88, 0.10),
    "purple": (0.60, 0.15, 0.80),
    "orange": (0.98, 0.55, 0.05),
    "cyan": (0.10, 0.85, 0.90),
    "white": (0.97, 0.97, 0.97),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "ring", "cross", "diamond")
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
IMAGE_SIZE = 32
_RENDER = 2 * IMAGE_SIZE


def num_classes() -> int:
    return len(COLORS) * len(SHAPES)


def prompt_of(color: int, shape: int) -> str:
    name = COLOR_NAMES[color]
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name} {SHAPES[shape]}"


_PROMPT_RE = re.compile(r"^\s*(?:an?\s+)?(\w+)\s+(\w+)\s*$", re.IGNORECASE)


def parse_prompt(prompt: str) -> tuple[int, int]:
    """``"a blue triangle"`` -> ``(color index, shape index)``; the tiny models know no other words."""
    m = _PROMPT_RE.match(prompt)
    if not m or m.group(1).lower() not in COLORS or m.group(2).lower() not in SHAPES:
        raise ValueError(
            f"the tiny models understand prompts of the form 'a <color> <shape>' with color in "
            f"{list(COLORS)} and shape in {list(SHAPES)}; got {prompt!r}"
        )
    return COLOR_NAMES.index(m.group(1).lower()), SHAPES.index(m.group(2).lower())


def class_index(color: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    """Joint (colour, shape) class used by the classifier."""
    return color * len(SHAPES) + shape


def _shape_masks(kind: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inside-mask of each sample's shape in its own unit frame (u right, v up), [b, H, W]."""
    r = torch.sqrt(u * u + v * v)
    au, av = u.abs(), v.abs()
    tri = torch.ones_like(u, dtype=torch.bool)
    for ang in (-90.0, 30.0, 150.0):  # outward normals of an upward equilateral triangle
        a = math.radians(ang)
        tri &= (u * math.cos(a) + v * math.sin(a)) <= 0.5
    masks = torch.stack(
        [
            r <= 1.0,                                              # circle
            torch.maximum(au, av) <= 0.8,                          # square
            tri,                                                   # triangle
            (r <= 1.0) & (r >= 0.58),                              # ring
            ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95)),  # cross
            (au / 0.62 + av) <= 1.0,                               # diamond (tall rhombus)
        ],
        dim=1,
    )  # [b, S, H, W]
    return masks.gather(1, kind[:, None, None, None].expand(-1, 1, *u.shape[1:])).squeeze(1)


def _backgrounds(b: int, g: torch.Generator, xx: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
    """Muted textured backgrounds, [b, 3, H, W] in [0, 1]."""
    def muted(n: int) -> torch.Tensor:
        base = torch.rand(n, 3, generator=g)
        grey = base.mean(1, keepdim=True)
        return (0.35 * base + 0.65 * grey) * 0.8 + 0.05  # desaturated, not too bright

    c1, c2 = muted(b)[:, :, None, None], muted(b)[:, :, None, None]
    kind = torch.randint(0, 5, (b,), generator=g)
    ang = torch.rand(b, generator=g) * math.pi
    freq = 2.0 + torch.rand(b, generator=g) * 5.0
    proj = xx[None] * torch.cos(ang)[:, None, None] + yy[None] * torch.sin(ang)[:, None, None]
    gradient = (proj + 1.0) / 2.0
    stripes = (torch.sin(proj * freq[:, None, None] * math.pi) > 0).float()
    checker = ((torch.floor((xx[None] + 1) * freq[:, None, None]) + torch.floor((yy[None] + 1) * freq[:, None, None])) % 2)
    noise = torch.rand(b, 1, 5, 5, generator=g)
    noise = F.interpolate(noise, size=xx.shape, mode="bicubic", align_corners=True).clamp(0, 1)[:, 0]
    mix = torch.stack([torch.zeros_like(gradient), gradient, stripes, checker, noise], 1)
    w = mix.gather(1, kind[:, None, None, None].expand(-1, 1, *xx.shape))  # [b,1,H,W]
    return c1 * (1 - w) + c2 * w


def make_batch(batch: int, generator: torch.Generator, color=None, shape=None, return_mask: bool = False):
    """Render ``batch`` images. Returns ``(images [b,3,32,32] in [-1,1], color [b], shape [b])``.

    ``color`` / ``shape`` (int tensors) fix the classes; otherwise they are drawn uniformly.
    With ``return_mask`` a fourth tensor ``[b, 1, 32, 32]`` in [0, 1] gives the shape's coverage
    of each pixel (the training loss weights the shape region up, see ``sdsv.tiny.train``).
    """
    g = generator
    if color is None:
        color = torch.randint(0, len(COLORS), (batch,), generator=g)
    if shape is None:
        shape = torch.randint(0, len(SHAPES), (batch,), generator=g)
    lin = (torch.arange(_RENDER) + 0.5) / _RENDER * 2 - 1
    yy, xx = torch.meshgrid(-lin, lin, indexing="ij")  # y up
    bg = _backgrounds(batch, g, xx, yy)
    # radius in units of half the image: 6.7 to 12 pixels, so the outline that tells a circle
    # from a square or a diamond spans many pixels (smaller shapes left the shape word a ~4%
    # effect on the loss, and a model trained for an hour drew the same blob for every shape)
    radius = 0.42 + 0.33 * torch.rand(batch, generator=g)
    cx = (torch.rand(batch, generator=g) * 2 - 1) * (1 - radius) * 0.9
    cy = (torch.rand(batch, generator=g) * 2 - 1) * (1 - radius) * 0.9
    rot = (torch.rand(batch, generator=g) * 2 - 1) * math.radians(20)
    dx = (xx[None] - cx[:, None, None]) / radius[:, None, None]
    dy = (yy[None] - cy[:, None, None]) / radius[:, None, None]
    cr, sr = torch.cos(rot)[:, None, None], torch.sin(rot)[:, None, None]
    u, v = cr * dx + sr * dy, -sr * dx + cr * dy
    mask = _shape_masks(shape, u, v).float()[:, None]
    palette = torch.tensor(list(COLORS.values()))
    # a little per-sample shade variation so colours are a region, not a point
    fg = palette[color] * (0.85 + 0.15 * torch.rand(batch, 1, generator=g))
    img = bg * (1 - mask) + fg[:, :, None, None].clamp(0, 1) * mask
    img = F.avg_pool2d(img, 2)  # anti-aliasing
    if return_mask:
        return img * 2 - 1, color, shape, F.avg_pool2d(mask, 2)
    return img * 2 - 1, color, shape
