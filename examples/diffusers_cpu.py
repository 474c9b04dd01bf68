"""`sdsv.enable(pipe)` on a CPU, from a fresh clone: no GPU, no download.

A real diffusers pipeline class (Flux by default; Wan2.1 or SD3 with --family) built from a small
config with random weights, sampled once as it is and once with `sdsv.enable(pipe)` (the default:
the self-draft, no draft model). Prints the target calls, the wall time of both and the run's
statistics. Random weights make the images noise: the difference printed between the two latents
says how far the speculative run strayed from the plain one, not how good an image is.

    python examples/diffusers_cpu.py                 # Flux, 28 steps
    python examples/diffusers_cpu.py --family wan --steps 20

With real weights the same two lines do the work on a GPU:
`pipe = FluxPipeline.from_pretrained(..., torch_dtype=torch.bfloat16).to("cuda"); sdsv.enable(pipe)`.
"""

from __future__ import annotations

import argparse
import time

import torch

import sdsv
from sdsv.integrations.hf_diffusers.random_pipelines import PIPELINES

# more blocks than the tests' pipelines, so that forecasting the deep blocks saves something
TRANSFORMER = {"flux": dict(num_layers=2, num_single_layers=6), "wan": dict(num_layers=8), "sd3": dict(num_layers=8)}
OUTPUT = {"flux": "images", "wan": "frames", "sd3": "images"}


def timed_latents(pipe, family: str, kwargs: dict) -> tuple[torch.Tensor, float]:
    t0 = time.perf_counter()
    out = pipe(**kwargs, output_type="latent", generator=torch.Generator().manual_seed(0))
    return getattr(out, OUTPUT[family]), time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", choices=sorted(PIPELINES), default="flux")
    p.add_argument("--steps", type=int, default=28, help="num_inference_steps (default 28)")
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error(f"argument --steps: must be >= 2, got {args.steps}")
    torch.set_num_threads(1)  # tiny models: one thread is faster than two fighting over the cores

    build, call_kwargs = PIPELINES[args.family]
    pipe = build(seed=0, **TRANSFORMER[args.family])
    kwargs = call_kwargs(batch=1, cfg=False, steps=args.steps)
    params_m = sum(t.numel() for t in pipe.transformer.parameters()) / 1e6
    print(f"{type(pipe).__name__} with random weights ({params_m:.2f} M transformer parameters), "
          f"{args.steps} steps, {type(pipe.scheduler).__name__}")

    timed_latents(pipe, args.family, kwargs)  # warm-up: first calls allocate
    plain, plain_s = timed_latents(pipe, args.family, kwargs)

    sdsv.enable(pipe)
    timed_latents(pipe, args.family, kwargs)
    fast, fast_s = timed_latents(pipe, args.family, kwargs)
    stats = pipe.sdsv_stats
    sdsv.disable(pipe)

    rel = ((fast.float() - plain.float()).norm() / plain.float().norm()).item()
    print(f"plain pipe(...):       {args.steps} target calls, {plain_s:.3f} s")
    print(f"with sdsv.enable(pipe): {stats.target_calls} target calls, {fast_s:.3f} s "
          f"({plain_s / fast_s:.2f}x), final latent {rel:.2%} from the plain one (relative L2)")
    print(f"sdsv: {stats.summary()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
