"""End-to-end wall-clock of ``pipe(...)`` with and without ``sdsv.enable(pipe)`` on one GPU, the
batch-cost curve that says where batched verification gets a discount, and ``torch.compile`` with
the self-draft's hooks. Random bf16 weights at the published Flux.1-dev and Wan2.1-T2V-1.3B
transformer configurations (no download): timings and mechanics, never image quality.

Sections, in the order they run (the most informative first; each one's result is written to
``<out>/e2e_check.json`` as soon as it is measured, so a kill loses only the section under way):

``rcurve/<size>``
    The transformer's forward (through the adapter's denoiser, as the sampler calls it) on a batch
    of R rows, R = 1..10, against R single calls: ``t(R) / (R t(1))``. Below 1 a verification
    batch of R rows is cheaper than R target steps; at 1 it costs exactly what it computes.
    Sizes from Flux at 256^2 to Wan2.1 at 480p/81 frames, so the curve shows where that regime ends.
``e2e/<size>-<steps>``
    ``pipe(prompt_embeds=..., output_type="latent")`` timed with CUDA synchronisation, after one
    untimed warm-up call of each variant with a few steps:

    * ``plain``: the pipeline alone;
    * ``default``: ``sdsv.enable(pipe)`` (self-draft, error-controlled unverified windows);
    * ``sdsv``: the self-draft under SDSV's batched verification (``StagePlan.paper_default``,
      ``verify="endpoints"``, the default acceptance test);
    * ``sdsv_all``: the same schedule with every window accepted (``tau = inf``): the best case of
      batched verification at this size, since random weights say nothing about real acceptance;
    * ``sdsv_full``: ``verify="full"`` (k + 1 rows per verification call), at the small sizes;
    * ``cache``: the unverified cache, ``FixedInterval(every=3)``.

    Per variant: median wall-clock, target calls and rows (the pipeline's own calls counted by a
    hook; SDSV's from ``pipe.sdsv_stats``), speed-up over ``plain``, peak GPU memory, and the
    relative L2 distance of the final latent from ``plain``'s (random weights: a check that the
    runs are the same computation where they should be, not a quality measure).
``decode/<size>``
    One VAE decode at the same latent size (Flux's ``AutoencoderKL`` in bf16, Wan's
    ``AutoencoderKLWan`` in fp32 as its model card loads it), so the summary can add it to both
    sides of the speed-up.
``compile/<size>``
    The self-draft's hooks under ``torch.compile``: ``torch._dynamo.explain`` of a target call
    (recording hooks) and a draft call (blocks removed, forecast hook) on a two-block model of the
    real width; regional compilation (``transformer.compile_repeated_blocks(fullgraph=True)``: a
    graph break inside a block is an error) and whole-model ``transformer.compile()``, each timed
    against eager with and without SDSV, with dynamo's graph-break and recompile counters. A
    failure is recorded, never raised.

What the wall-clock includes: the pipeline's preamble (input checks, latents from the generator,
the scheduler's sigmas, position ids), the denoising loop, and everything SDSV does (capture of
the first step, sampler, self-draft). Not included: text encoding (``prompt_embeds`` are passed;
it costs the same with and without SDSV), the VAE decode (measured separately, ``decode/``), and
post-processing to PIL/numpy.

    python benchmarks/gpu/e2e_check.py --out "$OUT"                       # GPU, real sizes
    python benchmarks/gpu/e2e_check.py --out "$OUT" --sections rcurve     # one kind of section
    python benchmarks/gpu/e2e_check.py --tiny --out /tmp/e2e              # CPU dry run: tiny configs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [HERE, os.path.join(ROOT, "python"), ROOT]

import sdsv  # noqa: E402
from sdsv import AcceptanceTest, FixedInterval, StagePlan  # noqa: E402
from sdsv.integrations.hf_diffusers import flux_denoiser, wan_denoiser  # noqa: E402
from sdsv.integrations.hf_diffusers.families import FluxFamily, WanFamily  # noqa: E402
from sdsv.integrations.hf_diffusers.split import TransformerSplit  # noqa: E402

from scale_check import (FLUX_DEV, FLUX_TINY, WAN_1_3B, WAN_TINY, build, flux_inputs,  # noqa: E402
                         wan_inputs)

# Schedulers as the checkpoints ship them (scheduler/scheduler_config.json): Flux.1-dev's
# resolution-dependent shift, Wan2.1's UniPC with the 480p flow shift.
FLUX_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                      base_image_seq_len=256, max_image_seq_len=4096)
WAN_SCHEDULER = dict(num_train_timesteps=1000, solver_order=2, prediction_type="flow_prediction", use_flow_sigmas=True,
                     flow_shift=3.0, solver_type="bh2", predict_x0=True, lower_order_final=True)

# Published VAE configurations (vae/config.json), for the decode section.
FLUX_VAE = dict(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
                layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                norm_num_groups=32, sample_size=1024, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                use_post_quant_conv=False)
FLUX_VAE_TINY = dict(FLUX_VAE, latent_channels=1, block_out_channels=(4, 4, 4, 4), layers_per_block=1, norm_num_groups=1)
WAN_VAE_TINY = dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1)

FLUX_GUIDANCE = 3.5   # Flux.1-dev's embedded guidance (one row per call)
WAN_GUIDANCE = 5.0    # Wan2.1's CFG: cond + uncond every step (two rows)


# ---- sizes ------------------------------------------------------------------------------------
def sizes(tiny: bool) -> dict:
    """name -> (family, height, width, frames). Tiny: a few tokens, same code paths."""
    if tiny:
        return {"flux-tiny": ("flux", 32, 32, 1), "flux-tiny2": ("flux", 64, 64, 1),
                "wan-tiny": ("wan", 32, 32, 5)}
    return {"flux-256": ("flux", 256, 256, 1), "flux-512": ("flux", 512, 512, 1), "flux-1024": ("flux", 1024, 1024, 1),
            "wan-480p-5f": ("wan", 480, 832, 5), "wan-480p-17f": ("wan", 480, 832, 17),
            "wan-480p-81f": ("wan", 480, 832, 81)}


def tokens(family: str, h: int, w: int, frames: int) -> int:
    """Image/video tokens of one row (text tokens come on top)."""
    if family == "flux":
        return (h // 16) * (w // 16)
    return ((frames - 1) // 4 + 1) * (h // 16) * (w // 16)


def plan_sections(tiny: bool) -> list[dict]:
    """Every section in run order. R-curves first (they need no kernel extension, so the device
    script runs them while it builds), then the end-to-end runs, decode, compile."""
    if tiny:
        rc = [dict(name="rcurve/flux-tiny", size="flux-tiny", R=list(range(1, 5))),
              dict(name="rcurve/wan-tiny", size="wan-tiny", R=list(range(1, 5)))]
        e2e = [dict(name="e2e/flux-tiny-6", size="flux-tiny", steps=6, reps=2,
                    variants=["plain", "default", "sdsv", "sdsv_all", "sdsv_full", "cache"]),
               dict(name="e2e/wan-tiny-6", size="wan-tiny", steps=6, reps=1,
                    variants=["plain", "default", "sdsv", "sdsv_all", "cache"])]
        dec = [dict(name="decode/flux-tiny", size="flux-tiny"), dict(name="decode/wan-tiny", size="wan-tiny")]
        comp = [dict(name="compile/flux-tiny", size="flux-tiny", steps=6)]
        return rc + e2e + dec + comp
    ten = list(range(1, 11))
    rc = [dict(name="rcurve/flux-256", size="flux-256", R=ten), dict(name="rcurve/flux-512", size="flux-512", R=ten),
          dict(name="rcurve/wan-480p-5f", size="wan-480p-5f", R=ten),
          dict(name="rcurve/wan-480p-17f", size="wan-480p-17f", R=ten),
          dict(name="rcurve/flux-1024", size="flux-1024", R=ten),
          # 0.63 s per row: R = 1..4 here (the 2026-11-30 run measured batch 10 at this size: 9.93x)
          dict(name="rcurve/wan-480p-81f", size="wan-480p-81f", R=[1, 2, 3, 4])]
    every = ["plain", "default", "sdsv", "sdsv_all", "cache"]
    e2e = [dict(name="e2e/flux-512-28", size="flux-512", steps=28, reps=3, variants=every + ["sdsv_full"]),
           dict(name="e2e/flux-1024-28", size="flux-1024", steps=28, reps=1, variants=every),
           dict(name="e2e/wan-480p-17f-50", size="wan-480p-17f", steps=50, reps=1, variants=every),
           dict(name="e2e/flux-512-50", size="flux-512", steps=50, reps=2, variants=every),
           dict(name="e2e/flux-1024-50", size="flux-1024", steps=50, reps=1, variants=every)]
    dec = [dict(name=f"decode/{s}", size=s) for s in ("flux-512", "flux-1024", "wan-480p-17f")]
    # the full clip last (the costliest): 10 steps, since 50 with CFG take ~1 min per variant
    full = [dict(name="e2e/wan-480p-81f-10", size="wan-480p-81f", steps=10, reps=1, warmup_steps=2,
                 variants=["plain", "default", "sdsv", "cache"]),
            dict(name="decode/wan-480p-81f", size="wan-480p-81f")]
    comp = [dict(name="compile/flux-512", size="flux-512", steps=28)]
    return rc + e2e + dec + full + comp


# ---- results file -----------------------------------------------------------------------------
class Results:
    """``e2e_check.json``: merged with what an earlier process of the same run wrote, rewritten
    atomically after every measurement."""

    def __init__(self, path: str, env: dict):
        self.path = path
        self.data = {"env": env, "sections": {}}
        if os.path.exists(path):
            try:
                old = json.load(open(path))
                self.data["sections"] = old.get("sections", {})
                self.data["env_previous"] = old.get("env")
            except (OSError, ValueError):
                pass

    def put(self, name: str, value: dict) -> None:
        self.data["sections"][name] = value
        self.flush()

    def flush(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(self.data, fh, indent=1, default=_json_default)
        os.replace(tmp, self.path)


def _json_default(o):
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    if isinstance(o, (torch.dtype, torch.device)):
        return str(o)
    return repr(o)


# ---- helpers ----------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def peak_reset(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device):
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def free(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()


def rel_l2(a: torch.Tensor, ref: torch.Tensor) -> float:
    a, ref = a.detach().float(), ref.detach().float()
    den = ref.norm().item()
    return (a - ref).norm().item() / den if den > 0 else float("nan")


class Ctx:
    """Models built once per process and shared by the sections."""

    def __init__(self, args, device, dtype):
        self.args, self.device, self.dtype = args, device, dtype
        self.sizes = sizes(args.tiny)
        self.transformers: dict[str, torch.nn.Module] = {}
        self.pipes: dict[str, object] = {}
        self.txt = 8 if args.tiny else 512

    def config(self, family):
        if family == "flux":
            return FLUX_TINY if self.args.tiny else FLUX_DEV
        return WAN_TINY if self.args.tiny else WAN_1_3B

    def transformer(self, family):
        if family not in self.transformers:
            from diffusers import FluxTransformer2DModel, WanTransformer3DModel
            cls = FluxTransformer2DModel if family == "flux" else WanTransformer3DModel
            torch.manual_seed(0)
            t0 = time.perf_counter()
            self.transformers[family] = build(cls, self.config(family), self.device, self.dtype)
            n = sum(p.numel() for p in self.transformers[family].parameters())
            print(f"[{family}] built {n / 1e9:.2f}B params in {time.perf_counter() - t0:.1f}s", flush=True)
        return self.transformers[family]

    def pipe(self, family):
        if family not in self.pipes:
            from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, UniPCMultistepScheduler, WanPipeline
            tr = self.transformer(family)
            if family == "flux":  # vae=None: the pipeline assumes the real VAE's scale factor (8)
                p = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER), vae=None, text_encoder=None,
                                 tokenizer=None, text_encoder_2=None, tokenizer_2=None, transformer=tr)
            else:
                p = WanPipeline(tokenizer=None, text_encoder=None, vae=None,
                                scheduler=UniPCMultistepScheduler(**WAN_SCHEDULER), transformer=tr)
            p.set_progress_bar_config(disable=True)
            self.pipes[family] = p
        return self.pipes[family]

    def call_kwargs(self, size: str, steps: int) -> dict:
        family, h, w, frames = self.sizes[size]
        cfg, dev, dt = self.config(family), self.device, self.dtype
        g = torch.Generator(device="cpu").manual_seed(1)
        if family == "flux":
            return dict(prompt_embeds=torch.randn(1, self.txt, cfg["joint_attention_dim"], generator=g).to(dev, dt),
                        pooled_prompt_embeds=torch.randn(1, cfg["pooled_projection_dim"], generator=g).to(dev, dt),
                        height=h, width=w, num_inference_steps=steps, guidance_scale=FLUX_GUIDANCE,
                        output_type="latent", return_dict=False)
        return dict(prompt_embeds=torch.randn(1, self.txt, cfg["text_dim"], generator=g).to(dev, dt),
                    negative_prompt_embeds=torch.randn(1, self.txt, cfg["text_dim"], generator=g).to(dev, dt),
                    height=h, width=w, num_frames=frames, num_inference_steps=steps, guidance_scale=WAN_GUIDANCE,
                    output_type="latent", return_dict=False)


# ---- variants ---------------------------------------------------------------------------------
def configure(pipe, variant: str):
    """Put ``pipe`` in the state of ``variant`` (``plain`` = SDSV off)."""
    if variant == "plain":
        sdsv.disable(pipe)
    elif variant == "default":
        sdsv.enable(pipe)
    elif variant == "sdsv":
        sdsv.enable(pipe, policy=StagePlan.paper_default)
    elif variant == "sdsv_all":
        sdsv.enable(pipe, policy=StagePlan.paper_default, accept=AcceptanceTest("x0_rms", math.inf))
    elif variant == "sdsv_full":
        sdsv.enable(pipe, policy=StagePlan.paper_default, verify="full")
    elif variant == "cache":
        sdsv.enable(pipe, policy=lambda n: FixedInterval(n, every=3))
    else:
        raise ValueError(f"unknown variant {variant!r}")


@contextlib.contextmanager
def count_calls(module):
    """Forward calls and rows of ``module`` (the pipeline's own calls, for ``plain``)."""
    seen = {"calls": 0, "rows": 0}

    def hook(mod, args, kwargs):
        h = kwargs.get("hidden_states", args[0] if args else None)
        seen["calls"] += 1
        seen["rows"] += int(h.shape[0]) if isinstance(h, torch.Tensor) else 0

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


def run_pipe(ctx, pipe, variant, kwargs, seed=0):
    configure(pipe, variant)
    gen = torch.Generator(device=ctx.device).manual_seed(seed)
    with count_calls(pipe.transformer) as seen:
        out, dt = timed(lambda: pipe(generator=gen, **kwargs)[0], ctx.device)
    stats = getattr(pipe, "sdsv_stats", None)
    return out, dt, stats, dict(seen)


def stats_record(stats, seen) -> dict:
    """Target calls and rows: the hook's count for the pipeline alone; for SDSV the sampler's
    (``target_rows`` counts states: with CFG each is two model rows in the same call). The hook's
    ``module_calls`` counts every forward of the transformer module: with SDSV that is the
    recorded (not computed) first-step call(s), the target calls and the self-draft's calls."""
    if stats is None:  # the pipeline alone
        return {"target_calls": seen["calls"], "target_rows": seen["rows"], "draft_calls": 0,
                "module_calls": seen["calls"], "module_rows": seen["rows"]}
    d = stats.to_dict()
    return {"module_calls": seen["calls"], "module_rows": seen["rows"],
            "target_calls": d["target_calls"], "target_rows": d["target_evals"], "draft_calls": d["draft_calls"],
            "draft_rows": d["draft_evals"], "target_s": d["target_s"], "draft_s": d["draft_s"],
            "sampler_s": d["sampler_s"], "windows": len(stats.windows),
            "verified_windows": len(stats.verified_windows), "unverified_windows": stats.unverified_windows,
            "acceptance": d["acceptance_rate"]}


# ---- sections ---------------------------------------------------------------------------------
def section_rcurve(ctx, spec, budget_s, put):
    family, h, w, frames = ctx.sizes[spec["size"]]
    tr = ctx.transformer(family)
    cfg, dev, dt = ctx.config(family), ctx.device, ctx.dtype
    res = {"family": family, "height": h, "width": w, "frames": frames, "image_tokens": tokens(family, h, w, frames),
           "text_tokens": ctx.txt, "rows": [], "status": "partial"}
    t_start = time.perf_counter()

    def call(R):
        if family == "flux":
            x, static, cond = flux_inputs(cfg, R, h, w, ctx.txt, dev, dt)
            den = flux_denoiser(tr, **static)
        else:
            x, static, cond = wan_inputs(cfg, R, h, w, frames, ctx.txt, dev, dt)
            den = wan_denoiser(tr)
        sigma = torch.full((R,), 0.7, device=dev)
        return lambda: den(x, sigma, **cond)

    with torch.no_grad():
        # warm-up at the largest batch first: the allocator then holds what every smaller one needs
        Rs = spec["R"]
        fn = call(max(Rs))
        _, t_big = timed(fn, dev)
        del fn
        fn1 = call(1)
        _, t1 = timed(fn1, dev)
        est_row = min(t1, t_big / max(Rs))
        # repeats: enough for a stable median, within the budget (the whole curve once is sum(R) rows)
        once = est_row * sum(Rs)
        reps = max(1, min(ctx.args.reps_max, int((budget_s - (time.perf_counter() - t_start)) / max(once, 1e-9) * 0.8)))
        res["reps"] = reps
        base = None
        for R in Rs:
            if time.perf_counter() - t_start + est_row * R * reps > budget_s and base is not None:
                res["rows"].append({"R": R, "skipped": "budget"})
                continue
            fn = call(R) if R != 1 else fn1
            try:  # t(1) divides every ratio: at least 3 calls, however big the model
                times = [timed(fn, dev)[1] for _ in range(max(reps, 3) if R == 1 else reps)]
            except torch.OutOfMemoryError as e:
                res["rows"].append({"R": R, "error": f"OOM: {e}"[:300]})
                free(dev)
                continue
            med = statistics.median(times)
            if R == 1:
                base = med
            row = {"R": R, "median_s": med, "min_s": min(times), "reps": len(times)}
            if base:
                row["ratio_to_R_singles"] = med / (R * base)
                row["per_row_discount"] = 1 - med / (R * base)
            res["rows"].append(row)
            print(f"[{spec['name']}] R={R:2d}: {med * 1e3:9.2f} ms  t(R)/(R t(1)) = "
                  f"{row.get('ratio_to_R_singles', float('nan')):.3f}", flush=True)
            put(dict(res, elapsed_s=time.perf_counter() - t_start))
            del fn
    res["status"] = "done"
    res["elapsed_s"] = time.perf_counter() - t_start
    put(res)
    free(dev)


# the share of the plain run's time a variant is expected to take, to decide what fits the budget
# (sdsv: a run whose every window is rejected costs up to ~2x plain)
EST_FACTOR = {"plain": 1.0, "default": 0.6, "sdsv": 2.0, "sdsv_all": 0.8, "sdsv_full": 3.0, "cache": 0.6}


def section_e2e(ctx, spec, budget_s, put):
    size, steps = spec["size"], spec["steps"]
    family = ctx.sizes[size][0]
    pipe = ctx.pipe(family)
    dev = ctx.device
    res = {"family": family, "size": size, "steps": steps, "image_tokens": tokens(family, *ctx.sizes[size][1:]),
           "guidance": "embedded 3.5 (1 row per call)" if family == "flux" else "CFG 5.0 (2 rows per step)",
           "scheduler": type(pipe.scheduler).__name__, "variants": {}, "status": "partial",
           "timed": "pipe(prompt_embeds=..., output_type='latent'): preamble + denoising loop + SDSV; "
                    "no text encoding, no VAE decode"}
    t_start = time.perf_counter()
    kwargs = ctx.call_kwargs(size, steps)
    warm_kwargs = dict(kwargs, num_inference_steps=spec.get("warmup_steps", ctx.args.warmup_steps))
    ref = None
    plain_s = None
    with torch.no_grad():
        for variant in spec["variants"]:
            v = {}
            spent = time.perf_counter() - t_start
            reps = spec["reps"]
            if plain_s is not None:
                est = plain_s * EST_FACTOR[variant]
                while reps > 1 and spent + est * (reps + 0.3) > budget_s:
                    reps -= 1
                if spent + est * (reps + 0.3) > budget_s:
                    res["variants"][variant] = {"skipped": f"budget: ~{est:.1f}s per run, {budget_s - spent:.1f}s left"}
                    put(dict(res, elapsed_s=spent))
                    print(f"[{spec['name']}] {variant}: skipped (budget)", flush=True)
                    continue
            try:
                _, t_warm, _, _ = run_pipe(ctx, pipe, variant, warm_kwargs)
                v["warmup_s"] = t_warm
                v["warmup_steps"] = warm_kwargs["num_inference_steps"]
                times, out, stats, seen = [], None, None, None
                for _ in range(reps):
                    peak_reset(dev)
                    out, t, stats, seen = run_pipe(ctx, pipe, variant, kwargs)
                    times.append(t)
                v.update(wall_s=statistics.median(times), wall_min_s=min(times), reps=reps, times_s=times,
                         peak_gb=peak_gb(dev), **stats_record(stats, seen))
                v["finite"] = bool(torch.isfinite(out).all())
                if variant == "plain":
                    ref, plain_s = out.float(), v["wall_s"]
                    v["policy"] = "pipeline alone"
                else:
                    v["policy"] = pipe.__dict__["_sdsv_state"].config.policy
                    v["policy"] = _describe_plan(v["policy"], steps)
                    config = pipe.__dict__["_sdsv_state"].config
                    # None: not given, the sampler's defaults apply (verified windows only)
                    v["accept"] = repr(config.accept or sdsv.AcceptanceTest())
                    v["verify"] = config.verify or "endpoints"
                if ref is not None:
                    v["rel_l2_vs_plain"] = rel_l2(out, ref)
                if plain_s:
                    v["speedup"] = plain_s / v["wall_s"]
                del out
            except Exception as e:  # recorded; the other variants still run
                v["error"] = f"{type(e).__name__}: {e}"[:500]
                v["traceback"] = traceback.format_exc()[-2000:]
                free(dev)
            finally:
                sdsv.disable(pipe)
            res["variants"][variant] = v
            put(dict(res, elapsed_s=time.perf_counter() - t_start))
            if "wall_s" in v:
                print(f"[{spec['name']}] {variant:9s} {v['wall_s']:8.3f}s  x{v.get('speedup', 1.0):.2f}  target "
                      f"{v['target_calls']} calls/{v['target_rows']} rows, draft {v['draft_calls']}  "
                      f"rel_l2 {v.get('rel_l2_vs_plain', 0):.3g}", flush=True)
            else:
                print(f"[{spec['name']}] {variant}: {v.get('error')}", flush=True)
    res["status"] = "done"
    res["elapsed_s"] = time.perf_counter() - t_start
    put(res)
    free(dev)


def _describe_plan(plan, steps):
    p = plan(steps) if callable(plan) and not isinstance(plan, sdsv.WindowPolicy) else plan
    return p.describe() if hasattr(p, "describe") else repr(p)


def section_decode(ctx, spec, budget_s, put):
    from diffusers import AutoencoderKL, AutoencoderKLWan
    family, h, w, frames = ctx.sizes[spec["size"]]
    dev = ctx.device
    key = f"vae_{family}"
    if key not in ctx.transformers:  # kept with the models: built once per process
        torch.manual_seed(0)
        if family == "flux":
            vae = AutoencoderKL(**(FLUX_VAE_TINY if ctx.args.tiny else FLUX_VAE)).to(dev, ctx.dtype)
        else:  # Wan's model card keeps the VAE in fp32
            vae = AutoencoderKLWan(**(WAN_VAE_TINY if ctx.args.tiny else {})).to(dev, torch.float32)
        ctx.transformers[key] = vae.eval().requires_grad_(False)
    vae = ctx.transformers[key]
    if family == "flux":
        z = torch.randn(1, vae.config.latent_channels, h // 8, w // 8, device=dev, dtype=vae.dtype)
    else:
        z = torch.randn(1, vae.config.z_dim, (frames - 1) // 4 + 1, h // 8, w // 8, device=dev, dtype=vae.dtype)
    res = {"family": family, "size": spec["size"], "latent_shape": list(z.shape), "dtype": str(vae.dtype)}
    t0 = time.perf_counter()
    with torch.no_grad():
        try:
            _, first = timed(lambda: vae.decode(z, return_dict=False)[0], dev)
            res["first_s"] = first
            if first * 1.2 < budget_s - (time.perf_counter() - t0):
                peak_reset(dev)
                _, t = timed(lambda: vae.decode(z, return_dict=False)[0], dev)
                res.update(decode_s=t, peak_gb=peak_gb(dev))
            else:
                res["decode_s"] = first
                res["note"] = "one call only (budget): includes first-call overheads"
        except Exception as e:
            res["error"] = f"{type(e).__name__}: {e}"[:500]
    res["status"] = "done"
    res["elapsed_s"] = time.perf_counter() - t0
    put(res)
    print(f"[{spec['name']}] decode {res.get('decode_s', float('nan')):.3f}s (first call {res.get('first_s', float('nan')):.3f}s)",
          flush=True)
    free(dev)


# ---- compile ----------------------------------------------------------------------------------
def dynamo_counters() -> dict:
    from torch._dynamo.utils import counters
    return {k: dict(v) for k, v in counters.items()}


def counters_delta(before: dict, after: dict) -> dict:
    out = {}
    for group in ("graph_break", "stats", "recompiles", "unimplemented", "frames"):
        a, b = after.get(group, {}), before.get(group, {})
        d = {str(k)[:300]: v - b.get(k, 0) for k, v in a.items() if v != b.get(k, 0)}
        if d:
            out[group] = d
    return out


def explain_split(ctx, family, size):
    """``torch._dynamo.explain`` of one target call with the recording hooks and one draft call with
    the forecast hook, on the real configuration cut to one block per stack: the graph breaks are a
    property of the code (blocks, hooks, gather_combine), not of the depth."""
    _, h, w, frames = ctx.sizes[size]
    cfg = dict(ctx.config(family))
    from diffusers import FluxTransformer2DModel, WanTransformer3DModel
    if family == "flux":
        cfg.update(num_layers=1, num_single_layers=1)
        model = build(FluxTransformer2DModel, cfg, ctx.device, ctx.dtype)
        x, static, cond = flux_inputs(cfg, 1, h, w, ctx.txt, ctx.device, ctx.dtype)
        den, stacks = flux_denoiser(model, **static), FluxFamily.block_stacks
    else:
        cfg.update(num_layers=2)
        model = build(WanTransformer3DModel, cfg, ctx.device, ctx.dtype)
        x, static, cond = wan_inputs(cfg, 1, h, w, frames, ctx.txt, ctx.device, ctx.dtype)
        den, stacks = wan_denoiser(model), WanFamily.block_stacks
    split = TransformerSplit(den, model, stacks, head_blocks=0)
    sigma = torch.full((1,), 0.7, device=ctx.device)
    out = {}
    with torch.no_grad(), split.attached():  # the hooks registered once, as for a whole sampling call
        _, residual = split.forward_with_residual(x, sigma, **cond)
        bank = torch.cat([residual, residual])
        index = torch.tensor([[0, 1]], device=ctx.device)
        coeffs = torch.tensor([[1.0, 1.3, -0.3]], device=ctx.device)
        calls = {"target_call_recording_residual": lambda: split.forward_with_residual(x, sigma, **cond),
                 "draft_call_with_forecast": lambda: split.forward_with_forecast(x, sigma, bank, index, coeffs, **cond),
                 "plain_forward": lambda: den(x, sigma, **cond)}
        for name, fn in calls.items():
            torch._dynamo.reset()
            try:
                ex = torch._dynamo.explain(fn)()
                reasons = []
                for br in ex.break_reasons:
                    frames_ = [f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in (br.user_stack or [])][-4:]
                    reasons.append({"reason": str(br.reason)[:400], "user_stack": frames_,
                                    "in_block": any("Block" in fr or "block" in fr.split(" ")[-1] for fr in frames_)})
                out[name] = {"graph_count": ex.graph_count, "graph_break_count": ex.graph_break_count,
                             "op_count": ex.op_count, "break_reasons": reasons}
            except Exception as e:
                out[name] = {"error": f"{type(e).__name__}: {e}"[:500]}
            print(f"[explain] {name}: {json.dumps({k: v for k, v in out[name].items() if k != 'break_reasons'})}",
                  flush=True)
    torch._dynamo.reset()
    del model, split, bank, residual
    free(ctx.device)
    return out


def _uncompile(tr):
    for m in tr.modules():
        if getattr(m, "_compiled_call_impl", None) is not None:
            m._compiled_call_impl = None


def section_compile(ctx, spec, budget_s, put):
    size, steps = spec["size"], spec["steps"]
    family = ctx.sizes[size][0]
    dev = ctx.device
    res = {"size": size, "steps": steps, "status": "partial", "torch": torch.__version__}
    t_start = time.perf_counter()
    res["explain"] = explain_split(ctx, family, size)
    put(dict(res, elapsed_s=time.perf_counter() - t_start))

    pipe = ctx.pipe(family)
    tr = pipe.transformer
    kwargs = ctx.call_kwargs(size, steps)
    # 6 steps: the default schedule's warm-up target steps and a forecast window, so the warm-up
    # calls compile every graph (target with hooks, draft without blocks) before the timed call
    warm = dict(kwargs, num_inference_steps=max(6, ctx.args.warmup_steps))
    runs = {}
    res["runs"] = runs

    def measure(label, variant):
        """First call (compiles: its time is the compile cost), a short second call (recompiles
        that the first call's shapes did not trigger), then the timed call."""
        r = {"dynamo": {}}
        try:
            for call, kw in (("first_call", warm), ("second_call", warm), ("timed_call", kwargs)):
                before = dynamo_counters()
                out, t, stats, seen = run_pipe(ctx, pipe, variant, kw)
                r[f"{call}_s"] = t
                r["dynamo"][call] = counters_delta(before, dynamo_counters())
            r["wall_s"] = r.pop("timed_call_s")
            r.update(stats_record(stats, seen))
            r["finite"] = bool(torch.isfinite(out).all())
            r["out"] = out.float()
        except Exception as e:
            r["error"] = f"{type(e).__name__}: {e}"[:800]
            r["traceback"] = traceback.format_exc()[-2500:]
        finally:
            sdsv.disable(pipe)
        runs[label] = r
        print(f"[{spec['name']}] {label}: " + (f"{r['wall_s']:.3f}s (first call {r['first_call_s']:.1f}s)"
                                               if "wall_s" in r else r["error"]), flush=True)
        return r

    with torch.no_grad():
        modes = [m for m in ("eager", "regional", "whole", "whole_guarded", "wrapped")
                 if m in ctx.args.compile_modes.split(",")]
        for mode in modes:
            spent = time.perf_counter() - t_start
            # a compile cannot be cut short: start one only with half the budget left
            if mode != "eager" and spent > budget_s * 0.5:
                runs[f"{mode}"] = {"skipped": f"budget: {spent:.0f}s of {budget_s:.0f}s spent"}
                put(dict(res, runs=_strip(runs), elapsed_s=spent))
                continue
            torch._dynamo.reset()
            _uncompile(tr)
            try:
                if mode == "regional":  # each block class compiled once; the hooks' modules stay eager
                    tr.compile_repeated_blocks(fullgraph=True)
                elif mode in ("whole", "whole_guarded"):  # nn.Module.compile(): same object, __call__ compiled
                    tr.compile()
                elif mode == "wrapped":  # torch.compile(module): an OptimizedModule in the pipeline
                    pipe.transformer = torch.compile(tr)
                # whole-model compile: first as a user would (enable, then call), then the same graph
                # cache after a plain call (dynamo compiled it without the hooks)
                # whole_guarded: dynamo told to guard on module hooks (by default it does not, so a graph
                # compiled without the self-draft's hooks is reused when they are there)
                variants = {"eager": ("plain", "default"), "regional": ("plain", "default"),
                            "whole": ("default", "plain", "default_after_plain"),
                            "whole_guarded": ("plain", "default_after_plain"), "wrapped": ("default",)}[mode]
                guards = (torch._dynamo.config.patch(skip_nnmodule_hook_guards=False) if mode == "whole_guarded"
                          else contextlib.nullcontext())
                with guards:
                    for label in variants:
                        measure(f"{mode}/{label}", label.split("_after_")[0])
                    put(dict(res, runs=_strip(runs), elapsed_s=time.perf_counter() - t_start))
            except Exception as e:
                runs[mode] = {"error": f"compile: {type(e).__name__}: {e}"[:500]}
            finally:
                if pipe.transformer is not tr:
                    pipe.transformer = tr
        _uncompile(tr)
        torch._dynamo.reset()
    # compiled against eager: speed and agreement
    for label, r in runs.items():
        mode, _, variant = label.partition("/")
        e = runs.get(f"eager/{variant.split('_after_')[0]}")
        if mode != "eager" and e and "wall_s" in r and "wall_s" in e:
            r["speedup_vs_eager"] = e["wall_s"] / r["wall_s"]
            r["rel_l2_vs_eager"] = rel_l2(r["out"], e["out"])
    res["runs"] = _strip(runs)
    res["status"] = "done"
    res["elapsed_s"] = time.perf_counter() - t_start
    put(res)
    free(dev)


def _strip(runs):
    return {k: {kk: vv for kk, vv in v.items() if kk != "out"} for k, v in runs.items()}


SECTION_FUNCS = {"rcurve": section_rcurve, "e2e": section_e2e, "decode": section_decode, "compile": section_compile}


def environment(device, dtype, tiny) -> dict:
    import diffusers
    env = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu"),
           "torch": torch.__version__, "cuda": torch.version.cuda, "diffusers": diffusers.__version__,
           "dtype": str(dtype), "tiny": tiny, "python": platform.python_version(),
           "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "sdsv_commit": os.environ.get("SDSV_COMMIT") or _git_commit()}
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    try:
        import sdsv_kernels
        env["kernel_backends"] = {k: (v if v is True else str(v)[:80]) for k, v in sdsv_kernels.backends().items()}
    except Exception as e:  # noqa: BLE001
        env["kernel_backends"] = f"{type(e).__name__}: {e}"
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(gpu_memory_gb=p.total_memory / 2**30, sm_count=p.multi_processor_count)
    else:
        env["threads"] = torch.get_num_threads()
    return env


def _git_commit() -> str:
    try:
        return subprocess.check_output(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except Exception:  # noqa: BLE001
        return "unknown"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog="Sections: " + ", ".join(s["name"] for s in plan_sections(False)))
    ap.add_argument("--out", default=os.environ.get("OUT", "e2e_check_out"))
    ap.add_argument("--sections", default="rcurve,e2e,decode,compile",
                    help="comma-separated section names or prefixes (rcurve, e2e/flux-512-28, ...)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="seconds per section (default 75 on a GPU, 60 with --tiny); what will not fit is skipped "
                         "and recorded as such")
    ap.add_argument("--total-s", type=float, default=None, help="start no section after this many seconds")
    ap.add_argument("--warmup-steps", type=int, default=3, help="steps of each variant's untimed warm-up call")
    ap.add_argument("--reps-max", type=int, default=5, help="most repeats of an R-curve point")
    ap.add_argument("--compile-modes", default=None,
                    help="compile section, comma-separated: eager (with explain), regional (compile_repeated_blocks), "
                         "whole (transformer.compile()), whole_guarded (the same with dynamo guarding module hooks), "
                         "wrapped (torch.compile(transformer) in the pipeline); default all but wrapped (all with --tiny)")
    ap.add_argument("--tiny", action="store_true", help="tiny configs on CPU, fp32: checks the script, measures nothing")
    ap.add_argument("--list", action="store_true", help="print the sections and exit")
    args = ap.parse_args(argv)
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    chosen = [s for s in plan_sections(args.tiny) if any(s["name"] == w or s["name"].startswith(w) for w in wanted)]
    if args.list:
        for s in chosen:
            print(s["name"], {k: v for k, v in s.items() if k != "name"})
        return 0
    device = torch.device("cpu" if args.tiny else "cuda")
    if not args.tiny and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --tiny to check the script on a CPU")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    budget = args.budget_s if args.budget_s is not None else (60.0 if args.tiny else 75.0)
    if args.compile_modes is None:
        args.compile_modes = "eager,regional,whole,whole_guarded" + (",wrapped" if args.tiny else "")
    os.makedirs(args.out, exist_ok=True)
    env = environment(device, dtype, args.tiny)
    print(json.dumps(env), flush=True)
    results = Results(os.path.join(args.out, "e2e_check.json"), env)
    ctx = Ctx(args, device, dtype)
    t0 = time.perf_counter()
    for spec in chosen:
        name = spec["name"]
        if args.total_s is not None and time.perf_counter() - t0 > args.total_s:
            results.put(name, {"status": "skipped", "why": f"--total-s {args.total_s:.0f} reached"})
            print(f"[{name}] skipped: --total-s reached", flush=True)
            continue
        kind = name.split("/")[0]
        sec_budget = budget
        if args.total_s is not None:
            sec_budget = max(1.0, min(budget, args.total_s - (time.perf_counter() - t0)))
        print(f"== {name} (budget {sec_budget:.0f}s)", flush=True)
        try:
            SECTION_FUNCS[kind](ctx, spec, sec_budget, lambda value, n=name: results.put(n, value))
        except Exception as e:  # one section's failure never stops the next
            sec = results.data["sections"].get(name, {})
            sec.update(status="error", error=f"{type(e).__name__}: {e}"[:800], traceback=traceback.format_exc()[-3000:])
            results.put(name, sec)
            print(f"[{name}] ERROR {type(e).__name__}: {e}", flush=True)
            free(device)
    print(f"wrote {results.path} ({time.perf_counter() - t0:.1f}s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
