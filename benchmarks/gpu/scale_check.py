"""Scale check of the diffusers adapters on the real model *configurations* (random bf16 weights).

What it measures (per model, on one GPU, no download):

* the target's forward time at batch 1, 2 and 10 — does the verification batch (2 rows for
  ``endpoints``) cost ~1x (latency-bound) or ~2x (compute-bound) a single row at this size?
* a draft's forward time at batch 1: the same configuration with fewer blocks;
* one forecast self-draft call at batch 1 (``sdsv.enable(pipe)``'s draft; docs/method.md,
  "The self-draft"):
  the target's embeddings, conditioning and output layer with every block forecast (order 1,
  two anchors), and with the first block computed (``head_blocks=1``);
* ``sdsv.sample`` with draft == target through the adapter: the sampler's own time per window
  (everything outside the two models' forward calls: rollout, statistics, accept/commit, the
  one host sync per round), next to a target-only run of the same steps.

Models: Flux.1-dev (``FluxTransformer2DModel``, 19 + 38 blocks, 1024x1024 -> 4096 image tokens,
512 text tokens) and Wan2.1-T2V-1.3B (``WanTransformer3DModel``, 30 blocks, 832x480x81 frames ->
21x60x104 latents, 32760 tokens, 512 text tokens). Weights are random: timings only, no images.

Usage (GPU machine):  python benchmarks/gpu/scale_check.py --out "$OUT"
CPU smoke test of the script itself:  python benchmarks/gpu/scale_check.py --tiny --out /tmp/sc
Writes ``scale_check.json`` (everything) and ``scale_check.csv`` (one row per measurement,
with the device name and versions) under ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "..", "python"), os.path.join(HERE, "..", "..")]

import sdsv  # noqa: E402
from sdsv import AcceptanceTest, StagePlan  # noqa: E402
from sdsv.integrations.hf_diffusers import flux_denoiser, wan_denoiser  # noqa: E402
from sdsv.integrations.hf_diffusers.families import FluxFamily, WanFamily  # noqa: E402
from sdsv.integrations.hf_diffusers.split import TransformerSplit  # noqa: E402

BLOCK_STACKS = {"flux": FluxFamily.block_stacks, "wan": WanFamily.block_stacks}

# Published transformer configs (transformer/config.json of the checkpoints).
FLUX_DEV = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                axes_dims_rope=[16, 56, 56])
FLUX_DRAFT = dict(FLUX_DEV, num_layers=5, num_single_layers=10)
WAN_1_3B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
                text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None, added_kv_proj_dim=None, rope_max_seq_len=1024)
WAN_DRAFT = dict(WAN_1_3B, num_layers=8)

# Tiny stand-ins with the same code paths, to check this script on a CPU.
FLUX_TINY = dict(FLUX_DEV, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                 joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8], in_channels=4)
FLUX_TINY_DRAFT = dict(FLUX_TINY, num_single_layers=0)
WAN_TINY = dict(WAN_1_3B, num_attention_heads=2, attention_head_dim=12, text_dim=32, ffn_dim=32, num_layers=2,
                rope_max_seq_len=32)
WAN_TINY_DRAFT = dict(WAN_TINY, num_layers=1)


def build(cls, config, device, dtype):
    """Random weights created directly on the device in the target dtype (Flux-dev: 24 GB in
    bf16; building in fp32 first would need twice that)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = cls(**config)
    finally:
        torch.set_default_dtype(old)
    # as from_pretrained(torch_dtype=bf16) does: modules the class marks precision-sensitive stay
    # fp32 (Wan: rope, time embedder, norms, modulation tables)
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    if dtype != torch.float32 and keep:
        for mod_name, module in model.named_modules():
            if any(k in mod_name.split(".") for k in keep):
                module.float()
        for p_name, param in model.named_parameters(recurse=True):
            if any(k in p_name.split(".") for k in keep):
                param.data = param.data.float()
    return model.eval().requires_grad_(False)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device, reps, warmup=1):
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "reps": reps}


# ---- per model: inputs in the pipeline's layout ---------------------------------------------
def flux_inputs(cfg, batch, height, width, txt_len, device, dtype):
    """Packed latents [b, (h/16)(w/16), 4C] and the pipeline's ids, as FluxPipeline builds them."""
    lh, lw = 2 * (height // 16), 2 * (width // 16)
    seq = (lh // 2) * (lw // 2)
    x = torch.randn(batch, seq, cfg["in_channels"], device=device, dtype=dtype)
    ids = torch.zeros(lh // 2, lw // 2, 3, device=device)
    ids[..., 1] += torch.arange(lh // 2, device=device)[:, None]
    ids[..., 2] += torch.arange(lw // 2, device=device)[None, :]
    static = dict(txt_ids=torch.zeros(txt_len, 3, device=device, dtype=dtype), img_ids=ids.reshape(-1, 3).to(dtype))
    cond = dict(encoder_hidden_states=torch.randn(batch, txt_len, cfg["joint_attention_dim"], device=device, dtype=dtype),
                pooled_projections=torch.randn(batch, cfg["pooled_projection_dim"], device=device, dtype=dtype),
                guidance=torch.full((batch,), 3.5, device=device, dtype=torch.float32))
    return x, static, cond


def wan_inputs(cfg, batch, height, width, frames, txt_len, device, dtype):
    lf, lh, lw = (frames - 1) // 4 + 1, height // 8, width // 8
    x = torch.randn(batch, cfg["in_channels"], lf, lh, lw, device=device, dtype=torch.float32)  # fp32, as WanPipeline
    cond = dict(encoder_hidden_states=torch.randn(batch, txt_len, cfg["text_dim"], device=device, dtype=dtype))
    return x, {}, cond


def run_model(name, args, device, dtype, rows, results):
    from diffusers import FluxTransformer2DModel, WanTransformer3DModel

    if name == "flux":
        cls, cfg, dcfg = FluxTransformer2DModel, (FLUX_TINY if args.tiny else FLUX_DEV), (FLUX_TINY_DRAFT if args.tiny else FLUX_DRAFT)
        h = w = 32 if args.tiny else args.flux_size
        txt = 8 if args.tiny else 512
        make_inputs = lambda b: flux_inputs(cfg, b, h, w, txt, device, dtype)  # noqa: E731
        make_den = lambda m, st: flux_denoiser(m, **st)  # noqa: E731
        shape_desc = f"{w}x{h}"
    else:
        cls, cfg, dcfg = WanTransformer3DModel, (WAN_TINY if args.tiny else WAN_1_3B), (WAN_TINY_DRAFT if args.tiny else WAN_DRAFT)
        h, w, f = (16, 16, 5) if args.tiny else (480, 832, args.wan_frames)
        txt = 8 if args.tiny else 512
        make_inputs = lambda b: wan_inputs(cfg, b, h, w, f, txt, device, dtype)  # noqa: E731
        make_den = lambda m, st: wan_denoiser(m, guidance_scale=1.0)  # noqa: E731
        shape_desc = f"{w}x{h}x{f}f"

    t0 = time.perf_counter()
    target = build(cls, cfg, device, dtype)
    n_params = sum(p.numel() for p in target.parameters())
    out = {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}, "shape": shape_desc,
           "params": n_params, "build_s": time.perf_counter() - t0, "forward": {}}
    print(f"[{name}] {n_params / 1e9:.2f}B params, built in {out['build_s']:.1f}s, {shape_desc}", flush=True)

    def record(kind, batch, t, extra=None):
        rows.append({"model": name, "kind": kind, "batch": batch, "shape": shape_desc, **t, **(extra or {})})
        print(f"[{name}] {kind:>8} batch {batch:>2}: {t['median_s'] * 1e3:9.1f} ms (median of {t['reps']})", flush=True)

    with torch.no_grad():
        for b in args.batches:
            x, static, cond = make_inputs(b)
            den = make_den(target, static)
            sigma = torch.full((b,), 0.7, device=device)
            try:
                t = time_call(lambda: den(x, sigma, **cond), device, args.reps)
            except torch.OutOfMemoryError as e:  # report it, keep the other measurements
                out["forward"][f"target_b{b}"] = {"error": f"OOM: {e}"[:300]}
                print(f"[{name}] target batch {b}: OOM", flush=True)
                torch.cuda.empty_cache()
                continue
            out["forward"][f"target_b{b}"] = t
            record("target", b, t)
            del x, cond
        base = out["forward"].get("target_b1", {}).get("median_s")
        for b in args.batches:
            tb = out["forward"].get(f"target_b{b}", {}).get("median_s")
            if base and tb:
                out["forward"][f"target_b{b}"]["ratio_to_b1"] = tb / base

        draft = build(cls, dcfg, device, dtype)
        out["draft_config"] = {k: v for k, v in dcfg.items() if dcfg[k] != cfg.get(k)}
        out["draft_params"] = sum(p.numel() for p in draft.parameters())
        x, static, cond = make_inputs(1)
        dden = make_den(draft, static)
        sigma = torch.full((1,), 0.7, device=device)
        t = time_call(lambda: dden(x, sigma, **cond), device, args.reps)
        out["forward"]["draft_b1"] = t
        if base:
            t["ratio_to_target_b1"] = t["median_s"] / base
        record("draft", 1, t, {"draft_params": out["draft_params"]})
        del draft, dden
        if device.type == "cuda":
            torch.cuda.empty_cache()

        # ---- the forecast self-draft: one draft call, order 1 from two anchors ----------------
        sden = make_den(target, static)
        for head in (0, 1):
            split = TransformerSplit(sden, target, BLOCK_STACKS[name], head_blocks=head)
            with split.attached():  # the hooks registered once, as for a whole sampling call
                _, residual = split.forward_with_residual(x, sigma, **cond)
                n_rows = residual.shape[0]
                bank = torch.cat([residual, residual])  # two anchors per row
                index = torch.stack([torch.arange(n_rows), torch.arange(n_rows) + n_rows], 1).to(device)
                coeffs = torch.tensor([[1.0, 1.3, -0.3]] * n_rows, device=device)
                t = time_call(lambda: split.forward_with_forecast(x, sigma, bank, index, coeffs, **cond), device,
                              args.reps)
            key = f"self_draft_head{head}_b1"
            out["forward"][key] = t
            if base:
                t["ratio_to_target_b1"] = t["median_s"] / base
            record(f"self{head}", 1, t, {"head_blocks": head, "residual_MB_per_row": residual[0].numel() *
                                         residual.element_size() / 1e6})
            del bank, residual

        # ---- sampler overhead: draft == target, every window accepted ------------------------
        den = make_den(target, static)
        n = args.sample_steps
        sig = sdsv.flow_match_sigmas(n, shift=3.0).to(device)
        spec = StagePlan(n, 0, 0, 1, args.window_k, name=f"K{args.window_k}")
        runs = {}
        for plan in (StagePlan.target_only(n), spec):
            sdsv.sample(den, den, x, sig, plan, accept=AcceptanceTest("x0_rms", 0.05), **cond)  # warm-up
            res = sdsv.sample(den, den, x, sig, plan, accept=AcceptanceTest("x0_rms", 0.05), **cond)
            st = res.stats
            windows = max(1, len(st.windows))
            runs[plan.name] = dict(
                st.to_dict(), windows=len(st.windows), sampler_s_per_step=st.sampler_s / n,
                sampler_s_per_window=st.sampler_s / windows if st.windows else None,
                sampler_fraction=st.sampler_s / st.wall_s if st.wall_s else float("nan"))
            runs[plan.name].pop("windows_list", None)
            runs[plan.name]["window_records"] = [w.__dict__ for w in st.windows]
            print(f"[{name}] sample {plan.describe()}: {st.summary()}", flush=True)
            rows.append({"model": name, "kind": f"sample:{plan.name}", "batch": 1, "shape": shape_desc,
                         "median_s": st.wall_s, "min_s": st.wall_s, "reps": 1,
                         "sampler_s": st.sampler_s, "windows": len(st.windows),
                         "sampler_s_per_step": st.sampler_s / n,
                         "sampler_s_per_window": st.sampler_s / windows if st.windows else "",
                         "acceptance": st.acceptance_rate})
        out["sample"] = runs
    results[name] = out
    del target
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "scale_check_out"))
    ap.add_argument("--models", default="flux,wan")
    ap.add_argument("--batches", default="1,2,10")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--flux-size", type=int, default=1024)
    ap.add_argument("--wan-frames", type=int, default=81)
    ap.add_argument("--sample-steps", type=int, default=8)
    ap.add_argument("--window-k", type=int, default=3)
    ap.add_argument("--tiny", action="store_true", help="tiny configs on CPU: checks the script, measures nothing")
    args = ap.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if device.type != "cuda" and not args.tiny:
        sys.exit("no GPU: run with --tiny to check the script on a CPU")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    os.makedirs(args.out, exist_ok=True)

    import diffusers

    env = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "diffusers": diffusers.__version__, "cuda": torch.version.cuda,
           "dtype": str(dtype), "tiny": args.tiny, "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print(json.dumps(env), flush=True)
    results, rows = {"env": env}, []
    for name in args.models.split(","):
        try:
            run_model(name.strip(), args, device, dtype, rows, results)
        finally:  # keep what was measured even if a later model fails
            with open(os.path.join(args.out, "scale_check.json"), "w") as fh:
                json.dump(results, fh, indent=1, default=str)
            if rows:
                keys = sorted({k for r in rows for k in r})
                with open(os.path.join(args.out, "scale_check.csv"), "w", newline="") as fh:
                    wr = csv.DictWriter(fh, fieldnames=["device", "torch", "diffusers"] + keys)
                    wr.writeheader()
                    for r in rows:
                        wr.writerow({"device": env["device"], "torch": env["torch"], "diffusers": env["diffusers"], **r})
    print(f"wrote {args.out}/scale_check.json and scale_check.csv", flush=True)


if __name__ == "__main__":
    main()
