"""Which quantity the self-draft should forecast on the trained tiny Flux, through ``sdsv.enable``
(docs/tail.md, "Forecasts"; docs/peers.md, "sdsv's cache beside TaylorSeer").

On the peers run, diffusers' TaylorSeer in lite mode kept a 5th percentile 1.4-1.9 dB above sdsv's
own cache at the same steps (every 3 and every 2). Both forecast with the line through the last two
anchors (TaylorSeer's finite differences are in step index, sdsv's in sigma: the same line here,
where the tiny Flux's 50 sigmas are evenly spaced). What differs is the **quantity**: TaylorSeer
lite forecasts the transformer's output (``proj_out``); sdsv the image tokens' deep residual before
``norm_out``, its draft then running ``norm_out`` / ``proj_out`` on the forecast hidden state, and
the embeddings and conditioning around it.

This script runs both quantities at TaylorSeer's steps (intervals 5 / 3 / 2) beside TaylorSeer
lite itself, UniPC alone with 12 of 50 steps (the accurate intent's yardstick), the faithful and
accurate intents with the output forecast beside their defaults, and
the previous faithful default's windows (uncorrected, tol 0.3, k <= 4) and the ones chosen for
corrected windows on the tiny DiT (tol 0.45, k <= 5), corrected with either prediction (draft or
velocity), and the draft-predicted ones under the controller's exponent 1/3 (order 2, tol 0.5),
sized by the error in x0 (tol 0.27), and with their last step drafted (tol 0.45 and 0.42; the
faithful default's windows now: the x0 error at tol 0.3, the last step drafted).
The output forecast is a lab split around the library's (:class:`OutputForecastSplit`: the target's
call records each row's velocity, the draft runs nothing of the model). Images: the peers run's
calibration seeds and the ones after them (``PEER_SEED + 1056 + i``), never its report seeds; both
yardsticks as in the peers run.

    python benchmarks/flux_forecasts.py --images 96    # ~13 min on 2 cores (25 rows x 96 images)
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import torch

import sdsv_kernels
from sdsv import ErrorControlled, StagePlan
from sdsv.forecast import LINE

OUT = Path("benchmarks/results/flux_forecasts")
REPORT_IMAGES = 1056  # the peers run's report images: these seeds start after them


class OutputForecastSplit:
    """A :class:`~sdsv.integrations.hf_diffusers.split.TransformerSplit` forecasting the model's
    output instead of its deep residual: the target's call records the velocity of every row; the
    draft returns the forecast velocity and runs nothing of the model (TaylorSeer's lite mode)."""

    sdsv_pure = True

    def __init__(self, split):
        self.split = split

    def with_denoiser(self, denoiser) -> "OutputForecastSplit":
        return OutputForecastSplit(self.split.with_denoiser(denoiser))

    def attached(self):
        return self.split.attached()

    def model_rows(self, x, **cond) -> int:
        return self.split.model_rows(x, **cond)

    def forward_with_residual(self, x, sigma, **cond):
        v = self.split.denoiser(x, sigma, **cond)  # the split's hooks pass everything through here
        return v, v

    def forward_with_forecast(self, x, sigma, bank, index, coeffs, **cond):
        zeros = bank.new_zeros((x.shape[0], *bank.shape[1:]))
        return sdsv_kernels.gather_combine(zeros, bank, index, coeffs).to(x.dtype)


@contextlib.contextmanager
def output_forecast():
    """Inside: the self-draft of every pipeline under ``sdsv.enable`` forecasts the model's output."""
    from sdsv.integrations.hf_diffusers import hook

    own = hook.SDSVCall.self_draft_split
    hook.SDSVCall.self_draft_split = lambda call: OutputForecastSplit(own(call))
    try:
        yield
    finally:
        hook.SDSVCall.self_draft_split = own


def rows_for(pipe, steps: int):
    """The 50-step pipeline, the converged reference, TaylorSeer lite at 5 / 3 / 2, sdsv's cache at
    TaylorSeer's steps forecasting either quantity, and the two intents forecasting either."""
    import sdsv
    from sdsv.evaluation import peers as P
    from sdsv.intents import INTENTS

    rows = [P.pipeline_rows(steps)[0], P.converged_row(steps)]
    rows += [r for r in P.diffusers_rows(None, steps) if "lite" in r.name]
    lab = contextlib.ExitStack()  # the output forecast, from a row's attach to its detach

    def attacher(quantity, **enable):
        def attach(p):
            if quantity == "output":
                lab.enter_context(output_forecast())
            sdsv.enable(p, **enable)
        return attach

    def detach(p):
        sdsv.disable(p)
        lab.close()

    for q in ("residual", "output"):
        rows += [P.Row(f"sdsv cache every {i} at TaylorSeer's steps (line): {q}", q, steps, detach=detach,
                       attach=attacher(q, policy=P.TaylorSeerSteps(steps, every=i, warmup=3), forecast=LINE))
                 for i in (5, 3, 2)]
    # the accurate intent's yardstick: its solver (UniPC) alone with 12 of 50 steps, through sdsv's sampler
    few = max(2, round(0.24 * steps))
    rows.append(P.Row(f"UniPC alone, {few} steps (sdsv's sampler)", "solver", few, detach=detach,
                      attach=attacher("residual", intent="accurate", policy=StagePlan.target_only)))
    for name in ("faithful", "accurate"):
        n = INTENTS[name].num_steps(steps)
        rows += [P.Row(f"sdsv {name} ({n} steps): {q}", f"intent, {q}", n, attach=attacher(q, intent=name),
                       detach=detach, key=P.intent_key(name, n)) for q in ("residual", "output")]
    # the faithful default's windows uncorrected, and corrected with each prediction (docs/tail.md,
    # "Corrected windows"); the corrected windows in the tolerance chosen for them on the tiny DiT too
    for label, policy in (("uncorrected, tol 0.3, k<=4 (the previous faithful default)", ErrorControlled(steps, tol=0.3)),
                          ("corrected, velocity-predicted, tol 0.3, k<=4",
                           ErrorControlled(steps, tol=0.3, correct=True, predict="velocity")),
                          ("corrected, velocity-predicted, tol 0.45, k<=5",
                           ErrorControlled(steps, tol=0.45, k_max=5, correct=True, predict="velocity")),
                          ("corrected, draft-predicted, tol 0.3, k<=4", ErrorControlled(steps, tol=0.3, correct=True)),
                          ("corrected, draft-predicted, tol 0.45, k<=5",
                           ErrorControlled(steps, tol=0.45, k_max=5, correct=True)),
                          ("corrected, draft-predicted, controller order 2, tol 0.5, k<=5",
                           ErrorControlled(steps, tol=0.5, k_max=5, order=2, correct=True)),
                          ("corrected, draft-predicted, x0 error, tol 0.27, k<=5",
                           ErrorControlled(steps, tol=0.27, k_max=5, correct=True, error_metric="x0_rms")),
                          ("corrected, draft-predicted, tol 0.45, k<=5, the last step drafted",
                           ErrorControlled(steps, tol=0.45, k_max=5, correct=True, draft_last=1)),
                          ("corrected, draft-predicted, tol 0.42, k<=5, the last step drafted",
                           ErrorControlled(steps, tol=0.42, k_max=5, correct=True, draft_last=1))):
        rows.append(P.Row(f"sdsv {label}: residual", "windows, residual", steps, attach=attacher("residual", policy=policy),
                          detach=detach, key=policy.describe()))
    return rows


COLUMNS = [("method", "method", "s"), ("deep_evals", "deep evals / image", ".1f"),
           ("fid_mean", "fid. mean", ".2f"), ("fid_p5", "fid. p5", ".2f"), ("fid_worst", "fid. worst", ".2f"),
           ("acc_mean", "acc. mean", ".2f"), ("acc_p5", "acc. p5", ".2f"), ("acc_worst", "acc. worst", ".2f")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.images < 1 or args.batch < 1 or args.steps < 4:
        ap.error("--images and --batch must be >= 1, --steps >= 4")
    torch.set_num_threads(args.threads)
    from sdsv.evaluation import peers as P
    from sdsv.evaluation.report import md_table, provenance
    from sdsv.evaluation.runner import balanced_prompts
    from sdsv.tiny.flux.components import PIPELINE_DIR, load_pipeline

    pipe = load_pipeline(PIPELINE_DIR)
    pipe.set_progress_bar_config(disable=True)
    first = P.PEER_SEED + REPORT_IMAGES
    prompts = balanced_prompts(REPORT_IMAGES + args.images)[REPORT_IMAGES:]
    seeds = [first + i for i in range(args.images)]
    rows = rows_for(pipe, args.steps)
    runs = P.run_rows({"main": pipe}, rows, prompts, seeds, args.batch, desc="flux forecasts",
                      cache=args.out / "cache")
    table = P.summarise(rows, runs, rows[0].name, rows[1].name, P.macs_per_evaluation(pipe))
    meta = {"images": args.images, "batch": args.batch, "steps": args.steps, "seeds": [seeds[0], seeds[-1]],
            "provenance": provenance(None)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "flux_forecasts.json").write_text(json.dumps({"meta": meta, "rows": table}, indent=1))
    errors = [f"- {d['method']}: {d['error']}" for d in table if "error" in d]
    md = (f"## The self-draft's forecast on the tiny Flux: the residual or the output\n\n"
          f"{args.images} images at batch {args.batch}, seeds {seeds[0]}..{seeds[-1]} (the peers run's calibration "
          f"seeds and the ones after them; none is a report seed), {args.steps} steps; fidelity against the {args.steps}-step "
          f"pipeline, accuracy against DPM-Solver++(2M) at twice the steps; {meta['provenance']['machine']}; "
          f"{meta['provenance']['versions']}\n\n{md_table(table, COLUMNS)}\n"
          + ("\nRows that could not run:\n" + "\n".join(errors) + "\n" if errors else ""))
    (args.out / "flux_forecasts.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
