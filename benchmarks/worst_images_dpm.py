"""Which images are worst, and does a controller setting fix them? Per-image PSNR on `sdsv eval`'s
256 images (prompts/seeds as Table 2) for the self-draft's error-controlled windows on
DPM-Solver++(2M) and variants, against DPM-Solver++(2M) alone at 20 steps; reference: 50 Euler
steps of the target. Eager models, batches of 32 (per-sample windows).

    python benchmarks/worst_images_dpm.py | tee benchmarks/results/worst_images_dpm.txt
"""

import time

import torch

from sdsv import ErrorControlled, StagePlan
from sdsv.demo import machine
from sdsv.evaluation.runner import balanced_prompts
from sdsv.metrics import psnr
from sdsv.tiny.pipeline import TinyPipeline


torch.set_num_threads(2)
print(f"machine: {machine()}; date {time.strftime('%Y-%m-%d')}", flush=True)
pipe = TinyPipeline.from_pretrained(names=["target"])
prompts = balanced_prompts(256); seeds = [10000 + i for i in range(256)]
def run(**kw):
    out = []
    for i in range(0, 256, 32):
        out.append(pipe(prompts[i:i+32], seed=seeds[i:i+32], **kw).images)
    return torch.cat(out)
with torch.inference_mode():
    t0=time.time(); ref = run(policy=StagePlan.target_only(50)); print("ref", time.time()-t0, flush=True)
    variants = {
        "dpm20": dict(policy=StagePlan.target_only(20), solver="dpm++2m"),
        "ec-dpm25 (current)": dict(policy=ErrorControlled(25, tol=0.2, k_min=1, k_init=1, k_max=2), draft="self", solver="dpm++2m"),
        "ec-dpm25 warmup4": dict(policy=ErrorControlled(25, tol=0.2, k_min=1, k_init=1, k_max=2, warmup=4), draft="self", solver="dpm++2m"),
        "ec-dpm25 x0_rms .04": dict(policy=ErrorControlled(25, tol=0.04, k_min=1, k_init=1, k_max=2, error_metric="x0_rms"), draft="self", solver="dpm++2m"),
        "ec-dpm25 tol .1": dict(policy=ErrorControlled(25, tol=0.1, k_min=1, k_init=1, k_max=2), draft="self", solver="dpm++2m"),
        "ec-dpm25 reject .4": dict(policy=ErrorControlled(25, tol=0.2, k_min=1, k_init=1, k_max=2, reject_above=0.4), draft="self", solver="dpm++2m"),
    }
    for name, kw in variants.items():
        t0=time.time(); im = run(**kw)
        p = torch.tensor([float(psnr(im[i:i+1], ref[i:i+1])) for i in range(256)])
        worst = p.argsort()[:5].tolist()
        print(f"{name:24s} mean {p.mean():.2f} worst {p.min():.2f}  5th-worst {p.sort().values[4]:.2f}  worst idx {worst}  ({time.time()-t0:.0f}s)", flush=True)
