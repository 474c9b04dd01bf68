"""SHA-256 of the images of every `sdsv demo` row (eager models), to compare two source trees.

A change meant to move no number must leave every fingerprint as it was:

    PYTHONPATH=<old>/python:<old> python tools/demo_fingerprints.py > old.json
    PYTHONPATH=python:. python tools/demo_fingerprints.py > new.json
    python tools/demo_fingerprints.py --diff old.json new.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys


def fingerprints(steps: int, prompts: list[str], verify: str) -> dict:
    import torch

    from sdsv.acceptance import AcceptanceTest
    from sdsv.demo import DEFAULT_METRIC, DEFAULT_TAU, methods_for
    from sdsv.tiny.pipeline import DEFAULT_GUIDANCE, TinyPipeline

    torch.set_num_threads(1)
    pipe = TinyPipeline.from_pretrained()
    out = {}
    with torch.inference_mode():
        for m in methods_for(steps, ["lite", "svd", "self"], "paper_default", verify,
                             AcceptanceTest(DEFAULT_METRIC, DEFAULT_TAU)):
            for seed, prompt in enumerate(prompts):
                img = pipe(prompt, seed=seed, guidance=DEFAULT_GUIDANCE, **m.pipeline_kwargs()).images
                out[f"{m.label} | {prompt}"] = hashlib.sha256(img.contiguous().numpy().tobytes()).hexdigest()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--prompts", nargs="+", default=["a red circle", "a blue triangle"])
    ap.add_argument("--verify", default="endpoints", choices=["endpoints", "full"])
    ap.add_argument("--diff", nargs=2, metavar=("OLD", "NEW"), help="compare two saved outputs instead")
    args = ap.parse_args()
    if args.diff:
        old, new = (json.load(open(p)) for p in args.diff)
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        print(f"{len(old)} / {len(new)} rows, {len(changed)} differ" + "".join(f"\n  {k}" for k in changed))
        return 1 if changed else 0
    print(json.dumps(fingerprints(args.steps, args.prompts, args.verify), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
