"""TinyDiT: a small diffusion transformer with the same interface as the big ones.

It predicts the rectified-flow velocity ``v = noise - x0`` of 32x32 RGB images from
patchified tokens, a per-sample noise level ``sigma`` (one per row, so rows at different
sigmas batch together, exactly what speculative verification needs) and a class-style
prompt embedding (colour word + shape word). Blocks use adaLN-Zero modulation as in DiT; the
two prompt words also enter as two extra tokens (in-context conditioning, as U-ViT does), so
every image token can attend to "triangle" directly instead of reading it from a channel-wise
modulation shared by all blocks, and a 3x3 convolution on the output (U-ViT's last layer)
smooths the 4x4 patch seams.

The two drafts are built from a trained target by :mod:`sdsv.tiny.compress`:
``lite`` keeps a subset of the blocks, ``svd`` factorises every linear layer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TinyDiTConfig:
    image_size: int = 32
    channels: int = 3
    patch: int = 4
    dim: int = 192
    depth: int = 8
    heads: int = 4
    mlp_ratio: int = 4
    num_colors: int = 8
    num_shapes: int = 6
    # drafts distilled from the *guided* target take the guidance scale as an input (as
    # Flux.1-dev does), so one batch-1 forward replaces the cond+uncond pair
    guidance_embed: bool = False
    # rank of the low-rank factorisation of each block linear; 0 = dense
    # (a dict so that every layer type can get its own rank: "attn", "mlp")
    low_rank: dict = field(default_factory=dict)
    # the prompt words as two extra tokens (see the module docstring); False = the first
    # shipped architecture, kept so its weights still load
    cond_tokens: bool = True
    # residual 3x3 conv on the unpatchified output, zero-initialised
    out_conv: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TinyDiTConfig":
        # configs written before these fields existed describe the first architecture
        return cls(**{"cond_tokens": False, "out_conv": False, **d})


class LowRankLinear(nn.Module):
    """``W x + b`` with ``W = U V`` of rank r: two skinny matmuls instead of one square one."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=bias)

    @classmethod
    def from_dense(cls, linear: nn.Linear, rank: int) -> "LowRankLinear":
        """Best rank-r approximation (truncated SVD) of a trained dense layer."""
        w = linear.weight.detach().float()
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        root = s[:rank].sqrt()
        lr = cls(linear.in_features, linear.out_features, rank, bias=linear.bias is not None)
        with torch.no_grad():
            lr.down.weight.copy_(root[:, None] * vh[:rank])
            lr.up.weight.copy_(u[:, :rank] * root[None, :])
            if linear.bias is not None:
                lr.up.bias.copy_(linear.bias)
        return lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


def make_linear(cfg: TinyDiTConfig, kind: str, fan_in: int, fan_out: int) -> nn.Module:
    rank = int(cfg.low_rank.get(kind, 0))
    return LowRankLinear(fan_in, fan_out, rank) if rank > 0 else nn.Linear(fan_in, fan_out)


class Block(nn.Module):
    def __init__(self, cfg: TinyDiTConfig):
        super().__init__()
        d = cfg.dim
        self.heads = cfg.heads
        self.qkv = make_linear(cfg, "attn", d, 3 * d)
        self.proj = make_linear(cfg, "attn", d, d)
        self.fc1 = make_linear(cfg, "mlp", d, cfg.mlp_ratio * d)
        self.fc2 = make_linear(cfg, "mlp", cfg.mlp_ratio * d, d)
        # per-block offset added to the shared modulation (PixArt's adaLN-single)
        self.mod_bias = nn.Parameter(torch.zeros(6, d))

    def forward(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        # mod: [b, 6, d] = shift/scale/gate for attention, then for the MLP
        b, n, d = x.shape
        sh1, sc1, g1, sh2, sc2, g2 = (mod + self.mod_bias).unbind(1)
        h = F.layer_norm(x, (d,)) * (1 + sc1[:, None]) + sh1[:, None]
        q, k, v = self.qkv(h).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + g1[:, None] * self.proj(a)
        h = F.layer_norm(x, (d,)) * (1 + sc2[:, None]) + sh2[:, None]
        return x + g2[:, None] * self.fc2(F.gelu(self.fc1(h), approximate="tanh"))


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """``[grid*grid, dim]`` 2-D sin/cos position embedding (half the channels per axis)."""
    quarter = dim // 4
    freqs = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij")
    parts = []
    for coord in (ys.reshape(-1), xs.reshape(-1)):
        ang = coord[:, None] * freqs[None]
        parts += [torch.sin(ang), torch.cos(ang)]
    emb = torch.cat(parts, dim=1)
    if emb.shape[1] < dim:
        emb = torch.cat([emb, torch.zeros(emb.shape[0], dim - emb.shape[1], dtype=emb.dtype)], dim=1)
    return emb.float()


def timestep_embedding(sigma: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of ``1000 * sigma`` (the diffusers timestep convention)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=sigma.device) / half)
    args = 1000.0 * sigma.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ThreePartDiT(nn.Module):
    """What the image and the video target share: the forward in three parts, so that the model
    can be its own draft (:mod:`sdsv.tiny.split`) — ``embed`` (cheap) -> ``blocks`` (expensive)
    -> ``head`` (cheap) — and the end of the conditioning. A subclass builds ``t_mlp``, ``ada``,
    ``blocks`` (and ``g_mlp`` when guidance-distilled) and defines ``embed`` and ``head``."""

    def forward(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        labels: torch.Tensor,
        guidance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h, cond, mod = self.embed(x, sigma, labels, guidance)
        for blk in self.blocks:
            h = blk(h, mod)
        return self.head(h, cond)

    def _modulated(self, cond: torch.Tensor, guidance: torch.Tensor | None, rows: int):
        """The conditioning vector (sigma and prompt embeddings summed in ``cond``) with the
        guidance scale added for a guidance-distilled model, and the shared modulation."""
        cfg = self.cfg
        if cfg.guidance_embed:
            if guidance is None:
                raise ValueError("this model is guidance-distilled: pass guidance=<scale per row>")
            # guidance scales of 1..10 land in the embedding's sigma-like range 0.1..1
            cond = cond + self.g_mlp(timestep_embedding(guidance / 10.0, cfg.dim))
        cond = F.silu(cond)
        return cond, self.ada(cond).view(rows, 6, cfg.dim)


class TinyDiT(ThreePartDiT):
    """Velocity model ``v(x, sigma, labels)``; ``labels[b] = (color, shape)``, null = the counts."""

    def __init__(self, cfg: TinyDiTConfig):
        super().__init__()
        self.cfg = cfg
        d, p, c = cfg.dim, cfg.patch, cfg.channels
        self.tokens = (cfg.image_size // p) ** 2
        self.patch_in = nn.Linear(c * p * p, d)
        # trainable, but started from fixed 2-D sin/cos positions (as DiT uses): a learned
        # embedding started from noise left the first ~1000 CPU steps with blocky patch artefacts
        self.pos = nn.Parameter(sincos_2d(cfg.image_size // p, d)[None])
        self.t_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        # index num_colors / num_shapes is the "null" word used for classifier-free guidance
        self.color_emb = nn.Embedding(cfg.num_colors + 1, d)
        self.shape_emb = nn.Embedding(cfg.num_shapes + 1, d)
        if cfg.guidance_embed:
            self.g_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        # one modulation shared by all blocks, each adds its own learned offset (adaLN-single):
        # a sixth of the parameters of per-block adaLN (the shipped weights stay a few MB)
        self.ada = nn.Linear(d, 6 * d)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.final_ada = nn.Linear(d, 2 * d)
        self.patch_out = nn.Linear(d, c * p * p)
        if cfg.cond_tokens:
            self.color_tok = nn.Embedding(cfg.num_colors + 1, d)
            self.shape_tok = nn.Embedding(cfg.num_shapes + 1, d)
            nn.init.normal_(self.color_tok.weight, std=0.02)
            nn.init.normal_(self.shape_tok.weight, std=0.02)
        if cfg.out_conv:
            self.out_conv = nn.Conv2d(c, c, 3, padding=1)
        self._zero_init()

    def _zero_init(self) -> None:
        # adaLN-Zero: every block starts as the identity, the output as zero
        for m in (self.ada, self.final_ada, self.patch_out) + ((self.out_conv,) if self.cfg.out_conv else ()):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    @property
    def null_labels(self) -> tuple[int, int]:
        return self.cfg.num_colors, self.cfg.num_shapes

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        p = self.cfg.patch
        x = x.reshape(b, c, hh // p, p, ww // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, (hh // p) * (ww // p), c * p * p)

    def unpatchify(self, t: torch.Tensor) -> torch.Tensor:
        b = t.shape[0]
        c, p, s = self.cfg.channels, self.cfg.patch, self.cfg.image_size
        g = s // p
        t = t.reshape(b, g, g, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return t.reshape(b, c, s, s)

    def embed(self, x, sigma, labels, guidance=None):
        """Tokens entering the first block, the conditioning vector and the shared modulation."""
        cfg = self.cfg
        h = self.patch_in(self.patchify(x)) + self.pos
        if cfg.cond_tokens:
            words = torch.stack([self.color_tok(labels[:, 0]), self.shape_tok(labels[:, 1])], 1)
            h = torch.cat([words.to(h.dtype), h], dim=1)
        cond = self.t_mlp(timestep_embedding(sigma, cfg.dim))
        cond = cond + self.color_emb(labels[:, 0]) + self.shape_emb(labels[:, 1])
        cond, mod = self._modulated(cond, guidance, x.shape[0])
        return h, cond, mod

    def head(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The velocity from the last block's tokens."""
        cfg = self.cfg
        shift, scale = self.final_ada(cond).chunk(2, dim=-1)
        if cfg.cond_tokens:
            h = h[:, 2:]
        h = F.layer_norm(h, (cfg.dim,)) * (1 + scale[:, None]) + shift[:, None]
        out = self.unpatchify(self.patch_out(h))
        return out + self.out_conv(out) if cfg.out_conv else out
