"""Helpers shared by the kernel benchmarks: sizes, input construction, environment record."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess

import torch

# latent of ONE (sample, step) row
SIZES = {
    "flux-1024": (4096, 64),          # Flux.1 1024x1024: 64x64 packed 2x2 patches x 64 channels
    "wan-480p-81f": (16, 21, 60, 104),  # Wan2.1 480p, 81 frames: C x T x H x W after the VAE
}
ROWS = (2, 10)  # endpoints verification of one sample (2 rows); full verification of K = 9 (10 rows)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def window_k_for(rows: int) -> tuple[torch.Tensor, str]:
    """The verification batch that has ``rows`` rows: 2 -> endpoints of one window, else full."""
    if rows == 2:
        return torch.tensor([9]), "endpoints"
    return torch.tensor([rows - 1]), "full"


def make_inputs(shape, rows, dtype, device, seed=0):
    """t, d, y without temporaries (filled in place in the target dtype), plus h and sigma."""
    g = torch.Generator(device=device).manual_seed(seed)
    t = torch.empty((rows, *shape), device=device, dtype=dtype).normal_(generator=g)
    d = torch.empty_like(t).normal_(generator=g).mul_(0.05).add_(t)
    y = torch.empty_like(t).normal_(generator=g)
    h = torch.full((rows,), -0.02, device=device)
    sigma = torch.linspace(0.9, 0.7, rows, device=device)
    return t, d, y, h, sigma


def git_commit() -> str:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.check_output(["git", "-C", here, "rev-parse", "--short", "HEAD"], text=True).strip()
    except Exception:
        return "unknown"


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict:
    env = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "sdsv_commit": git_commit(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_at_start": os.getloadavg(),
        "nice": os.nice(0),
    }
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, cuda=torch.version.cuda, gpu_memory_gib=round(p.total_memory / 2**30, 1))
    return env
