"""TinyVideoDiT: the image target's design (:mod:`sdsv.tiny.model`) with a time axis.

A clip ``[b, 3, T, H, W]`` is cut into space-time patches (``patch_t`` frames x ``patch`` x
``patch`` pixels, as Wan's 1x2x2 patches of its latent, here on pixels), and every block
attends jointly over all space-time tokens: at 256 tokens one joint attention is cheaper on a
CPU than the two reshapes and calls of factorised (spatial, then temporal) attention, and it
is what Wan does. Everything else is the image target's: the same :class:`~sdsv.tiny.model.Block`
with adaLN-single modulation, the per-row sigma embedding, the prompt words both in the
modulation and as extra tokens (here three: colour, shape, motion), a zero-initialised output
convolution (3x3x3 here), and ``embed`` / ``blocks`` / ``head`` so that
:class:`~sdsv.tiny.split.TinyDiTSplit` makes it its own draft unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..model import Block, ThreePartDiT, timestep_embedding


@dataclass
class TinyVideoDiTConfig:
    frames: int = 8
    image_size: int = 32
    channels: int = 3
    patch: int = 4
    patch_t: int = 2
    dim: int = 128
    depth: int = 6
    heads: int = 4
    mlp_ratio: int = 4
    num_colors: int = 8
    num_shapes: int = 6
    num_motions: int = 7
    guidance_embed: bool = False  # drafts take the guidance scale as an input (see compress.py)
    low_rank: dict = field(default_factory=dict)  # read by Block; dense here

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TinyVideoDiTConfig":
        return cls(**d)

    @property
    def grid(self) -> tuple[int, int, int]:
        """Tokens along (time, height, width)."""
        return self.frames // self.patch_t, self.image_size // self.patch, self.image_size // self.patch


def sincos_3d(grid: tuple[int, int, int], dim: int) -> torch.Tensor:
    """``[t*h*w, dim]`` sin/cos positions, a third of the channels per axis (rest zero)."""
    sixth = dim // 6
    freqs = 1.0 / (10000 ** (torch.arange(sixth, dtype=torch.float64) / sixth))
    axes = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in grid), indexing="ij")
    parts = []
    for coord in axes:
        ang = coord.reshape(-1)[:, None] * freqs[None]
        parts += [torch.sin(ang), torch.cos(ang)]
    emb = torch.cat(parts, dim=1)
    emb = torch.cat([emb, torch.zeros(emb.shape[0], dim - emb.shape[1], dtype=emb.dtype)], dim=1)
    return emb.float()


class TinyVideoDiT(ThreePartDiT):
    """Velocity model ``v(x, sigma, labels)`` of clips; ``labels[b] = (color, shape, motion)``,
    the null label of each word is its count."""

    words = 3

    def __init__(self, cfg: TinyVideoDiTConfig):
        super().__init__()
        self.cfg = cfg
        d, c = cfg.dim, cfg.channels
        if cfg.frames % cfg.patch_t or cfg.image_size % cfg.patch:
            raise ValueError(f"frames {cfg.frames} / size {cfg.image_size} are not multiples of the patch "
                             f"{cfg.patch_t}x{cfg.patch}x{cfg.patch}")
        self.patch_in = nn.Linear(c * cfg.patch_t * cfg.patch * cfg.patch, d)
        self.pos = nn.Parameter(sincos_3d(cfg.grid, d)[None])
        self.t_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.color_emb = nn.Embedding(cfg.num_colors + 1, d)
        self.shape_emb = nn.Embedding(cfg.num_shapes + 1, d)
        self.motion_emb = nn.Embedding(cfg.num_motions + 1, d)
        self.color_tok = nn.Embedding(cfg.num_colors + 1, d)
        self.shape_tok = nn.Embedding(cfg.num_shapes + 1, d)
        self.motion_tok = nn.Embedding(cfg.num_motions + 1, d)
        for tok in (self.color_tok, self.shape_tok, self.motion_tok):
            nn.init.normal_(tok.weight, std=0.02)
        if cfg.guidance_embed:
            self.g_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.ada = nn.Linear(d, 6 * d)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.final_ada = nn.Linear(d, 2 * d)
        self.patch_out = nn.Linear(d, c * cfg.patch_t * cfg.patch * cfg.patch)
        self.out_conv = nn.Conv3d(c, c, 3, padding=1)
        for m in (self.ada, self.final_ada, self.patch_out, self.out_conv):  # adaLN-Zero
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    @property
    def null_labels(self) -> tuple[int, int, int]:
        return self.cfg.num_colors, self.cfg.num_shapes, self.cfg.num_motions

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        pt, p = self.cfg.patch_t, self.cfg.patch
        gt, gh, gw = self.cfg.grid
        x = x.reshape(b, c, gt, pt, gh, p, gw, p).permute(0, 2, 4, 6, 1, 3, 5, 7)
        return x.reshape(b, gt * gh * gw, c * pt * p * p)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        b = tokens.shape[0]
        cfg = self.cfg
        gt, gh, gw = cfg.grid
        t = tokens.reshape(b, gt, gh, gw, cfg.channels, cfg.patch_t, cfg.patch, cfg.patch).permute(0, 4, 1, 5, 2, 6, 3, 7)
        return t.reshape(b, cfg.channels, cfg.frames, cfg.image_size, cfg.image_size)

    def embed(self, x, sigma, labels, guidance=None):
        """Tokens entering the first block, the conditioning vector and the shared modulation."""
        cfg = self.cfg
        h = self.patch_in(self.patchify(x)) + self.pos
        words = torch.stack([self.color_tok(labels[:, 0]), self.shape_tok(labels[:, 1]), self.motion_tok(labels[:, 2])], 1)
        h = torch.cat([words.to(h.dtype), h], dim=1)
        cond = self.t_mlp(timestep_embedding(sigma, cfg.dim))
        cond = cond + self.color_emb(labels[:, 0]) + self.shape_emb(labels[:, 1]) + self.motion_emb(labels[:, 2])
        cond, mod = self._modulated(cond, guidance, x.shape[0])
        return h, cond, mod

    def head(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The velocity from the last block's tokens."""
        shift, scale = self.final_ada(cond).chunk(2, dim=-1)
        h = F.layer_norm(h[:, self.words:], (self.cfg.dim,)) * (1 + scale[:, None]) + shift[:, None]
        out = self.unpatchify(self.patch_out(h))
        return out + self.out_conv(out)
