"""Two-device mode of the scale check: the verification batch sharded over ranks (NCCL on GPUs).

Each rank builds the same Flux.1-dev / Wan2.1-1.3B configuration (random bf16 weights, on its own
GPU) and times, at the row counts of a verification batch (2 = ``endpoints`` of one window, 4 =
two samples), the target on all rows on one device against ``sdsv.distributed.ShardedDenoiser``
(each rank its share, outputs gathered on every rank). Rank 0 writes ``sharded_check.json``.

    torchrun --nproc-per-node 2 benchmarks/gpu/sharded_check.py --out "$OUT"        # 2 GPUs
    torchrun --nproc-per-node 2 benchmarks/gpu/sharded_check.py --tiny --out /tmp/s  # CPU/gloo check of the script
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.distributed as dist

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "..", "python"), os.path.join(HERE, "..", "..")]

from scale_check import FLUX_DEV, FLUX_TINY, WAN_1_3B, WAN_TINY, build, flux_inputs, time_call, wan_inputs  # noqa: E402
from sdsv.distributed import ShardedDenoiser  # noqa: E402
from sdsv.integrations.hf_diffusers import flux_denoiser, wan_denoiser  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "sharded_check_out"))
    ap.add_argument("--models", default="flux,wan")
    ap.add_argument("--rows", default="2,4")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tiny", action="store_true", help="tiny configs on CPU (gloo): checks the script, measures nothing")
    args = ap.parse_args()
    cuda = torch.cuda.is_available() and not args.tiny
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    dtype = torch.bfloat16 if cuda else torch.float32
    from diffusers import FluxTransformer2DModel, WanTransformer3DModel

    results = {"world": world, "device": torch.cuda.get_device_name(device) if cuda else "cpu", "torch": torch.__version__,
               "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "models": {}}
    with torch.no_grad():
        for name in args.models.split(","):
            if name == "flux":
                cfg = FLUX_TINY if args.tiny else FLUX_DEV
                torch.manual_seed(0)
                model = build(FluxTransformer2DModel, cfg, device, dtype)
                size = 32 if args.tiny else 1024
                make = lambda b: flux_inputs(cfg, b, size, size, 8 if args.tiny else 512, device, dtype)  # noqa: E731
                den = lambda static: flux_denoiser(model, **static)  # noqa: E731
            else:
                cfg = WAN_TINY if args.tiny else WAN_1_3B
                torch.manual_seed(0)
                model = build(WanTransformer3DModel, cfg, device, dtype)
                make = (lambda b: wan_inputs(cfg, b, 16, 16, 5, 8, device, dtype)) if args.tiny else \
                    (lambda b: wan_inputs(cfg, b, 480, 832, 81, 512, device, dtype))  # noqa: E731
                den = lambda static: wan_denoiser(model, guidance_scale=1.0)  # noqa: E731
            out = {}
            for rows in [int(r) for r in args.rows.split(",")]:
                torch.manual_seed(1)  # the same inputs on every rank
                x, static, cond = make(rows)
                sigma = torch.full((rows,), 0.7, device=device)
                one = den(static)
                sharded = ShardedDenoiser(one)
                t_one = time_call(lambda: one(x, sigma, **cond), device, args.reps)
                t_sh = time_call(lambda: sharded(x, sigma, **cond), device, args.reps)
                diff = (sharded(x, sigma, **cond).float() - one(x, sigma, **cond).float()).abs().max().item()
                out[f"rows{rows}"] = {"one_device_s": t_one["median_s"], "sharded_s": t_sh["median_s"],
                                      "speedup": t_one["median_s"] / t_sh["median_s"], "max_abs_diff": diff}
                if rank == 0:
                    print(f"[{name}] {rows} rows: one device {t_one['median_s'] * 1e3:.1f} ms, sharded over {world} "
                          f"{t_sh['median_s'] * 1e3:.1f} ms ({out[f'rows{rows}']['speedup']:.2f}x), max |diff| {diff:.2e}",
                          flush=True)
            results["models"][name] = out
            del model
    if rank == 0:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "sharded_check.json"), "w") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {args.out}/sharded_check.json", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
