"""The peers at Flux/Wan size on one GPU: what each method's own machinery costs per step.

Random bf16 weights at the published Flux.1-dev and Wan2.1-T2V-1.3B configurations (timings and
mechanics, never image quality). Each method runs through its own public API at a setting whose
deep work matches sdsv's faithful default on the trained tiny Flux (the fraction of full
evaluations, ``--deep-fraction``, read from the committed peers results when they exist), so
what differs between them is overhead, not schedule:

* ``plain``: the pipeline alone;
* ``sdsv``: ``sdsv.enable(pipe)`` (the faithful default; its own error control decides);
* ``taylorseer``: diffusers ``TaylorSeerCacheConfig(cache_interval=...)`` (the interval that gives the fraction);
* ``fbc``: diffusers ``FirstBlockCacheConfig(threshold=...)`` (data-dependent: random weights decide its count);
* ``magcache``: diffusers ``MagCacheConfig`` with ``FLUX_MAG_RATIOS`` (Flux only; its skips follow the ratios);
* ``cachedit``, ``cachedit_taylorseer``, ``cachedit_foca``: cache-dit's DBCache (Fn 8, Bn 0 as its
  Flux default) with ``steps_computation_mask`` computing the same number of steps.

Per method and size: median wall-clock of ``pipe(...)`` (latents out, no text encoding or VAE),
transformer calls, deep work (multiply-accumulates of the transformer's ``nn.Linear`` layers in an
untimed run, as ``sdsv eval --experiment peers`` counts them) as a fraction of the pipeline's, and
the **overhead per step**: ``(wall - work_fraction x plain wall) / steps``, the time that is not the
compute the method did. Eager, then with ``compile_repeated_blocks(fullgraph=True)``, dynamo's
graph breaks counted.

    python benchmarks/gpu/peers_overhead.py --out "$OUT"                 # GPU
    python benchmarks/gpu/peers_overhead.py --tiny --out /tmp/peers_gpu   # CPU dry run, tiny configs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import sdsv  # noqa: E402
from e2e_check import Ctx, Results, count_calls, environment, free, timed  # noqa: E402
from sdsv.evaluation.peers import LinearWork  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
PEERS_RESULTS = os.path.join(ROOT, "benchmarks", "results", "peers", "peers.json")
METHODS = ("plain", "sdsv", "taylorseer", "fbc", "magcache", "cachedit", "cachedit_taylorseer", "cachedit_foca")


def deep_fraction_from_results(default: float = 0.3) -> tuple[float, str]:
    """sdsv faithful's deep evaluations per image / steps on the tiny Flux (committed results)."""
    try:
        data = json.load(open(PEERS_RESULTS))
        batch1 = data["rows"]["batch 1"]
        row = next(r for r in batch1 if r["method"] == "sdsv faithful")
        return row["deep_evals"] / row["steps"], f"{PEERS_RESULTS} (sdsv faithful, batch 1)"
    except (OSError, KeyError, StopIteration, ValueError):
        return default, f"default {default} (no committed peers results)"


def sections(tiny: bool) -> list[dict]:
    if tiny:
        return [dict(name="flux-tiny-8", size="flux-tiny", steps=8), dict(name="wan-tiny-8", size="wan-tiny", steps=8)]
    return [dict(name="flux-1024-28", size="flux-1024", steps=28), dict(name="wan-480p-17f-50", size="wan-480p-17f", steps=50),
            dict(name="flux-1024-50", size="flux-1024", steps=50), dict(name="wan-480p-81f-50", size="wan-480p-81f", steps=50)]


def compute_mask(steps: int, computed: int, warmup: int) -> list[int]:
    """cache-dit's ``steps_computation_mask``: ``computed`` of ``steps`` steps compute, the first
    ones (at most ``warmup``, at most half of them) and the rest evenly spread, the last step included."""
    computed = max(1, min(computed, steps))
    head = max(1, min(warmup, computed // 2))  # the first step has nothing cached
    rest, tail = computed - head, steps - head
    mask = [1] * head + [0] * tail
    for i in range(rest):
        mask[head + round((i + 1) * tail / rest) - 1] = 1
    return mask


def attach(pipe, method: str, family: str, steps: int, fraction: float):
    """Put ``method`` on ``pipe`` through its own API; returns the function that takes it off."""
    from diffusers import hooks as H

    tr = pipe.transformer
    computed = max(1, round(fraction * steps))
    if method == "plain":
        return lambda: None
    if method == "sdsv":
        sdsv.enable(pipe)
        return lambda: sdsv.disable(pipe)
    if method == "taylorseer":
        before = 3
        interval = max(1, round((steps - before) / max(1, computed - before)))
        tr.enable_cache(H.TaylorSeerCacheConfig(cache_interval=interval, disable_cache_before_step=before))
        return tr.disable_cache
    if method == "fbc":
        tr.enable_cache(H.FirstBlockCacheConfig(threshold=0.2))
        return tr.disable_cache
    if method == "magcache":
        if family != "flux":
            raise NotImplementedError("diffusers ships mag_ratios for Flux only (FLUX_MAG_RATIOS); Wan needs a calibration run")
        from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS
        tr.enable_cache(H.MagCacheConfig(threshold=0.24, mag_ratios=FLUX_MAG_RATIOS, num_inference_steps=steps))
        return tr.disable_cache
    if method.startswith("cachedit"):
        import cache_dit as cd
        calibrator = {"cachedit": None, "cachedit_taylorseer": cd.TaylorSeerCalibratorConfig(taylorseer_order=1),
                      "cachedit_foca": cd.FoCaCalibratorConfig()}[method]
        blocks = len(getattr(tr, "transformer_blocks", [])) + len(getattr(tr, "single_transformer_blocks", []))
        blocks = blocks or len(getattr(tr, "blocks", []))
        fn = max(1, round(8 * blocks / 57))
        cd.enable_cache(pipe, cache_config=cd.DBCacheConfig(
            Fn_compute_blocks=fn, Bn_compute_blocks=0, num_inference_steps=steps,
            steps_computation_mask=compute_mask(steps, computed, warmup=8),
            steps_computation_policy="static"), calibrator_config=calibrator)
        return lambda: cd.disable_cache(pipe)
    raise ValueError(method)


def graph_breaks() -> int:
    from torch._dynamo.utils import counters
    return sum(counters["graph_break"].values())


def run_section(ctx, spec, fraction, methods, modes, reps, put):
    family = ctx.sizes[spec["size"]][0]
    res = {"size": spec["size"], "steps": spec["steps"], "deep_fraction": fraction, "modes": {}}
    kwargs = ctx.call_kwargs(spec["size"], spec["steps"])
    warm = dict(kwargs, num_inference_steps=3)
    eager_macs: dict[str, int] = {}  # hooks inside compiled regions do not count: the work is eager's
    for mode in modes:
        # a fresh pipeline per mode: cache-dit's disable_cache leaves its patched forward behind
        ctx.pipes.pop(family, None)
        pipe = ctx.pipe(family)
        out = res["modes"][mode] = {}
        if mode == "regional":
            pipe.transformer.compile_repeated_blocks(fullgraph=True)
        plain_wall = plain_macs = None
        for method in methods:
            row = out[method] = {}
            detach = None
            try:
                breaks0 = graph_breaks()
                detach = attach(pipe, method, family, spec["steps"], fraction)
                with torch.no_grad():
                    timed(lambda: pipe(generator=torch.Generator().manual_seed(0), **warm), ctx.device)  # warm-up
                    work = LinearWork(pipe.transformer) if mode == "eager" else None
                    try:
                        with count_calls(pipe.transformer) as seen:
                            pipe(generator=torch.Generator().manual_seed(0), **kwargs)
                    finally:
                        if work is not None:
                            work.remove()
                            eager_macs[method] = work.macs
                    macs = eager_macs.get(method)
                    times = [timed(lambda: pipe(generator=torch.Generator().manual_seed(0), **kwargs), ctx.device)[1]
                             for _ in range(reps)]
                row.update(wall_s=statistics.median(times), times_s=times, macs=macs, module_calls=seen["calls"],
                           graph_breaks=graph_breaks() - breaks0)
                if method == "plain":
                    plain_wall, plain_macs = row["wall_s"], macs
                if plain_wall and macs is not None and plain_macs:
                    frac = macs / plain_macs
                    row.update(work_fraction=frac, speedup=plain_wall / row["wall_s"],
                               overhead_ms_per_step=1000 * (row["wall_s"] - frac * plain_wall) / spec["steps"])
                stats = getattr(pipe, "sdsv_stats", None) if method == "sdsv" else None
                if stats is not None:
                    row["target_calls"] = stats.to_dict()["target_calls"]
            except Exception as e:  # noqa: BLE001 - recorded; the next method still runs
                row.update(error=f"{type(e).__name__}: {e}"[:400], traceback=traceback.format_exc()[-1500:])
            finally:
                if detach is not None:
                    try:
                        detach()
                    except Exception as e:  # noqa: BLE001
                        row["detach_error"] = f"{type(e).__name__}: {e}"[:200]
                free(ctx.device)
            put(res)
            print(f"[{spec['name']} {mode}] {method:20s} " + (f"{row['wall_s']:.3f}s work {row.get('work_fraction', 1):.2f} "
                  f"overhead {row.get('overhead_ms_per_step', 0):.2f} ms/step" if "wall_s" in row else row.get("error", "")),
                  flush=True)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "peers_overhead_out"))
    ap.add_argument("--tiny", action="store_true", help="tiny configs on CPU, fp32: checks the script, measures nothing")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--modes", default="eager,regional")
    ap.add_argument("--sections", default=None, help="comma-separated section names (default all)")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--deep-fraction", type=float, default=None)
    ap.add_argument("--total-s", type=float, default=None, help="start no section after this many seconds")
    args = ap.parse_args(argv)
    device = torch.device("cpu" if args.tiny else "cuda")
    if not args.tiny and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --tiny to check the script on a CPU")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    fraction, source = (args.deep_fraction, "--deep-fraction") if args.deep_fraction else deep_fraction_from_results()
    os.makedirs(args.out, exist_ok=True)
    env = dict(environment(device, dtype, args.tiny), deep_fraction=fraction, deep_fraction_source=source)
    results = Results(os.path.join(args.out, "peers_overhead.json"), env)
    ctx = Ctx(argparse.Namespace(tiny=args.tiny, warmup_steps=3), device, dtype)
    chosen = [s for s in sections(args.tiny) if not args.sections or s["name"] in args.sections.split(",")]
    t0 = time.perf_counter()
    for spec in chosen:
        if args.total_s is not None and time.perf_counter() - t0 > args.total_s:
            results.put(spec["name"], {"status": "skipped", "why": "--total-s reached"})
            continue
        try:
            run_section(ctx, spec, fraction, args.methods.split(","), args.modes.split(","),
                        args.reps or (1 if args.tiny else 3), lambda v, n=spec["name"]: results.put(n, v))
        except Exception as e:  # noqa: BLE001
            results.put(spec["name"], {"status": "error", "error": f"{type(e).__name__}: {e}"[:800],
                                       "traceback": traceback.format_exc()[-3000:]})
        ctx.transformers.clear(), ctx.pipes.clear(), free(device)
    print(f"wrote {results.path} ({time.perf_counter() - t0:.1f}s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
