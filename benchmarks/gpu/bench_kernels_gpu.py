"""GPU kernel benchmark: the pytest-benchmark suite (``benchmarks/test_ops.py``) on the GPU, plus
what a bandwidth report needs around it.

The timing is the suite's own (one code path for every machine): reference (torch eager), the
CUDA extension, Triton and ``torch.compile`` of the reference (``--bench-compile``), at the Flux
and Wan2.1 row latents, R = 2 and 10, fp32 and bf16, with the peak extra memory of one call in
``extra_info``. This wrapper adds the device-to-device copy bandwidth of this GPU and the
datasheet peak, and turns the suite's JSON into one row per (op, size, R, dtype, provider):
median ms, GB/s of compulsory traffic, fraction of the datasheet peak and of the measured copy
bandwidth, speed-up over eager, peak extra MB. Correctness on the GPU is the kernel tests' job
(``SDSV_REQUIRE_BACKENDS=triton,cuda pytest tests/kernels``, run by ``run_device.sh``).

    python benchmarks/gpu/bench_kernels_gpu.py --out "$OUT"      # on a GPU machine
    python benchmarks/gpu/bench_kernels_gpu.py --smoke           # CPU code-path check (tiny latent, Triton interpreted)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys

if "--smoke" in sys.argv:  # the interpreter must be on before anything imports triton (the environment record does)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
sys.path.insert(0, BENCH)
from _common import environment  # noqa: E402

# datasheet peak DRAM bandwidth, GB/s (substring of torch.cuda.get_device_name -> value)
PEAK_GBPS = [
    ("H200", 4800.0), ("H100 NVL", 3900.0), ("H100 PCIe", 2000.0), ("H100", 3350.0), ("GH200", 4000.0),
    ("B200", 8000.0), ("A100-SXM4-80GB", 2039.0), ("A100 80GB PCIe", 1935.0), ("A100", 1555.0),
    ("L40S", 864.0), ("L4", 300.0), ("A10G", 600.0), ("RTX 4090", 1008.0),
]


def peak_gbps(name: str) -> float | None:
    for key, val in PEAK_GBPS:
        if key in name:
            return val
    return None


def copy_gbps() -> float | None:
    """Device-to-device copy of 512 MiB, bytes read + written per second (the practical ceiling)."""
    if not torch.cuda.is_available():
        return None
    import triton.testing

    src = torch.empty(512 * 2**20 // 4, device="cuda", dtype=torch.float32)
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), rep=200)
    return 2 * src.numel() * 4 / ms / 1e6


def rows_from_suite(data: dict, env: dict) -> list[dict]:
    """One row per benchmark of the suite's JSON, with the bandwidth fractions and the speed-up
    over the reference of the same case and device."""
    out, eager = [], {}
    for b in data["benchmarks"]:
        if not b["group"].startswith(("pair_stats", "accept_commit", "rollout_step", "gather_combine")):
            continue
        op, case = b["group"].split(" | ")
        size, r, dtype = case.split()
        info = b["extra_info"]
        ms = b["stats"]["median"] * 1e3
        row = {"size": size, "R": int(r[2:]), "dtype": dtype, "op": op, "provider": info["backend"],
               "device": info["device"], "ms": round(ms, 4), "ms_p20": None, "ms_p80": None,
               "bytes": info["bytes"], "GBps": round(info["bytes"] / ms / 1e6, 1),
               "peak_extra_MB": info.get("peak_extra_MB"), "matches_reference": None, "error": None}
        row["frac_peak"] = round(row["GBps"] / env["peak_GBps_datasheet"], 3) if env["peak_GBps_datasheet"] else None
        row["frac_copy"] = round(row["GBps"] / env["copy_GBps"], 3) if env["copy_GBps"] else None
        if row["provider"] == "reference":
            eager[(b["group"], row["device"])] = ms
        out.append((b["group"], row))
    rows = []
    for group, row in out:
        ref = eager.get((group, row["device"]))
        row["speedup_vs_eager"] = round(ref / row["ms"], 2) if ref else None
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT") or os.path.join(BENCH, "results"))
    ap.add_argument("--smoke", action="store_true", help="tiny latent on CPU, Triton interpreted: a code-path check")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile provider")
    ap.add_argument("--max-time", type=float, default=0.3, help="pytest-benchmark seconds per benchmark")
    args = ap.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("no CUDA device (use --smoke for a CPU code-path check)")
    env = environment()
    env["copy_GBps"] = copy_gbps()
    env["peak_GBps_datasheet"] = peak_gbps(env.get("gpu", "")) if torch.cuda.is_available() else None
    os.makedirs(args.out, exist_ok=True)
    tag = (env.get("gpu") or "cpu-smoke").replace(" ", "_").replace("/", "_")
    stem = os.path.join(args.out, f"gpu-{tag}-{env['date_utc'][:10]}")
    suite_json = stem + "-suite.json"
    select = "tiny and R2" if args.smoke else ("not tiny and cuda" if torch.cuda.is_available() else "not tiny")
    pytest_args = [os.path.join(BENCH, "test_ops.py"), "--benchmark-only", "-q", "-p", "no:cacheprovider",
                   "-k", select, f"--benchmark-json={suite_json}", f"--benchmark-max-time={args.max_time}",
                   "--benchmark-columns=min,median,rounds", f"--rootdir={os.path.dirname(BENCH)}"]
    if args.smoke:
        pytest_args.append("--bench-triton")
    if not args.no_compile:
        pytest_args.append("--bench-compile")
    print(json.dumps(env, indent=1), flush=True)
    rc = pytest.main(pytest_args)
    if rc != 0 or not os.path.exists(suite_json):
        sys.exit(f"the benchmark suite failed (pytest exit code {rc})")
    suite = json.load(open(suite_json))
    for b in suite["benchmarks"]:  # every timing of every round: MBs per case on a GPU, the stats say it all
        b["stats"].pop("data", None)
    with open(suite_json, "w") as f:
        json.dump(suite, f, indent=1)
    env["providers"] = sorted({b["extra_info"]["backend"] for b in suite["benchmarks"]})
    rows = rows_from_suite(suite, env)
    with open(stem + ".json", "w") as f:
        json.dump({"environment": env, "results": rows}, f, indent=1)
    with open(stem + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["date_utc", "gpu", "torch", "triton", "sdsv_commit", *rows[0].keys()])
        w.writeheader()
        for r in rows:
            w.writerow({"date_utc": env["date_utc"], "gpu": env.get("gpu"), "torch": env["torch"], "triton": env["triton"],
                        "sdsv_commit": env["sdsv_commit"], **r})
    for r in rows:
        print(f"{r['size']:13s} R={r['R']:<2d} {r['dtype']} {r['op']:14s} {r['provider']:9s} {r['device']:4s} "
              f"{r['ms']:9.4f} ms {r['GBps']:8.1f} GB/s  frac_peak {r['frac_peak']}  x{r['speedup_vs_eager']} vs eager  "
              f"extra {r['peak_extra_MB']} MB")
    print(f"wrote {stem}.json, .csv and the suite's {suite_json}")


if __name__ == "__main__":
    main()
