"""The learned forecaster trained on whole runs: a loss on the final image, through every step.

forecast_windows.py found that no local error ranks forecasts for the faithful yardstick: the
windows' errors cancel between windows, and a forecaster better at every step loses the run. Here
the sampler's Euler steps over fixed windows (the line's, recorded per image at tol 0.3) are
written out with autograd: the target at the windows' closing steps (its deep residual and input
kept as anchors, both guidance branches), the forecast at the draft steps (the line with two
anchors, the line plus the net's correction with three, as ``learned_forecast.LearnedSplit``).
The net starts as the line (zero correction) and is trained on the squared error of the final image
against the 50-step output, 6 of the 48 training images (seeds 21056..21103) per step; then sampled
through the real sampler on the held-out 48 (21104..21151), in the line's windows and its own.
With ``--base damped`` the net corrects the damped forecast instead (its windows, its two-anchor
forecast), as ``forecast_windows.DampedBase`` does in the sampler.
Results: benchmarks/results/learned_forecast/whole_run.txt (docs/tail.md, "Forecasts").

    python benchmarks/learned_forecast_whole_run.py | tee benchmarks/results/learned_forecast/whole_run.txt   # ~20 min, 2 threads
    python benchmarks/learned_forecast_whole_run.py --base damped | tee .../whole_run_damped.txt
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import forecast_windows as FW  # noqa: E402 - sibling lab scripts
import learned_forecast as LF  # noqa: E402
import learned_forecast_on_policy as OP  # noqa: E402

from sdsv import ErrorControlled  # noqa: E402
from sdsv.forecast import DAMPED, LINE  # noqa: E402
from sdsv.metrics import psnr, tail_summary  # noqa: E402


def drafted_steps(plan: dict) -> set[int]:
    return {st + i for st, (kind, k) in plan.items() if kind == "unverified" for i in range(k)}


def simulate(pipe, net, prompts, seeds, plans, guidance: float = 3.0, base=LINE) -> torch.Tensor:
    """Images of the windows ``plans`` (one per image), Euler, the net's correction added to ``base``
    (the line, as ``LF.LearnedSplit``, or DAMPED, as ``forecast_windows.DampedBase``): differentiable."""
    from sdsv.tiny.split import TinyDiTSplit

    c = pipe.check_call(prompts, policy=FW.Replay(plans_=tuple(plans)), seed=seeds, solver="euler",
                        guidance=guidance)
    split, n = TinyDiTSplit(pipe.target), len(prompts)
    labels = torch.cat([c.labels, torch.as_tensor(pipe.target.null_labels).expand_as(c.labels)])
    x, sigmas = c.noise, c.sigmas
    drafted = [drafted_steps(p) for p in plans]
    anchors = [[] for _ in range(n)]  # per image: (sigma, residual [2, tokens, dim], input [2, tokens, dim])
    for t in range(len(sigmas) - 1):
        s = float(sigmas[t])
        h, cond, mod = split._enter(torch.cat([x, x]), sigmas[t].expand(2 * n), labels, None)
        h = torch.stack([h[:n], h[n:]], 1)  # [n, 2 branches, tokens, dim]
        out = [None] * n
        target = [b for b in range(n) if t not in drafted[b]]
        if target:
            g = h[target].flatten(0, 1)
            m = torch.stack([mod[:n], mod[n:]], 1)[target].flatten(0, 1)
            for blk in split.deep:
                g = blk(g, m)
            g = g.unflatten(0, (len(target), 2))
            for j, b in enumerate(target):
                anchors[b].append((s, g[j] - h[b], h[b]))
                out[b] = g[j]
        two = [b for b in range(n) if out[b] is None and len(anchors[b]) < 3]
        for b in two:
            w = base.coefficients([a[0] for a in anchors[b][-2:]], s)
            out[b] = h[b] + sum(wi * a[1] for wi, a in zip(w, anchors[b][-2:]))
        three = [b for b in range(n) if out[b] is None]
        if three:
            part = lambda i, j: torch.cat([anchors[b][-3 + i][j] for b in three])  # noqa: E731
            sig = lambda i: torch.tensor([anchors[b][-3 + i][0] for b in three]).repeat_interleave(2)  # noqa: E731
            f, line, scale = LF.features(part(2, 1), part(1, 1), part(0, 1), part(2, 2), part(1, 2),
                                         h[three].flatten(0, 1), sig(2), sig(1), sig(0),
                                         torch.full((2 * len(three),), s))
            if base != LINE:
                line = torch.cat([sum(c * a[1] for c, a in zip(base.coefficients([a[0] for a in anchors[b][-3:]], s),
                                                                  anchors[b][-3:])) for b in three])
            forecast = (h[three].flatten(0, 1) + line + net(f) * scale).unflatten(0, (len(three), 2))
            for j, b in enumerate(three):
                out[b] = forecast[j]
        out = torch.stack(out)  # [n, 2, tokens, dim]
        v2 = split._leave(torch.cat([out[:, 0], out[:, 1]]), cond, mod)
        v = v2[n:] + guidance * (v2[:n] - v2[n:])
        x = x + (sigmas[t + 1] - sigmas[t]) * v
    return ((x + 1) / 2).clamp(0, 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=160)
    ap.add_argument("--batch", type=int, default=6)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--base", choices=("line", "damped"), default="line",
                    help="the forecast the net corrects (and whose windows it trains in)")
    ap.add_argument("--check", action="store_true", help="only the simulation against the real sampler")
    args = ap.parse_args(argv)
    if args.iters < 1 or args.batch < 1 or not args.lr > 0:
        ap.error("--iters and --batch must be >= 1, --lr > 0")
    torch.set_num_threads(args.threads)
    import tail_study as TS
    from sdsv.tiny.pipeline import TinyPipeline

    base, split = (LINE, None) if args.base == "line" else (DAMPED, FW.DampedBase)
    print(f"# python benchmarks/learned_forecast_whole_run.py --iters {args.iters} --batch {args.batch} --lr {args.lr:g}"
          f" --base {args.base}"
          f" — {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{time.strftime('%Y-%m-%d')}; fid mean / p5 / p1 / worst, dB", flush=True)
    pipe = TinyPipeline.from_pretrained(names=("target",))
    for p in pipe.target.parameters():
        p.requires_grad_(False)
    cache = Path("benchmarks/results/tail_study/cache")
    with torch.inference_mode():
        train = TS.ImageSet(pipe, OP.TRAIN_START, 96, cache, 48)  # the first 48: training; the reference covers both
        rec = FW.Recording(ErrorControlled(50, tol=0.3))
        line_images, _ = train.run(rec, idx=list(range(OP.IMAGES)), forecast=base)
    plans, target = rec.plans(), train.fidelity[:OP.IMAGES].clone()
    net = LF.make_net(pipe.target.cfg.dim)
    with torch.no_grad():
        sim = simulate(pipe, FW.ZERO_NET, train.prompts[:8], train.seeds[:8], plans[:8], base=base)
    print(f"simulation vs the sampler, the {args.base}, 8 images: max |diff| {float((sim - line_images[:8]).abs().max()):.2e}",
          flush=True)
    probe = LF.make_net(pipe.target.cfg.dim).eval()
    torch.nn.init.normal_(probe[-1].weight, std=0.02, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        pipe.self_draft = LF.learned_self_draft(pipe, probe, split=split)
        try:
            real = pipe(train.prompts[:8], policy=FW.Replay(plans_=tuple(plans[:8])), draft="self", solver="euler",
                        seed=train.seeds[:8], forecast=base).images
        finally:
            del pipe.self_draft
        sim = simulate(pipe, probe, train.prompts[:8], train.seeds[:8], plans[:8], base=base)
    print(f"simulation vs the sampler, a net with a random correction, 8 images: max |diff| "
          f"{float((sim - real).abs().max()):.2e}", flush=True)
    if args.check:
        return 0
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(0)
    t0 = time.time()
    for it in range(args.iters):
        idx = torch.randperm(OP.IMAGES, generator=gen)[:args.batch].tolist()
        images = simulate(pipe, net, [train.prompts[i] for i in idx], [train.seeds[i] for i in idx],
                          [plans[i] for i in idx], base=base)
        loss = (images - target[idx]).square().flatten(1).mean(1).log10().mean()  # mean -PSNR/10 over images
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % 25 == 0 or it == args.iters - 1:
            print(f"  iter {it:4d}: training batch mean PSNR {-10 * loss.item():.2f} dB, {time.time() - t0:.0f}s",
                  flush=True)
    net.eval()
    torch.save(net.state_dict(), LF.OUT / "cache" / f"whole_run_{args.base}_{args.iters}.pt")
    with torch.inference_mode():
        held_out = TS.ImageSet(pipe, OP.HELD_OUT_START, OP.IMAGES, cache, OP.IMAGES)
        rec = FW.Recording(ErrorControlled(50, tol=0.3))
        FW.run(held_out, rec, base)
        for label, policy, forecast, learned in (
                ("line, its own windows", ErrorControlled(50, tol=0.3), LINE, None),
                ("damped, its own windows", ErrorControlled(50, tol=0.3), DAMPED, None),
                (f"whole-run learned, the {args.base}'s windows", FW.Replay(plans_=tuple(rec.plans())), base, net),
                ("whole-run learned, its own windows, tol 0.3", ErrorControlled(50, tol=0.3), base, net),
                ("whole-run learned, its own windows, tol 0.4", ErrorControlled(50, tol=0.4), base, net)):
            images, evals = FW.run(held_out, policy, forecast, learned, split if learned is not None else None)
            t = tail_summary(psnr(images, held_out.fidelity))
            print(f"  held out, {label:44s} {evals:5.2f} evals | {t['mean']:.2f} / {t['p5']:.2f} / {t['p1']:.2f} / "
                  f"{t['worst']:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
