"""CPU microbenchmark: the C++ extension vs the pure-torch reference, same run, same inputs.

Ops: ``pair_stats``, ``accept_commit`` and ``verify`` (= both, what the sampler runs per round)
at Flux (4096 x 64) and Wan2.1 (16 x 21 x 60 x 104) row latents, R = 2 (endpoints) and
R = 10 (full verification of K = 9), fp32 and bf16. Timing: median of ``--repeats`` calls after
a warm-up, the two backends interleaved so background load hits both alike; the minimum and
the process CPU time (all threads) per call are recorded too, being less sensitive to a busy
machine than the wall-clock median. Memory: the peak
resident memory a call adds on top of what was resident before it (Linux ``VmHWM`` after
resetting it through ``/proc/self/clear_refs``), measured in a child process in which glibc is
told to ``mmap`` every allocation above 64 KiB (so freed memory is really returned and each
call's allocations show). Timing runs with the default allocator: forcing mmap there would bill
the reference's many temporaries with page faults it does not pay in normal use.

    PYTHONPATH=python:. python benchmarks/bench_kernels_cpu.py [--quick] [--repeats N]

Writes benchmarks/results/cpu-<date>.json and .csv (device, versions, date, load average).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time

import subprocess  # noqa: E402

import torch  # noqa: E402

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="Flux size only, 3 repeats (a smoke run)")
    ap.add_argument("--out", default=RESULTS)
    ap.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)  # the child of main()
    ap.add_argument("--threads", type=int, default=None,
                    help="torch/OpenMP threads for both backends (default: torch's). On a small machine that "
                         "is busy with other work, 1 avoids measuring thread wake-up delays instead of kernels")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    status = sdsv_kernels.backends()
    if status["cpp"] is not True:
        sys.exit(f"the C++ extension is not available: {status['cpp']}")
    sizes = {"flux-1024": SIZES["flux-1024"]} if args.quick else SIZES
    repeats = 3 if args.quick else args.repeats
    env = environment()
    memory = {}
    if args.memory_only:
        repeats = 0
    else:  # peak memory first, in a child with mmap for every allocation > 64 KiB
        child = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-only", *sys.argv[1:]],
                               env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}, capture_output=True, text=True)
        if child.returncode != 0:
            sys.exit(f"memory child failed:\n{child.stderr}")
        memory = {r.pop("key"): r for r in json.loads(child.stdout.strip().splitlines()[-1])}
    print(f"# {env['cpu']}, {env['torch_threads']} torch threads, torch {env['torch']}, load {env['loadavg_at_start']}")
    rows_out = []
    for size_name, shape in sizes.items():
        for n_rows in ROWS:
            window_k, verify = window_k_for(n_rows)
            for dname, dtype in DTYPES.items():
                inputs = make_inputs(shape, n_rows, dtype, "cpu")
                t, d, y, h, sigma = inputs
                input_bytes = 3 * t.numel() * t.element_size()
                for op in ("pair_stats", "accept_commit", "verify"):
                    times = {"reference": [], "cpp": []}
                    cpu_times = {"reference": [], "cpp": []}
                    mem = {}
                    fns = {}
                    for be in times:
                        with sdsv_kernels.use_backend(be):
                            fns[be] = build_ops(t, d, y, h, sigma, window_k, verify)[op]
                            fns[be]()  # warm-up
                            if args.memory_only:
                                mem[be] = peak_extra_bytes(fns[be])
                    if args.memory_only:
                        rows_out.append({"key": f"{size_name}/{n_rows}/{dname}/{op}", **{f"{b}_peak_extra_MB": round(m / 1e6, 1) for b, m in mem.items()}})
                        continue
                    mem = memory.get(f"{size_name}/{n_rows}/{dname}/{op}", {})
                    for _ in range(repeats):
                        for be in times:
                            with sdsv_kernels.use_backend(be):
                                c0, t0 = time.process_time(), time.perf_counter()
                                fns[be]()
                                times[be].append(time.perf_counter() - t0)
                                cpu_times[be].append(time.process_time() - c0)
                    med = {be: statistics.median(v) for be, v in times.items()}
                    row = {
                        "size": size_name, "latent": "x".join(map(str, shape)), "R": n_rows, "verify": verify,
                        "dtype": dname, "op": op, "input_MB": round(input_bytes / 1e6, 1),
                        "reference_ms": round(med["reference"] * 1e3, 3), "cpp_ms": round(med["cpp"] * 1e3, 3),
                        "reference_min_ms": round(min(times["reference"]) * 1e3, 3), "cpp_min_ms": round(min(times["cpp"]) * 1e3, 3),
                        "speedup": round(med["reference"] / med["cpp"], 2),
                        "speedup_min": round(min(times["reference"]) / min(times["cpp"]), 2),
                        "reference_cpu_ms": round(statistics.median(cpu_times["reference"]) * 1e3, 3),
                        "cpp_cpu_ms": round(statistics.median(cpu_times["cpp"]) * 1e3, 3),
                        "reference_peak_extra_MB": mem.get("reference_peak_extra_MB"), "cpp_peak_extra_MB": mem.get("cpp_peak_extra_MB"),
                        "cpp_GBps": round(input_bytes / med["cpp"] / 1e9, 2) if op == "pair_stats" else None,
                        "repeats": repeats,
                    }
                    rows_out.append(row)
                    print(f"{size_name:13s} R={n_rows:<2d} {dname} {op:13s} ref {row['reference_ms']:9.2f} ms  "
                          f"cpp {row['cpp_ms']:8.2f} ms  x{row['speedup']:<5.2f} (min x{row['speedup_min']:<5.2f})  peak extra MB ref "
                          f"{row['reference_peak_extra_MB']} cpp {row['cpp_peak_extra_MB']}", flush=True)
                del inputs, t, d, y, h, sigma
    if args.memory_only:
        print(json.dumps(rows_out))
        return
    env["loadavg_at_end"] = os.getloadavg()
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"cpu-{env['date_utc'][:10]}-t{env['torch_threads']}" + ("-quick" if args.quick else ""))
    with open(stem + ".json", "w") as f:
        json.dump({"environment": env, "results": rows_out}, f, indent=1)
    with open(stem + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["date_utc", "cpu", "torch", "sdsv_commit", "torch_threads", *rows_out[0].keys()])
        w.writeheader()
        for r in rows_out:
            w.writerow({"date_utc": env["date_utc"], "cpu": env["cpu"], "torch": env["torch"],
                        "sdsv_commit": env["sdsv_commit"], "torch_threads": env["torch_threads"], **r})
    print(f"wrote {stem}.json and .csv")


if __name__ == "__main__":
    main()
