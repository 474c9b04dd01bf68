"""``sdsv eval``: reproduce the paper's Table 1, Table 2, Figure 2 and a speed/quality sweep on
the shipped tiny models, measured on this machine, into markdown tables and PNG figures.

    sdsv eval --experiment all --out benchmarks/results   # the committed results
    sdsv eval --experiment pareto --quick   # CI-sized smoke run (seconds)
    sdsv eval --experiment tail             # the tail: percentiles on 1056 images, two references (not in 'all')
    sdsv eval --experiment wan-video        # the paper's Wan2.1 rows on 56 clips of the tiny video model (not in 'all')
    sdsv eval --experiment peers            # sdsv beside diffusers' cache hooks and cache-dit on the tiny FluxPipeline (not in 'all')

Every method is sampled once per run over a fixed set of prompts and seeds and shared by the
experiments that use it; reference-based metrics compare with the target-only images.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from ..acceptance import AcceptanceTest
from ..cli_args import check, check_output_folder, check_weights, finite_float, int_at_least, weights_folder
from .methods import on_dpm_methods, self_draft_methods
from ..policies import StagePlan
from ..tiny.weights import MODEL_NAMES
from .experiments import EXPERIMENTS, RUNNERS, EvalConfig
from .runner import Runner
from .tail import SeedSets, make_runner, tail, tail_methods

# chosen with benchmarks/sweep_tau.py, as the demo's (sdsv.demo.DEFAULT_METRIC / DEFAULT_TAU)
from ..demo import DEFAULT_METRIC, DEFAULT_TAU
from ..tiny.pipeline import DEFAULT_GUIDANCE

# the tail: 48 prompts x 22 seeds to report on (configurations are chosen on the next seeds, by
# benchmarks/tail_study.py), the first 96 of them for the convergence check
FULL = dict(images=256, steps=50, batch=32, latency_images=5, pareto_images=32, taus=(0.2, 0.4), k2s=(5, 15),
            tail_images=1056, calibration_images=0, convergence_images=96, tail_batch=96, video_clips=56,
            peers_images=1056, peers_batch1_images=200, peers_calibration_images=48, peers_batch=8)
QUICK = dict(images=4, steps=8, batch=2, latency_images=1, pareto_images=2, taus=(0.1,), k2s=(5,),
             tail_images=4, calibration_images=2, convergence_images=2, tail_batch=2, video_clips=2,
             peers_images=4, peers_batch1_images=2, peers_calibration_images=2, peers_batch=2)
FEWER_STEP_FRACTIONS = (0.2, 0.3, 0.4, 0.5, 0.6)  # of the full schedule: 10, 15, 20, 25, 30 of 50
DPM_STEP_FRACTIONS = (0.2, 0.3, 0.4, 0.5)         # DPM-Solver++(2M): 10, 15, 20, 25 of 50
# table2's baselines (the demo's picks): Euler 20 of 50, DPM-Solver++(2M) 15, 20 and 25 of 50
TABLE_FEWER = ((0.4, "euler"), (0.3, "dpm++2m"), (0.4, "dpm++2m"), (0.5, "dpm++2m"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", default="all", choices=list(EXPERIMENTS) + ["tail", "wan-video", "peers", "all"],
                   help="'all' runs the paper's four (table1, table2, warmup, pareto), not the tail (its "
                        "1056 images x 7 rows and a 100-step reference take about an hour on 2 cores)")
    p.add_argument("--quick", action="store_true",
                   help=f"CI-sized smoke run: {QUICK['images']} images, {QUICK['steps']} steps (numbers meaningless)")
    p.add_argument("--out", default=None,
                   help="output folder (default: a new folder sdsv_eval_<date-time> in the current directory; "
                        "the project's committed results are written with --out benchmarks/results)")
    p.add_argument("--weights", type=weights_folder, default=None,
                   help="folder of tiny-model weights incl. classifier (default: shipped)")
    p.add_argument("--images", type=int_at_least(2), default=None, help=f"evaluation-set size (default {FULL['images']})")
    p.add_argument("--steps", type=int_at_least(2), default=None, help=f"sampling steps (default {FULL['steps']})")
    p.add_argument("--batch", type=int_at_least(1), default=None,
                   help=f"sampling batch for the quality metrics (default {FULL['batch']})")
    p.add_argument("--latency-images", type=int_at_least(1), default=None,
                   help=f"images timed at batch 1 per method (default {FULL['latency_images']})")
    p.add_argument("--pareto-images", type=int_at_least(2), default=None,
                   help=f"pareto: the first this many images (default {FULL['pareto_images']}; a multiple of --batch)")
    p.add_argument("--tail-images", type=int_at_least(2), default=None,
                   help=f"tail: report-set size (default {FULL['tail_images']} = 48 prompts x 22 seeds)")
    p.add_argument("--calibration-images", type=int_at_least(0), default=None,
                   help=f"tail: calibration-set size, seeds after the report set's (default {FULL['calibration_images']})")
    p.add_argument("--convergence-images", type=int_at_least(2), default=None,
                   help=f"tail: images of the convergence checks (default {FULL['convergence_images']})")
    p.add_argument("--video-clips", type=int_at_least(1), default=None,
                   help=f"wan-video: clips (default {FULL['video_clips']}; every motion every 7 clips)")
    p.add_argument("--tail-batch", type=int_at_least(1), default=None,
                   help=f"tail: sampling batch (default {FULL['tail_batch']})")
    p.add_argument("--peers-images", type=int_at_least(2), default=None,
                   help=f"peers: report images at --peers-batch (default {FULL['peers_images']})")
    p.add_argument("--peers-batch1-images", type=int_at_least(0), default=None,
                   help=f"peers: the first this many again at batch 1 (default {FULL['peers_batch1_images']}; "
                        "0 leaves batch 1 out)")
    p.add_argument("--peers-calibration-images", type=int_at_least(0), default=None,
                   help=f"peers: images MagCache and sdsv.calibrate are fitted on, seeds after the report set's "
                        f"(default {FULL['peers_calibration_images']}; 0 leaves those rows out)")
    p.add_argument("--peers-batch", type=int_at_least(1), default=None,
                   help=f"peers: the batch of the main run (default {FULL['peers_batch']})")
    p.add_argument("--flux", type=Path, default=None, help="peers: the tiny Flux folder (default: shipped)")
    p.add_argument("--peers-shard", type=shard_of, default=None, metavar="K/N",
                   help="peers: sample only every N-th batch from the K-th (0-based) into --out's cache and stop; "
                        "N such processes use N cores, then a run without it summarises")
    p.add_argument("--draft", default="svd", choices=["lite", "svd"], help="draft of table2 and warmup")
    p.add_argument("--metric", default=DEFAULT_METRIC, choices=["x0_rms", "state_rel_l2", "rel_l2", "cosine"])
    p.add_argument("--tau", type=finite_float(), default=DEFAULT_TAU, help="acceptance threshold of every SDSV method")
    p.add_argument("--taus", type=finite_float(), nargs="+", default=None, help="pareto: further taus (K2 = 9)")
    p.add_argument("--k2", type=int_at_least(1), nargs="+", default=None,
                   help="pareto: further Stage-2 window sizes (at --tau)")
    p.add_argument("--k2-verify", nargs="+", default=["endpoints"], choices=["endpoints", "full"],
                   help="pareto: the verification modes that get the K2 sweep (default endpoints: 'full' costs more "
                        "than the target alone on a compute-bound machine, its K2 points are the slowest of the run)")
    p.add_argument("--guidance", type=finite_float(0.0), default=DEFAULT_GUIDANCE)
    p.add_argument("--threads", type=int_at_least(1), default=min(2, os.cpu_count() or 1), help="torch CPU threads")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="run the models through torch.compile first, as `sdsv demo` does (default; eager with a "
                        "warning where inductor cannot build)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _sizes(args) -> dict:
    base = QUICK if args.quick else FULL
    return {k: getattr(args, k) if getattr(args, k, None) is not None else v for k, v in base.items()}


def _schedules(steps: int) -> None:
    """Every schedule the experiments build from the step count."""
    for make in ("paper_default", "fast", "slow", "improved_draft", "minimal_warmup", "conservative_warmup",
                 "draft_only", "target_only"):
        getattr(StagePlan, make)(steps)
    self_draft_methods(steps, "endpoints")
    on_dpm_methods(steps)
    tail_methods(steps)


def shard_of(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``0 <= K < N``."""
    k, sep, n = text.partition("/")
    try:
        k, n = int(k), int(n)
    except ValueError:
        k = n = -1
    if not sep or n < 1 or not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"expected K/N with 0 <= K < N, e.g. 0/2, got {text!r}")
    return k, n


def check_arguments(p: argparse.ArgumentParser, args) -> None:
    """What one option's type cannot see, checked before any model is loaded."""
    check_output_folder(p, "--out", args.out)
    size = _sizes(args)
    check(p, "--tau", lambda: AcceptanceTest(args.metric, args.tau))
    for tau in args.taus or ():
        check(p, "--taus", lambda: AcceptanceTest(args.metric, tau))
    check(p, "--steps", lambda: _schedules(size["steps"]))
    if size["latency_images"] > size["images"]:
        p.error(f"argument --latency-images: at most --images ({size['images']}), got {size['latency_images']}")
    n, batch = size["pareto_images"], size["batch"]
    if args.experiment in ("pareto", "all") and n != size["images"] and (n > size["images"] or n % batch):
        p.error(f"argument --pareto-images: a multiple of --batch ({batch}) up to --images ({size['images']}), got {n}")
    if args.experiment == "tail":
        _check_tail(p, size)
    if args.peers_shard is not None and (args.experiment != "peers" or args.out is None):
        p.error("argument --peers-shard: only with --experiment peers and an --out folder the shards share")
    if args.experiment == "peers":
        from ..tiny.flux.components import PIPELINE_DIR
        if size["peers_batch1_images"] > size["peers_images"]:
            p.error(f"argument --peers-batch1-images: at most --peers-images ({size['peers_images']}), "
                    f"got {size['peers_batch1_images']}")
        if not ((args.flux or PIPELINE_DIR) / "model_index.json").exists():
            p.error(f"argument --flux: no diffusers pipeline folder at {args.flux or PIPELINE_DIR} "
                    "(train one with python -m sdsv.tiny.flux.train)")
        return
    if args.experiment == "wan-video":
        from ..tiny.video.demo import methods as video_methods
        from ..tiny.weights import VIDEO_MODEL_NAMES
        check(p, "--steps", lambda: video_methods(size["steps"]))
        check_weights(p, args.weights, list(VIDEO_MODEL_NAMES) + ["video_classifier"])
        return
    check_weights(p, args.weights, list(MODEL_NAMES) + ["classifier"])


def _check_tail(p: argparse.ArgumentParser, size: dict) -> None:
    report, batch = size["tail_images"], size["tail_batch"]
    check(p, "--calibration-images", lambda: SeedSets(report, size["calibration_images"]).check_disjoint())
    if report % batch:
        p.error(f"argument --tail-images: a multiple of --tail-batch ({batch}), got {report}")
    n = size["convergence_images"]
    if n > report or (n % batch and n != report + size["calibration_images"]):
        p.error(f"argument --convergence-images: a multiple of --tail-batch ({batch}) up to --tail-images ({report}), got {n}")
    if size["latency_images"] > report:
        p.error(f"argument --latency-images: at most --tail-images ({report}), got {size['latency_images']}")


def fresh_folder(stem: str = "sdsv_eval") -> Path:
    """A new folder in the current directory, so that a run never overwrites an earlier one's results."""
    base = f"{stem}_{time.strftime('%Y%m%d-%H%M%S')}"
    for i in range(1000):
        path = Path(base if i == 0 else f"{base}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free folder name {base}-N in {Path.cwd()}")


def _steps(fractions, steps: int) -> tuple:
    return tuple(sorted({max(1, round(f * steps)) for f in fractions}))


def main(args) -> int:
    torch.set_num_threads(args.threads)
    size = _sizes(args)
    pick = size.__getitem__
    steps = pick("steps")
    out = Path(args.out) if args.out else fresh_folder()
    print(f"sdsv eval: writing to {out}", flush=True)
    cfg = EvalConfig(
        accept=AcceptanceTest(args.metric, args.tau), draft=args.draft,
        taus=tuple(args.taus if args.taus is not None else size["taus"]),
        k2s=tuple(args.k2 if args.k2 is not None else size["k2s"]),
        pareto_images=pick("pareto_images"), k2_verify=tuple(args.k2_verify),
        fewer_steps=_steps(FEWER_STEP_FRACTIONS, steps), dpm_steps=_steps(DPM_STEP_FRACTIONS, steps),
        table_fewer=tuple(dict.fromkeys((max(1, round(f * steps)), solver) for f, solver in TABLE_FEWER)),
    )
    options = dict(latency_images=pick("latency_images"), guidance=args.guidance, progress=not args.quiet,
                   compile=args.compile)
    t0 = time.perf_counter()
    if args.experiment == "wan-video":  # the tiny video model, its own clips and reference
        from .video import wan_video
        markdown, _, files = wan_video(pick("video_clips"), steps, out, args.weights, args.guidance,
                                       progress=not args.quiet)
        print(markdown + "\nfiles: " + ", ".join(str(f) for f in files) + "\n", flush=True)
    elif args.experiment == "peers":  # the tiny FluxPipeline, every peer through its own API
        from .peers import peers
        markdown, _, files = peers(out, pick("peers_images"), pick("peers_batch1_images"),
                                   pick("peers_calibration_images"), pick("peers_batch"), steps, args.flux,
                                   progress=not args.quiet, shard=args.peers_shard)
        print(markdown + "\nfiles: " + ", ".join(str(f) for f in files) + "\n", flush=True)
    elif args.experiment == "tail":  # its own runner: other seeds, the converged reference's steps
        sets = SeedSets(pick("tail_images"), pick("calibration_images"))
        runner = make_runner(sets, steps, weights_dir=args.weights, batch=pick("tail_batch"), **options)
        markdown, _, files = tail(runner, sets, pick("convergence_images"), out)
        print(markdown + "\nfiles: " + ", ".join(str(f) for f in files) + "\n", flush=True)
    else:
        runner = Runner(args.weights, images=pick("images"), steps=steps, batch=pick("batch"), **options)
        for name in list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]:
            res = RUNNERS[name](runner, cfg, out)
            print(res.markdown, flush=True)
            print("files: " + ", ".join(str(f) for f in res.files) + "\n", flush=True)
    print(f"sdsv eval {args.experiment}{' --quick' if args.quick else ''}: {time.perf_counter() - t0:.0f} s", flush=True)
    return 0
