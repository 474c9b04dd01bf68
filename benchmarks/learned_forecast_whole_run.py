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
``--k-max``/``--tol`` set the windows it trains in; ``--train-start 22000 --train-images 240``
trains on images apart from both sets (the calibration set is then held out whole); ``--init``
continues from a saved net, in its base's windows or (``--own-windows``) its own; ``--evaluate``
samples a saved net on the calibration or report set beside its base alone.
Results: benchmarks/results/learned_forecast/whole_run*.txt (docs/tail.md, "Forecasts").

    python benchmarks/learned_forecast_whole_run.py | tee benchmarks/results/learned_forecast/whole_run.txt   # ~20 min, 2 threads
    python benchmarks/learned_forecast_whole_run.py --base damped | tee .../whole_run_damped.txt
    python benchmarks/learned_forecast_whole_run.py --base damped --evaluate report --tols 0.3,0.4   # .../whole_run_damped_report.txt
    K6="--base damped --k-max 6 --train-start 22000 --train-images 240 --iters 300 --threads 1"
    python benchmarks/learned_forecast_whole_run.py $K6 --loss pooled   # and --loss mean_db: .../whole_run_damped_k6.txt (25 min)
    python benchmarks/learned_forecast_whole_run.py $K6 --loss pooled --evaluate report --tols 0.3   # .../whole_run_damped_k6_report.txt
    python benchmarks/learned_forecast_whole_run.py $K6 --loss pooled --time   # its draft calls' cost (the same file)
    NET=benchmarks/results/learned_forecast/cache/whole_run_damped_300_tol0.3_k6_22000x240_pooled.pt
    python benchmarks/learned_forecast_whole_run.py $K6 --loss pooled --iters 200 --lr 3e-4 --init $NET --threads 2 [--own-windows]
"""
from __future__ import annotations

import argparse
import copy
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


def evaluate(pipe, saved: Path, base, split, name: str, tols: list[float], cache: Path, windows) -> int:
    """The saved net beside its base alone, each in its own windows at each tolerance."""
    import tail_study as TS

    net = saved_net(pipe, saved)
    start, n = (TS.CALIBRATION_START, 96) if name == "calibration" else (TS.REPORT_START, 1056)
    with torch.inference_mode():
        images = TS.ImageSet(pipe, start, n, cache, 48)
        for tol in tols:
            for label, learned in ((base.name, None), ("whole-run learned", net)):
                t0 = time.time()
                out, evals = FW.run(images, windows(tol), base, learned,
                                    split if learned is not None else None)
                t = tail_summary(psnr(out, images.fidelity))
                print(f"  {name} {n}, tol {tol:.2f}, {label:18s} {evals:5.2f} evals | {t['mean']:.2f} / {t['p5']:.2f} / "
                      f"{t['p1']:.2f} / {t['worst']:.2f}  ({time.time() - t0:.0f} s)", flush=True)
    return 0


def saved_net(pipe, saved: Path) -> torch.nn.Module:
    if not saved.exists():
        raise SystemExit(f"no trained net at {saved}: train it first (the same settings)")
    net = LF.make_net(pipe.target.cfg.dim)
    net.load_state_dict(torch.load(saved))
    return net.eval()


def draft_cost(pipe, saved: Path, base, split, windows, cache: Path, images: int = 8, rounds: int = 5) -> int:
    """What the net adds to a draft call: the base's windows on the report set's first ``images``,
    replayed with the base alone and with the net (same target calls), interleaved, median of ``rounds``."""
    import statistics

    import tail_study as TS

    net = saved_net(pipe, saved)
    with torch.inference_mode():
        first = TS.ImageSet(pipe, TS.REPORT_START, images, cache, images)
        rec = FW.Recording(windows)
        FW.run(first, rec, base)
        plans = tuple(rec.plans())
        drafts = sum(len(drafted_steps(p)) for p in plans)
        wall = {"base": [], "net": []}
        for r in range(rounds + 1):
            for label, learned in (("base", None), ("net", net)):
                t0 = time.perf_counter()
                FW.run(first, FW.Replay(plans_=plans), base, learned, split if learned is not None else None)
                if r:  # the first round warms up
                    wall[label].append(time.perf_counter() - t0)
    b, n = statistics.median(wall["base"]), statistics.median(wall["net"])
    print(f"  {images} images, batch {images}, {drafts / images:.1f} draft steps per image: {base.name} alone "
          f"{1e3 * b / images:.1f} ms per image, with the net {1e3 * n / images:.1f} ms (+{1e3 * (n - b) / drafts:.2f} ms "
          f"per draft step per image); net {sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters, "
          f"per token {LF.make_net.__defaults__[0]}-wide, {pipe.target.cfg.dim}-dim model", flush=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=160)
    ap.add_argument("--batch", type=int, default=6)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--base", choices=("line", "damped"), default="line",
                    help="the forecast the net corrects (and whose windows it trains in)")
    ap.add_argument("--check", action="store_true", help="only the simulation against the real sampler")
    ap.add_argument("--evaluate", choices=("calibration", "report"),
                    help="no training: the saved net of these settings against the base, on the calibration set "
                         "(seeds 21056.., 96 images; the first 48 trained it) or the report set (20000.., 1056)")
    ap.add_argument("--tols", default="0.3,0.35,0.4", help="with --evaluate: the windows' tolerances")
    ap.add_argument("--time", action="store_true",
                    help="no training: wall time of the saved net's draft calls, the base's windows replayed with and without it")
    ap.add_argument("--tol", type=float, default=0.3, help="the tolerance of the windows it trains in")
    ap.add_argument("--k-max", type=int, default=4, help="the longest window (the policy's k_max)")
    ap.add_argument("--train-start", type=int, default=OP.TRAIN_START,
                    help="the first training seed: 21056 (the calibration set's first 48, the default) or "
                         f">= {OP.HELD_OUT_START + OP.IMAGES}, apart from both sets")
    ap.add_argument("--train-images", type=int, default=OP.IMAGES)
    ap.add_argument("--loss", choices=("mean_db", "pooled"), default="mean_db",
                    help="mean_db: each image's PSNR counts alike; pooled: the batch's summed squared error "
                         "(the worst images weigh most)")
    ap.add_argument("--init", type=Path, help="start from this saved net (the same --base) instead of the base alone")
    ap.add_argument("--own-windows", action="store_true",
                    help="train in the windows the --init net takes itself (the default: its base's)")
    args = ap.parse_args(argv)
    if args.own_windows and args.init is None:
        ap.error("--own-windows needs --init: the net whose windows to train in")
    if args.init is not None and not args.init.is_file():
        ap.error(f"--init: no file {args.init}")
    if args.iters < 1 or args.batch < 1 or not args.lr > 0 or args.k_max < 2 or not args.tol > 0:
        ap.error("--iters and --batch must be >= 1, --lr and --tol > 0, --k-max >= 2")
    beside_both = args.train_start >= OP.HELD_OUT_START + OP.IMAGES
    if not (beside_both or (args.train_start == OP.TRAIN_START and 1 <= args.train_images <= OP.IMAGES)):
        ap.error(f"--train-start must be {OP.TRAIN_START} (with --train-images <= {OP.IMAGES}) or >= "
                 f"{OP.HELD_OUT_START + OP.IMAGES}: the report set (20000..21055) and the held-out images choose nothing")
    if args.train_images < args.batch:
        ap.error("--train-images must be >= --batch")
    torch.set_num_threads(args.threads)
    import tail_study as TS
    from sdsv.tiny.pipeline import TinyPipeline

    base, split = (LINE, None) if args.base == "line" else (DAMPED, FW.DampedBase)
    print(f"# python benchmarks/learned_forecast_whole_run.py --iters {args.iters} --batch {args.batch} --lr {args.lr:g}"
          f" --base {args.base} --tol {args.tol:g} --k-max {args.k_max} --train-start {args.train_start}"
          f" --train-images {args.train_images} --loss {args.loss}" + (f" --init {args.init}" if args.init else "") +
          (" --own-windows" if args.own_windows else "") +
          f" — {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{time.strftime('%Y-%m-%d')}; fid mean / p5 / p1 / worst, dB", flush=True)
    pipe = TinyPipeline.from_pretrained(names=("target",))
    for p in pipe.target.parameters():
        p.requires_grad_(False)
    cache = Path("benchmarks/results/tail_study/cache")
    settings = (args.tol, args.k_max, args.train_start, args.train_images, args.loss)
    tag = "" if settings == (0.3, 4, OP.TRAIN_START, OP.IMAGES, "mean_db") else \
        f"_tol{args.tol:g}_k{args.k_max}_{args.train_start}x{args.train_images}_{args.loss}"
    tag += f"_init-{args.init.stem}" if args.init is not None else ""
    tag += "_own" if args.own_windows else ""
    saved = LF.OUT / "cache" / f"whole_run_{args.base}_{args.iters}{tag}.pt"
    windows = lambda tol: ErrorControlled(50, tol=tol, k_max=args.k_max)  # noqa: E731
    if args.time:
        return draft_cost(pipe, saved, base, split, windows(args.tol), cache)
    if args.evaluate:
        tols = [float(t) for t in args.tols.split(",")]
        return evaluate(pipe, saved, base, split, args.evaluate, tols, cache, windows)
    net = LF.make_net(pipe.target.cfg.dim)
    if args.init is not None:
        net.load_state_dict(torch.load(args.init))
    drafting = copy.deepcopy(net).eval() if args.own_windows else None  # whose windows it trains in: the base's
    with torch.inference_mode():
        if beside_both:
            train = TS.ImageSet(pipe, args.train_start, args.train_images, cache, 48)
        else:  # the calibration set's first images: its cached reference covers them
            train = TS.ImageSet(pipe, OP.TRAIN_START, 96, cache, 48)
        rec = FW.Recording(windows(args.tol))
        line_images, evals = FW.run(train, rec, base, drafting, split, idx=list(range(args.train_images)))
    whose = "the --init net" if args.own_windows else f"the {args.base}"
    print(f"training windows: {whose}'s, tol {args.tol:g}, k_max {args.k_max}, {args.train_images} images "
          f"(seeds {args.train_start}..): {evals:.2f} evals", flush=True)
    plans, target = rec.plans(), train.fidelity[:args.train_images].clone()
    with torch.no_grad():
        sim = simulate(pipe, FW.ZERO_NET if drafting is None else drafting, train.prompts[:8], train.seeds[:8],
                       plans[:8], base=base)
    print(f"simulation vs the sampler, {whose}, 8 images: max |diff| {float((sim - line_images[:8]).abs().max()):.2e}",
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
        idx = torch.randperm(args.train_images, generator=gen)[:args.batch].tolist()
        images = simulate(pipe, net, [train.prompts[i] for i in idx], [train.seeds[i] for i in idx],
                          [plans[i] for i in idx], base=base)
        mse = (images - target[idx]).square().flatten(1).mean(1)
        loss = mse.log10().mean() if args.loss == "mean_db" else mse.mean().log10()  # -PSNR/10
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % 25 == 0 or it == args.iters - 1:
            print(f"  iter {it:4d}: training batch PSNR ({args.loss}) {-10 * loss.item():.2f} dB, {time.time() - t0:.0f}s",
                  flush=True)
    net.eval()
    torch.save(net.state_dict(), saved)
    with torch.inference_mode():
        # held out: the calibration images it did not train on
        held_out = TS.ImageSet(pipe, OP.HELD_OUT_START, OP.IMAGES, cache, OP.IMAGES) if not beside_both else \
            TS.ImageSet(pipe, TS.CALIBRATION_START, 96, cache, 48)
        rec = FW.Recording(windows(args.tol))
        FW.run(held_out, rec, base)
        looser = round(args.tol + 0.1, 3)
        for label, policy, forecast, learned in (
                ("line, its own windows", windows(args.tol), LINE, None),
                ("damped, its own windows", windows(args.tol), DAMPED, None),
                (f"whole-run learned, the {args.base}'s windows", FW.Replay(plans_=tuple(rec.plans())), base, net),
                (f"whole-run learned, its own windows, tol {args.tol:g}", windows(args.tol), base, net),
                (f"whole-run learned, its own windows, tol {looser:g}", windows(looser), base, net)):
            images, evals = FW.run(held_out, policy, forecast, learned, split if learned is not None else None)
            t = tail_summary(psnr(images, held_out.fidelity))
            print(f"  held out ({held_out.n}), {label:44s} {evals:5.2f} evals | {t['mean']:.2f} / {t['p5']:.2f} / {t['p1']:.2f} / "
                  f"{t['worst']:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
