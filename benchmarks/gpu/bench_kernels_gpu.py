"""GPU microbenchmark: Triton and the CUDA extension vs torch eager (the reference) vs
``torch.compile`` of the reference, at Flux (4096 x 64) and Wan2.1 (16 x 21 x 60 x 104) row
latents, R = 2 and 10, bf16 and fp32.

Reported per (op, size, R, dtype, provider): median time (``triton.testing.do_bench``,
quantiles 0.5/0.2/0.8), achieved GB/s (compulsory bytes: every input element read once, every
output element written once), that as a fraction of (a) the device's datasheet peak and (b) the
bandwidth a device-to-device copy reaches on this GPU, the peak extra memory of one call
(``torch.cuda.max_memory_allocated`` above the inputs), the speed-up over eager, and whether the
result matches the reference.

    python benchmarks/gpu/bench_kernels_gpu.py --out "$OUT"      # on a GPU machine
    TRITON_INTERPRET=1 python benchmarks/gpu/bench_kernels_gpu.py --smoke   # CPU code-path check
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import sdsv_kernels  # noqa: E402
from sdsv_kernels import reference  # noqa: E402
from _common import DTYPES, ROWS, SIZES, environment, make_inputs, window_k_for  # noqa: E402

# datasheet peak DRAM bandwidth, GB/s (substring of torch.cuda.get_device_name -> value)
PEAK_GBPS = [
    ("H200", 4800.0), ("H100 NVL", 3900.0), ("H100 PCIe", 2000.0), ("H100", 3350.0), ("GH200", 4000.0),
    ("B200", 8000.0), ("A100-SXM4-80GB", 2039.0), ("A100 80GB PCIe", 1935.0), ("A100", 1555.0),
    ("L40S", 864.0), ("L4", 300.0), ("A10G", 600.0), ("RTX 4090", 1008.0),
]
METRIC, TAU = "x0_rms", 0.05
# the self-draft's order-1 forecast: two anchors per row, from a bank of 3 slots per row
FORECAST_ANCHORS, BANK_SLOTS_PER_ROW = 2, 3


def peak_gbps(name: str) -> float | None:
    for key, val in PEAK_GBPS:
        if key in name:
            return val
    return None


def bench(fn, device: str, reps: int) -> tuple[float, float, float]:
    """(median, p20, p80) milliseconds."""
    if device == "cuda":
        import triton.testing

        q = triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8], warmup=25, rep=reps)
        return tuple(float(x) for x in q)
    fn()
    ts = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    ts.sort()
    return statistics.median(ts), ts[0], ts[-1]


def copy_gbps(device: str) -> float | None:
    if device != "cuda":
        return None
    import triton.testing

    src = torch.empty(512 * 2**20 // 4, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), rep=200)
    return 2 * src.numel() * 4 / ms / 1e6


def op_bytes(op: str, t: torch.Tensor, n_samples: int) -> int:
    e, row = t.element_size(), t[0].numel()
    r = t.shape[0]
    stats_b = r * 5 * 4
    if op == "pair_stats":
        return 3 * r * row * e + stats_b
    if op == "accept_commit":  # reads y and t of the commit rows, writes x_next
        return 3 * n_samples * row * e + stats_b
    if op == "verify":
        return op_bytes("pair_stats", t, n_samples) + op_bytes("accept_commit", t, n_samples)
    if op == "rollout_step":  # x, v read, out written
        return 3 * r * row * e
    if op == "gather_combine":  # base read, two anchors gathered per row, out written
        return (2 + FORECAST_ANCHORS) * r * row * e
    raise ValueError(op)


def forecast_inputs(t: torch.Tensor):
    """A bank of 3 slots per row (filled from t) and each row's two anchors + order-1 weights."""
    r = t.shape[0]
    bank = t.repeat(BANK_SLOTS_PER_ROW, *([1] * (t.dim() - 1))).mul_(0.5)
    index = torch.stack([torch.arange(r) * BANK_SLOTS_PER_ROW, torch.arange(r) * BANK_SLOTS_PER_ROW + 1], 1).to(t.device)
    coeffs = torch.tensor([[1.0, 1.3, -0.3]] * r, device=t.device)
    return bank, index, coeffs


def make_fns(provider: str, t, d, y, h, sigma, window_k, verify, buf, compiled, forecast):
    bank, index, coeffs = forecast
    if provider == "compile":
        ps, ac, ro, gc = compiled

        def pair_stats():
            return ps(t, d, y, h)

        def accept_commit():
            return ac(stats, y, t, h, sigma, window_k)

        def verify_round():
            return ac(ps(t, d, y, h), y, t, h, sigma, window_k)

        def rollout():
            return ro(y, d, h)

        def forecast_combine():
            return gc(d, bank, index, coeffs)

        stats = reference.pair_stats(t, d, y, h)
        return {"pair_stats": pair_stats, "accept_commit": accept_commit, "verify": verify_round, "rollout_step": rollout,
                "gather_combine": forecast_combine}
    stats = reference.pair_stats(t, d, y, h)

    def wrap(fn):
        def run():
            with sdsv_kernels.use_backend(provider):
                return fn()
        return run

    return {
        "pair_stats": wrap(lambda: sdsv_kernels.pair_stats(t, d, y, h)),
        "accept_commit": wrap(lambda: sdsv_kernels.accept_commit(stats, y, t, h, sigma, window_k, METRIC, TAU, verify)),
        "verify": wrap(lambda: sdsv_kernels.accept_commit(sdsv_kernels.pair_stats(t, d, y, h), y, t, h, sigma, window_k,
                                                          METRIC, TAU, verify)),
        "rollout_step": wrap(lambda: sdsv_kernels.rollout_step(y, d, h, out=buf)),
        "gather_combine": wrap(lambda: sdsv_kernels.gather_combine(d, bank, index, coeffs)),
    }


def check(op, got, want) -> bool:
    if op == "pair_stats":
        return torch.allclose(got.float().cpu(), want.float().cpu(), rtol=1e-4, atol=1e-3)
    if op in ("accept_commit", "verify"):
        return torch.equal(got[1].cpu(), want[1].cpu()) and torch.allclose(
            got[0].float().cpu(), want[0].float().cpu(), rtol=2e-2, atol=2e-2)
    return torch.allclose(got.float().cpu(), want.float().cpu(), rtol=2e-2, atol=2e-2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT") or os.path.join(os.path.dirname(HERE), "results"))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on CPU (TRITON_INTERPRET=1): exercises the code paths")
    ap.add_argument("--rep-ms", type=int, default=100, help="do_bench measuring time per point")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile provider")
    ap.add_argument("--compile-dtypes", default="bf16", help="dtypes that get the torch.compile provider (compiling is slow)")
    args = ap.parse_args()
    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device (use --smoke for a CPU code-path check)")
    sizes = {"smoke": (3, 5, 7)} if args.smoke else SIZES
    status = sdsv_kernels.backends()
    providers = ["reference"] + [p for p in ("triton", "cuda") if status[p] is True]
    skipped = {p: status[p] for p in ("triton", "cuda") if status[p] is not True}
    if not args.no_compile and not args.smoke:
        providers.append("compile")
    env = environment()
    env["providers"] = providers
    env["skipped_providers"] = skipped
    env["copy_GBps"] = copy_gbps(device)
    env["peak_GBps_datasheet"] = peak_gbps(env.get("gpu", "")) if device == "cuda" else None
    print(json.dumps(env, indent=1), flush=True)
    rows = []
    for size_name, shape in sizes.items():
        for n_rows in ROWS:
            window_k, verify = window_k_for(n_rows)
            window_k = window_k.to(device)
            for dname, dtype in DTYPES.items():
                t, d, y, h, sigma = make_inputs(shape, n_rows, dtype, device)
                buf = torch.empty_like(y)
                compiled = None
                forecast = forecast_inputs(d)
                dtype_providers = [p for p in providers if p != "compile" or dname in args.compile_dtypes.split(",")]
                if "compile" in dtype_providers:
                    torch._dynamo.reset()
                    compiled = (
                        torch.compile(reference.pair_stats, dynamic=False),
                        torch.compile(lambda s, y_, t_, h_, sg, k: reference.accept_commit(s, y_, t_, h_, sg, k, METRIC, TAU, verify),
                                      dynamic=False),
                        torch.compile(lambda x, v, hh: reference.rollout_step(x, v, hh), dynamic=False),
                        torch.compile(reference.gather_combine, dynamic=False),
                    )
                ref_out = make_fns("reference", t, d, y, h, sigma, window_k, verify, buf, None, forecast)
                want = {op: fn() for op, fn in ref_out.items()}
                want["rollout_step"] = want["rollout_step"].clone()
                eager_ms = {}
                for provider in dtype_providers:
                    fns = make_fns(provider, t, d, y, h, sigma, window_k, verify, buf, compiled, forecast)
                    for op, fn in fns.items():
                        try:
                            got = fn()  # also compiles / autotunes
                            ok = check(op, got, want[op])
                            del got
                            if device == "cuda":
                                torch.cuda.synchronize()
                                torch.cuda.reset_peak_memory_stats()
                                base = torch.cuda.memory_allocated()
                                fn()
                                torch.cuda.synchronize()
                                peak_extra = torch.cuda.max_memory_allocated() - base
                            else:
                                peak_extra = None
                            ms, p20, p80 = bench(fn, device, args.rep_ms)
                            err = None
                        except Exception as exc:  # record and go on: one broken provider must not hide the rest
                            ok, peak_extra, ms, p20, p80, err = False, None, float("nan"), float("nan"), float("nan"), repr(exc)[:300]
                        nbytes = op_bytes(op, t, window_k.numel())
                        gbps = nbytes / ms / 1e6 if ms == ms else float("nan")
                        if provider == "reference":
                            eager_ms[op] = ms
                        row = {
                            "size": size_name, "latent": "x".join(map(str, shape)), "R": n_rows, "verify": verify,
                            "dtype": dname, "op": op, "provider": provider, "ms": round(ms, 4), "ms_p20": round(p20, 4),
                            "ms_p80": round(p80, 4), "bytes": nbytes, "GBps": round(gbps, 1),
                            "frac_peak": round(gbps / env["peak_GBps_datasheet"], 3) if env["peak_GBps_datasheet"] else None,
                            "frac_copy": round(gbps / env["copy_GBps"], 3) if env["copy_GBps"] else None,
                            "speedup_vs_eager": round(eager_ms.get(op, float("nan")) / ms, 2) if ms == ms else None,
                            "peak_extra_MB": round(peak_extra / 1e6, 2) if peak_extra is not None else None,
                            "matches_reference": ok, "error": err,
                        }
                        rows.append(row)
                        print(f"{size_name:13s} R={n_rows:<2d} {dname} {op:13s} {provider:9s} {ms:9.4f} ms "
                              f"{gbps:8.1f} GB/s  frac_peak {row['frac_peak']}  x{row['speedup_vs_eager']} vs eager  "
                              f"extra {row['peak_extra_MB']} MB  ok={ok}" + (f"  ERROR {err}" if err else ""), flush=True)
                del t, d, y, h, sigma, buf, want, compiled, forecast
                if device == "cuda":
                    torch.cuda.empty_cache()
    os.makedirs(args.out, exist_ok=True)
    tag = (env.get("gpu") or "cpu-smoke").replace(" ", "_").replace("/", "_")
    stem = os.path.join(args.out, f"gpu-{tag}-{env['date_utc'][:10]}")
    with open(stem + ".json", "w") as f:
        json.dump({"environment": env, "results": rows}, f, indent=1)
    with open(stem + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["date_utc", "gpu", "torch", "triton", "sdsv_commit", *rows[0].keys()])
        w.writeheader()
        for r in rows:
            w.writerow({"date_utc": env["date_utc"], "gpu": env.get("gpu"), "torch": env["torch"], "triton": env["triton"],
                        "sdsv_commit": env["sdsv_commit"], **r})
    print(f"wrote {stem}.json and .csv")


if __name__ == "__main__":
    main()
