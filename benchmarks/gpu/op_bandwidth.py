"""The fused ops against the copy bandwidth of the same device, at the row sizes SDSV really uses,
with a profile that says where a shortfall comes from.

For every case (op, row size, R, backend; bf16, two anchors for ``gather_combine``):

* the op's time per call (CUDA events, median, hot caches: what the sampler sees call after call);
* its compulsory traffic (inputs read once, outputs written once) and GB/s;
* a device-to-device copy moving the same number of bytes (read + written), timed the same way,
  and the op's fraction of it (``frac_copy_same_bytes``): the fair ceiling at sizes where launch
  latency or the 60 MB L2 matter; plus a 1 GiB copy, the DRAM ceiling (``frac_copy_dram``);
* from ``torch.profiler``: the kernels each call launches, their device time per call, and the
  host time per call. Device time well under the wall time means the call is bound by launches and
  Python, not by memory; device time near the wall time at a low GB/s means the kernel itself.

Row sizes: the *latent* rows the sampler's ops touch (Flux 1024 tokens x 64 at 512^2, 4096 x 64 at
1024^2; Wan2.1 16 x F x 60 x 104 at 480p) and the *hidden-state* rows the self-draft's
``gather_combine`` forecasts (tokens x 3072 for Flux, tokens x 1536 for Wan): 2 MB to 100 MB a row
in bf16, where the bandwidth target is meaningful.

With ``--ncu`` and Nsight Compute on the PATH, the ``gather_combine`` kernels of the largest cases
are also captured with hardware counters (DRAM throughput, achieved occupancy; works on Firecracker
machines, not under gVisor); a failure is recorded, not raised.

    python benchmarks/gpu/op_bandwidth.py --out "$OUT" [--ncu]
    python benchmarks/gpu/op_bandwidth.py --smoke --out /tmp/opbw     # CPU code-path check
Writes ``op_bandwidth.json`` and ``op_profile.txt`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [os.path.join(ROOT, "python"), ROOT]

import sdsv_kernels  # noqa: E402

ANCHORS = 2  # the default self-draft: order-1 forecast from two anchors

# name -> shape of ONE row
LATENT_ROWS = {"flux-512 latent": (1024, 64), "flux-1024 latent": (4096, 64),
               "wan-480p-17f latent": (16, 5, 60, 104), "wan-480p-81f latent": (16, 21, 60, 104)}
HIDDEN_ROWS = {"flux-512 hidden": (1024, 3072), "flux-1024 hidden": (4096, 3072),
               "wan-480p-17f hidden": (7800, 1536), "wan-480p-81f hidden": (32760, 1536)}
SMOKE_ROWS = {"tiny latent": (64, 16), "tiny hidden": (64, 96)}


def op_case(op, shape, R, dtype, device):
    """(callable, bytes moved) for one op on R rows of ``shape``, outputs preallocated."""
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.empty((R, *shape), device=device, dtype=dtype).normal_(generator=g)
    v = torch.empty_like(x).normal_(generator=g)
    row = x[0].numel() * x.element_size()
    h = torch.full((R,), -0.02, device=device)
    if op == "gather_combine":
        bank = torch.empty((R * (ANCHORS + 1), *shape), device=device, dtype=dtype).normal_(generator=g)
        index = torch.stack([torch.arange(R) * 3, torch.arange(R) * 3 + 1], 1).to(device)
        coeffs = torch.tensor([[1.0, 1.3, -0.3]] * R, device=device)
        out = torch.empty_like(x)
        return (lambda: sdsv_kernels.gather_combine(x, bank, index, coeffs, out=out)), (2 + ANCHORS) * R * row
    if op == "rollout_step":
        out = torch.empty_like(x)
        return (lambda: sdsv_kernels.rollout_step(x, v, h, out=out)), 3 * R * row
    if op == "pair_stats":
        y = torch.empty_like(x).normal_(generator=g)
        return (lambda: sdsv_kernels.pair_stats(x, v, y, h)), 3 * R * row + R * 20
    raise ValueError(op)


def time_fn(fn, device, min_time=0.05, max_reps=200):
    """Median seconds per call: CUDA events around each call after warm-up; perf_counter on CPU."""
    for _ in range(3):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        one = time.perf_counter() - t0
        reps = int(max(10, min(max_reps, min_time / max(one, 1e-6))))
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        for s, e in zip(starts, ends):
            s.record()
            fn()
            e.record()
        torch.cuda.synchronize()
        return statistics.median(s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends))
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def copy_time(nbytes, device):
    """A device-to-device copy that reads and writes ``nbytes`` in total."""
    n = max(1, nbytes // 2 // 2)  # bf16 elements read (the same number written)
    src = torch.empty(n, device=device, dtype=torch.bfloat16).normal_()
    dst = torch.empty_like(src)
    return time_fn(lambda: dst.copy_(src), device)


def profile_case(fn, device, calls=10):
    """Kernels launched per call, their device time per call, host time per call."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        host = (time.perf_counter() - t0) / calls
        if device.type == "cuda":
            torch.cuda.synchronize()
    kernels = []
    for ev in prof.key_averages():
        dev_t = getattr(ev, "self_device_time_total", None)
        if dev_t is None:
            dev_t = getattr(ev, "self_cuda_time_total", 0)
        if device.type == "cuda" and dev_t and ev.device_type is not None and "CUDA" in str(ev.device_type):
            kernels.append({"name": ev.key[:120], "launches_per_call": ev.count / calls,
                            "device_us_per_call": dev_t / calls})
    kernels.sort(key=lambda k: -k["device_us_per_call"])
    table = prof.key_averages().table(sort_by="self_device_time_total" if device.type == "cuda" else "self_cpu_time_total",
                                      row_limit=8)
    return {"host_us_per_call": host * 1e6, "kernels": kernels,
            "device_us_per_call": sum(k["device_us_per_call"] for k in kernels)}, table


def run_ncu(args, out_dir):
    """Nsight Compute on this script's largest gather_combine cases (a child process)."""
    exe = shutil.which("ncu")
    if not exe:
        return {"skipped": "ncu not on PATH"}
    rep = os.path.join(out_dir, "op_profile.txt")
    cmd = [exe, "--clock-control", "none", "--target-processes", "all", "-k", "regex:gather|combine", "-c", "6",
           "--section", "SpeedOfLight", "--section", "Occupancy", "--section", "LaunchStats",
           sys.executable, os.path.abspath(__file__), "--ncu-target", "--out", out_dir]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.ncu_timeout)
        with open(rep, "a") as fh:
            fh.write("\n\n==== ncu " + " ".join(cmd[1:12]) + " ...\n")
            fh.write(p.stdout[-60000:])
            fh.write("\n---- stderr\n" + p.stderr[-4000:])
        return {"returncode": p.returncode, "appended_to": "op_profile.txt"}
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {e}"[:300]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "op_bandwidth_out"))
    ap.add_argument("--smoke", action="store_true", help="CPU code-path check on tiny rows (cpp/reference backends)")
    ap.add_argument("--ncu", action="store_true", help="also capture gather_combine with Nsight Compute if present")
    ap.add_argument("--ncu-timeout", type=float, default=90)
    ap.add_argument("--ncu-target", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("no CUDA device (use --smoke for a CPU code-path check)")
    device = torch.device("cpu" if args.smoke else "cuda")
    dtype = torch.bfloat16
    os.makedirs(args.out, exist_ok=True)

    if args.ncu_target:  # the child ncu profiles: the two largest hidden-row cases, each backend
        for name in ("flux-1024 hidden", "wan-480p-81f hidden"):
            for backend in ("cuda", "triton"):
                if sdsv_kernels.backends()[backend] is True:
                    with sdsv_kernels.use_backend(backend):
                        fn, _ = op_case("gather_combine", HIDDEN_ROWS[name], 2, dtype, device)
                        for _ in range(3):
                            fn()
                    torch.cuda.synchronize()
        return 0

    status = sdsv_kernels.backends()
    if device.type == "cuda":
        backends = [b for b in ("cuda", "triton") if status[b] is True] + ["reference"]
        rows = {**LATENT_ROWS, **HIDDEN_ROWS}
    else:
        backends = [b for b in ("cpp",) if status[b] is True] + ["reference"]
        rows = SMOKE_ROWS
    env = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu (smoke)",
           "torch": torch.__version__, "backends": {k: (v if v is True else str(v)[:80]) for k, v in status.items()},
           "dtype": str(dtype), "anchors": ANCHORS, "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    big = (1 << 30) if device.type == "cuda" else (1 << 24)
    env["copy_dram_GBps"] = big / copy_time(big, device) / 1e9
    print(json.dumps(env), flush=True)
    results = {"env": env, "cases": []}
    tables = []
    path = os.path.join(args.out, "op_bandwidth.json")
    for name, shape in rows.items():
        hidden = "hidden" in name
        ops = ("gather_combine",) if hidden else ("gather_combine", "rollout_step", "pair_stats")
        for R in ((1, 2, 10) if not hidden else (1, 2, 4)):
            for op in ops:
                try:
                    t_copy = None
                    for backend in backends:
                        case = {"rows": name, "shape": list(shape), "R": R, "op": op, "backend": backend}
                        try:
                            with sdsv_kernels.use_backend(backend):
                                fn, nbytes = op_case(op, shape, R, dtype, device)
                                t = time_fn(fn, device)
                                # the reference (several torch ops) is timed only: the question is the fused kernels
                                prof, table = profile_case(fn, device) if backend != "reference" else ({}, "")
                            if t_copy is None:
                                t_copy = copy_time(nbytes, device)
                            gbps = nbytes / t / 1e9
                            case.update(MB=nbytes / 1e6, us=t * 1e6, GBps=gbps,
                                        copy_same_bytes_us=t_copy * 1e6,
                                        frac_copy_same_bytes=t_copy / t,
                                        frac_copy_dram=gbps / env["copy_dram_GBps"], profile=prof)
                            dev_us, host_us = prof.get("device_us_per_call"), prof.get("host_us_per_call")
                            if R == 2 and backend != "reference":
                                tables.append(f"==== {op} {name} R={R} {backend}: {t * 1e6:.1f} us, {gbps:.0f} GB/s, "
                                              f"{t_copy / t:.0%} of a copy of the same bytes\n{table}")
                            print(f"{name:22s} R={R:<2d} {op:14s} {backend:9s} {t * 1e6:9.1f} us {gbps:8.0f} GB/s  "
                                  f"copy-same {t_copy / t:5.0%}  dram {gbps / env['copy_dram_GBps']:5.0%}"
                                  + (f"  device {dev_us:.1f} us/host {host_us:.1f} us" if prof else ""), flush=True)
                        except Exception as e:  # noqa: BLE001
                            case["error"] = f"{type(e).__name__}: {e}"[:300]
                            print(f"{name} R={R} {op} {backend}: {case['error']}", flush=True)
                        results["cases"].append(case)
                except torch.OutOfMemoryError as e:
                    results["cases"].append({"rows": name, "R": R, "op": op, "error": f"OOM: {e}"[:200]})
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            with open(path, "w") as fh:  # after every row size: a kill loses one size at most
                json.dump(results, fh, indent=1)
    with open(os.path.join(args.out, "op_profile.txt"), "w") as fh:
        fh.write(f"# torch.profiler of the fused ops ({env['device']}, torch {env['torch']}), R = 2, bf16\n\n")
        fh.write("\n\n".join(tables))
    if args.ncu and device.type == "cuda":
        results["ncu"] = run_ncu(args, args.out)
    with open(path, "w") as fh:
        json.dump(results, fh, indent=1)
    print(f"wrote {path} and op_profile.txt", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
