"""Turn a trained TinyDiT target into the two draft models of the paper's Table 1.

* ``lite`` — depth pruning: keep every other block (about half), as distilled "lite" models do.
* ``svd``  — every block linear replaced by its truncated-SVD factorisation, with the rank chosen
  so the block linears cost ~3x fewer FLOPs (the role of Flux-SVD's low-rank branch).

Both start from the target's own weights and are then distilled to the target's guided
velocity (see ``train.py``). Both get a guidance embedding (zero-initialised, so at the start
they are exactly the compressed conditional target) so that one batch-1 draft forward stands in
for the target's cond+uncond pair.
"""

from __future__ import annotations

import copy

from torch import nn

from .model import Block, LowRankLinear, TinyDiT, TinyDiTConfig


def _add_guidance_embedding(draft: TinyDiT) -> None:
    d = draft.cfg.dim
    draft.g_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
    nn.init.zeros_(draft.g_mlp[2].weight)
    nn.init.zeros_(draft.g_mlp[2].bias)


def lite_blocks(depth: int) -> list[int]:
    """Blocks a ``lite`` draft keeps: every other one, always including the last."""
    keep = list(range(depth - 1, -1, -2))[::-1]
    return keep


def make_lite(target: TinyDiT) -> TinyDiT:
    keep = lite_blocks(target.cfg.depth)
    # the target's own classes, so the video target (sdsv.tiny.video.model) is pruned the same way
    cfg = type(target.cfg).from_dict({**target.cfg.to_dict(), "depth": len(keep), "guidance_embed": True})
    draft = type(target)(cfg)
    state = {k: v for k, v in target.state_dict().items() if not k.startswith("blocks.")}
    for new, old in enumerate(keep):
        for k, v in target.blocks[old].state_dict().items():
            state[f"blocks.{new}.{k}"] = v
    _add_guidance_embedding(draft)
    missing, unexpected = draft.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("g_mlp.") for k in missing), (missing, unexpected)
    return draft


def svd_ranks(cfg: TinyDiTConfig, flop_ratio: float = 3.0) -> dict:
    """Ranks so that a factorised ``fan_in -> r -> fan_out`` costs ``1/flop_ratio`` of the dense layer.

    Per block the dense linears cost ``12 d^2`` MACs per token (qkv 3d^2, proj d^2, fc1+fc2 8d^2);
    one rank per layer family keeps the shapes simple.
    """
    d, m = cfg.dim, cfg.mlp_ratio
    # attention: qkv (d->3d) + proj (d->d): r(d+3d) + r(d+d) = 6 r d  vs 4 d^2
    attn = round(4 * d * d / flop_ratio / (6 * d))
    # mlp: fc1 (d->md) + fc2 (md->d): 2 r (d + md)  vs 2 m d^2
    mlp = round(2 * m * d * d / flop_ratio / (2 * (d + m * d)))
    return {"attn": max(1, attn), "mlp": max(1, mlp)}


def make_svd(target: TinyDiT, flop_ratio: float = 3.0) -> TinyDiT:
    ranks = svd_ranks(target.cfg, flop_ratio)
    cfg = TinyDiTConfig.from_dict({**target.cfg.to_dict(), "low_rank": ranks, "guidance_embed": True})
    draft = TinyDiT(cfg)
    state = copy.deepcopy(target.state_dict())
    # factorise the trained dense block linears
    for i, blk in enumerate(target.blocks):
        for name, kind in (("qkv", "attn"), ("proj", "attn"), ("fc1", "mlp"), ("fc2", "mlp")):
            dense = getattr(blk, name)
            lr = LowRankLinear.from_dense(dense, ranks[kind])
            for k in list(state):
                if k.startswith(f"blocks.{i}.{name}."):
                    del state[k]
            for k, v in lr.state_dict().items():
                state[f"blocks.{i}.{name}.{k}"] = v
    _add_guidance_embedding(draft)
    missing, unexpected = draft.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("g_mlp.") for k in missing), (missing, unexpected)
    return draft


def block_linear_macs(model: TinyDiT) -> int:
    """MACs per token of all block linears (what the SVD rank is chosen against)."""
    total = 0
    for blk in model.blocks:
        for m in blk.modules():
            if isinstance(m, nn.Linear):
                total += m.in_features * m.out_features
    return total


__all__ = ["make_lite", "make_svd", "svd_ranks", "lite_blocks", "block_linear_macs", "Block"]
