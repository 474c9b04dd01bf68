"""CPU peak memory of the ops: the C++ extension vs the pure-torch reference, same inputs.

Speed lives in the pytest-benchmark suite (``python -m pytest benchmarks/ --benchmark-only``,
``benchmarks/test_ops.py``); this script measures what that suite cannot: the peak resident
memory one call adds on top of what was resident before it (Linux ``VmHWM`` after resetting it
through ``/proc/self/clear_refs``), in a child process in which glibc is told to ``mmap`` every
allocation above 64 KiB (so freed memory is really returned and each call's allocations show).
Ops ``pair_stats``, ``accept_commit`` and ``verify`` (= both, what the sampler runs per round) at
Flux (4096 x 64) and Wan2.1 (16 x 21 x 60 x 104) row latents, R = 2 and 10, fp32 and bf16.

    PYTHONPATH=python:. python benchmarks/bench_kernels_cpu.py [--quick]

Writes benchmarks/results/cpu-mem-<date>.json and .csv (device, versions, date).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdsv_kernels  # noqa: E402
from _common import DTYPES, ROWS, SIZES, environment, make_inputs, window_k_for  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _status() -> tuple[int, int]:
    fields = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def peak_extra_bytes(fn) -> int:
    """Resident memory the call adds at its peak (its outputs included)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return -1
    before, _ = _status()
    out = fn()
    _, peak = _status()
    del out
    return peak - before


def build_ops(t, d, y, h, sigma, window_k, verify):
    stats = sdsv_kernels.pair_stats(t, d, y, h)

    def pair_stats():
        return sdsv_kernels.pair_stats(t, d, y, h)

    def accept_commit():
        return sdsv_kernels.accept_commit(stats, y, t, h, sigma, window_k, "x0_rms", 0.05, verify)

    def verify_round():
        s = sdsv_kernels.pair_stats(t, d, y, h)
        return sdsv_kernels.accept_commit(s, y, t, h, sigma, window_k, "x0_rms", 0.05, verify)

    return {"pair_stats": pair_stats, "accept_commit": accept_commit, "verify": verify_round}


def measure(sizes) -> list[dict]:
    """Peak extra MB per (case, op, backend); runs in the child with mmap for every allocation."""
    rows_out = []
    for size_name, shape in sizes.items():
        for n_rows in ROWS:
            window_k, verify = window_k_for(n_rows)
            for dname, dtype in DTYPES.items():
                t, d, y, h, sigma = make_inputs(shape, n_rows, dtype, "cpu")
                for op in ("pair_stats", "accept_commit", "verify"):
                    row = {"size": size_name, "latent": "x".join(map(str, shape)), "R": n_rows, "verify": verify,
                           "dtype": dname, "op": op, "input_MB": round(3 * t.numel() * t.element_size() / 1e6, 1)}
                    for be in ("reference", "cpp"):
                        with sdsv_kernels.use_backend(be):
                            fn = build_ops(t, d, y, h, sigma, window_k, verify)[op]
                            fn()  # warm-up
                            row[f"{be}_peak_extra_MB"] = round(peak_extra_bytes(fn) / 1e6, 1)
                    rows_out.append(row)
                del t, d, y, h, sigma
    return rows_out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="Flux size only (a smoke run)")
    ap.add_argument("--out", default=RESULTS)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    status = sdsv_kernels.backends()
    if status["cpp"] is not True:
        sys.exit(f"the C++ extension is not available: {status['cpp']}")
    sizes = {"flux-1024": SIZES["flux-1024"]} if args.quick else SIZES
    if args.child:
        print(json.dumps(measure(sizes)))
        return
    child = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", *sys.argv[1:]],
                           env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}, capture_output=True, text=True)
    if child.returncode != 0:
        sys.exit(f"memory child failed:\n{child.stderr}")
    rows_out = json.loads(child.stdout.strip().splitlines()[-1])
    env = environment()
    for r in rows_out:
        print(f"{r['size']:13s} R={r['R']:<2d} {r['dtype']} {r['op']:13s} peak extra MB: reference "
              f"{r['reference_peak_extra_MB']:8.1f}  cpp {r['cpp_peak_extra_MB']:6.1f}")
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"cpu-mem-{env['date_utc'][:10]}" + ("-quick" if args.quick else ""))
    with open(stem + ".json", "w") as f:
        json.dump({"environment": env, "results": rows_out}, f, indent=1)
    with open(stem + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["date_utc", "cpu", "torch", "sdsv_commit", *rows_out[0].keys()])
        w.writeheader()
        for r in rows_out:
            w.writerow({"date_utc": env["date_utc"], "cpu": env["cpu"], "torch": env["torch"],
                        "sdsv_commit": env["sdsv_commit"], **r})
    print(f"wrote {stem}.json and .csv")


if __name__ == "__main__":
    main()
