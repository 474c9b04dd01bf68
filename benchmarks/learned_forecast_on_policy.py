"""The learned forecaster (learned_forecast.py) trained on the sampler's own draft states instead
of the target's trajectories: the sampler runs the line (an untrained forecaster) in the faithful
windows (tol 0.3 and 0.2) and the fixed cache every 3 on the 48 training images (seeds
21056..21103); at every draft call, per row with three anchors, the anchors (residuals and inputs),
the draft state's input and the deep blocks' true residual there are kept (~2 GB); the net is
trained on them as in learned_forecast.py and sampled on the held-out 48 (21104..21151). The net
is saved under benchmarks/results/learned_forecast/cache (git-ignored); ``--reuse`` loads it, as
forecast_windows.py and learned_forecast_window_loss.py do. Results:
benchmarks/results/learned_forecast/on_policy.txt (docs/tail.md, "Forecasts").

    python benchmarks/learned_forecast_on_policy.py | tee benchmarks/results/learned_forecast/on_policy.txt   # ~8 min, 2 threads
    python benchmarks/learned_forecast_on_policy.py --rounds 2 | tee .../on_policy_2_rounds.txt   # the learned draft collects again (+~7 min)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import learned_forecast as LF  # noqa: E402 - a sibling lab script

TRAIN_START, HELD_OUT_START, IMAGES = 21_056, 21_104, 48


class Recorder(LF.LearnedSplit):
    """The learned split that also keeps, per draft row with three anchors, the anchors (residual
    and input), their sigmas, the draft state's input and the deep blocks' true residual there."""

    records: list = []

    def forward_with_forecast(self, x, sigma, store, index, coeffs, labels, guidance=None):
        s = self.split
        h, cond, mod = s._enter(x, sigma, labels, guidance)
        width, g = h.shape[-1], h
        for blk in s.deep:
            g = blk(g, mod)
        for m, sg, anc in LF.three_anchors(self.self_draft._bank("draft"), x.shape[0]):
            parts = [anc[i][1][..., :width] for i in (2, 1, 0)] + [anc[i][1][..., width:] for i in (2, 1)]
            self.records.append(([p.half() for p in parts + [h[m], g[m] - h[m]]],
                                 [anc[2][0], anc[1][0], anc[0][0], sg]))
        return super().forward_with_forecast(x, sigma, store, index, coeffs, labels, guidance)


def collect(pipe, net, policies, split=Recorder) -> None:
    """Sample the training images under each policy with ``net`` drafting, keeping the records
    (``split``: :class:`Recorder` or a subclass)."""
    from sdsv.evaluation.runner import balanced_prompts
    from sdsv.forecast import LINE

    prompts = balanced_prompts(TRAIN_START - 20_000 + IMAGES)[TRAIN_START - 20_000:]
    pipe.self_draft = LF.learned_self_draft(pipe, net, split=split)
    try:
        with torch.inference_mode():
            for policy in policies:
                pipe(prompts, policy=policy, draft="self", solver="euler",
                     seed=[TRAIN_START + i for i in range(IMAGES)], forecast=LINE)
    finally:
        del pipe.self_draft


def stacked(records) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The records' seven tensors stacked (anchors newest first, their inputs, the draft input,
    the true residual) and their sigmas ``[records, 4]``."""
    return ([torch.stack([r[0][i] for r in records]) for i in range(7)],
            torch.tensor([r[1] for r in records], dtype=torch.float32))


def train_on(records, iters: int) -> torch.nn.Module:
    """:func:`learned_forecast.fit` on ``records``: 16 random records per step."""
    P, sig = stacked(records)

    def batch(gen):
        idx = torch.randint(len(records), (16,), generator=gen)
        ra, rb, rc, ha, hb, h, true = (p[idx].float() for p in P)
        return (*LF.features(ra, rb, rc, ha, hb, h, *sig[idx].unbind(1)), true)
    return LF.fit(P[0].shape[-1], batch, iters)


def trained_net(pipe, rounds: int, iters: int, reuse: bool = False) -> torch.nn.Module:
    """The on-policy forecaster after ``rounds`` collections, saved under the lab's cache (git-ignored);
    with ``reuse`` a saved one of the same rounds and iterations is loaded instead of trained."""
    from sdsv import ErrorControlled, FixedInterval

    weights = LF.OUT / "cache" / f"on_policy_r{rounds}_{iters}.pt"
    net = LF.make_net(pipe.target.cfg.dim).eval()
    if reuse and weights.exists():
        net.load_state_dict(torch.load(weights))
        return net
    t0 = time.time()
    windows = [ErrorControlled(50, tol=0.3), ErrorControlled(50, tol=0.2)]
    collect(pipe, net, windows + [FixedInterval(50, every=3, warmup=3)])
    print("round 1: records", len(Recorder.records), f"{time.time() - t0:.0f}s", flush=True)
    net = train_on(Recorder.records, iters)
    for r in range(2, rounds + 1):  # the latest forecaster drives the windows; trained again on every record
        collect(pipe, net, windows)
        print(f"round {r}: records", len(Recorder.records), f"{time.time() - t0:.0f}s", flush=True)
        net = train_on(Recorder.records, iters)
    Recorder.records.clear()
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), weights)
    return net


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=1, help="collections (the first with the line drafting)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reuse", action="store_true", help="load the forecaster a previous run saved, if any")
    args = ap.parse_args(argv)
    if args.iters < 1 or args.rounds < 1:
        ap.error("--iters and --rounds must be >= 1")
    torch.set_num_threads(args.threads)
    from sdsv.tiny.pipeline import TinyPipeline

    pipe = TinyPipeline.from_pretrained(names=("target",))
    held_out_rows(pipe, trained_net(pipe, args.rounds, args.iters, args.reuse), "on-policy learned")
    return 0


def held_out_rows(pipe, net, name: str) -> None:
    """``net`` drafting in the faithful windows (tol 0.3, 0.2) and the fixed cache every 3 on the
    held-out 48 images, a printed row each."""
    import tail_study as TS
    from sdsv import ErrorControlled, FixedInterval

    with torch.inference_mode():
        held_out = TS.ImageSet(pipe, HELD_OUT_START, IMAGES, Path("benchmarks/results/tail_study/cache"), IMAGES)
        for label, policy in (("windows, tol 0.3", ErrorControlled(50, tol=0.3)),
                              ("windows, tol 0.2", ErrorControlled(50, tol=0.2)),
                              ("cache every 3", FixedInterval(50, every=3, warmup=3))):
            pipe.self_draft = LF.learned_self_draft(pipe, net)
            try:
                held_out.row(f"{name}, {label}", policy)
            finally:
                del pipe.self_draft


if __name__ == "__main__":
    raise SystemExit(main())
