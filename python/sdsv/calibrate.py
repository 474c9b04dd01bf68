"""``sdsv.calibrate``: the fastest window policy that meets a quality target on your own prompts.

A policy's tolerance trades speed for fidelity along one curve, and where a user's prompts sit
on it depends on the model, the solver and the prompts themselves. ``calibrate`` measures it:
it samples the calibration prompts once with the pipeline's own full-step sampler (the
reference), then with the policy at a ladder of tolerances, from the loosest (fastest) to the
strictest, and returns the first that meets the target: a percentile of per-image PSNR against
the reference (the 5th by default: 95% of the calibration images at least that close). The
returned :class:`Calibration` holds the policy, what it measured and every tolerance tried;
``sdsv.enable(pipe, policy=cal.policy)`` or ``pipe(..., policy=cal.policy)`` uses it.

What ``calibrate`` needs from a pipeline is :class:`CalibrationRuns`: the reference and one run
per policy. A pipeline of your own provides them with a method ``calibration_runs(prompts,
seed, num_steps, call_kwargs)`` (the tiny pipeline does); any other pipeline is taken for a
diffusers pipeline that :func:`sdsv.enable` supports (:mod:`sdsv.integrations.hf_diffusers.calibration`).

A target met on the calibration seeds is a measurement on those images, not a guarantee on
others: the figure on unseen seeds scatters around it (``docs/tail.md`` reports how much), so
calibrate on prompts like the ones you will run, and on more of them for a low percentile.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import torch

from ._checks import as_float, as_floats, as_int, as_list, as_seeds
from .metrics import percentile, psnr
from .policies import ErrorControlled, WindowPolicy

#: tolerances tried by default, loosest (fastest) first
DEFAULT_TOLS = (0.6, 0.45, 0.3, 0.25, 0.2, 0.15, 0.1, 0.07, 0.05)


class CalibrationRuns(Protocol):
    """The runs :func:`calibrate` compares, on one list of prompts and seeds: each returns
    ``(images [n, ...] in [0, 1], target evaluations per image)``. ``num_steps``: the step count
    of the reference and of every policy tried; ``self_draft`` (optional, True when absent): whether
    the policies run with the forecast self-draft."""

    num_steps: int

    def reference(self) -> tuple[torch.Tensor, float]:
        """The pipeline's own ``num_steps``-step sampler, without speculation."""

    def run(self, policy: WindowPolicy) -> tuple[torch.Tensor, float]:
        """The pipeline sampling with ``policy``."""


class CalibrationError(ValueError):
    """No tolerance tried met the quality target; the message names the best figure reached."""


@dataclass(frozen=True)
class Trial:
    """One tolerance tried: its target evaluations per image and its per-image PSNR summary."""

    tol: float
    target_evals: float
    mean: float
    quantile: float
    worst: float


@dataclass
class Calibration:
    """The result of :func:`calibrate`: ``policy`` (the fastest that met the target), the figure
    it reached (``quantile`` = the ``percentile``-th percentile PSNR, dB) and its cost, the
    reference's cost, and every :class:`Trial`."""

    policy: WindowPolicy
    tol: float
    target_psnr: float
    percentile: float
    quantile: float
    mean: float
    worst: float
    target_evals: float
    reference_evals: float
    images: int
    trials: list[Trial] = field(default_factory=list)

    @property
    def evals_ratio(self) -> float:
        """Reference target evaluations per image over the policy's: the speed-up in model calls."""
        return self.reference_evals / self.target_evals

    def __str__(self) -> str:
        lines = [f"calibrated on {self.images} images: tol {self.tol:g} meets p{self.percentile:g} >= "
                 f"{self.target_psnr:g} dB ({self.quantile:.2f} dB; mean {self.mean:.2f}, worst {self.worst:.2f}) "
                 f"at {self.target_evals:.1f} target evaluations per image ({self.evals_ratio:.2f}x fewer than "
                 f"the reference's {self.reference_evals:g})",
                 "   tol  evals/img  mean dB  p dB  worst dB"]
        lines += [f"{t.tol:6g}  {t.target_evals:9.2f}  {t.mean:7.2f}  {t.quantile:5.2f}  {t.worst:8.2f}" for t in self.trials]
        return "\n".join(lines)


def per_image_psnr(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """PSNR of each image (or video) in [0, 1] against its reference, ``[batch]``."""
    if images.shape != reference.shape or images.dim() < 2:
        raise ValueError(f"images {tuple(images.shape)} and reference {tuple(reference.shape)} must have one shape [batch, ...]")
    return psnr(images.flatten(1)[:, None, None], reference.flatten(1)[:, None, None])


def search(run: Callable[[WindowPolicy], tuple[torch.Tensor, float]], reference: torch.Tensor,
           reference_evals: float, make_policy: Callable[[float], WindowPolicy], target_psnr: float,
           percentile_q: float, tols: Sequence[float]) -> Calibration:
    """The ladder search behind :func:`calibrate`: ``run(policy) -> (images, target evaluations
    per image)``; the tolerances are tried loosest first and the first that meets the target wins."""
    trials: list[Trial] = []
    for tol in sorted({float(t) for t in tols}, reverse=True):
        policy = make_policy(tol)
        images, evals = run(policy)
        p = per_image_psnr(images, reference).tolist()
        q = percentile(p, percentile_q)
        trials.append(Trial(tol, evals, sum(p) / len(p), q, min(p)))
        if q >= target_psnr:
            return Calibration(policy, tol, target_psnr, percentile_q, q, trials[-1].mean, trials[-1].worst, evals,
                               reference_evals, len(p), trials)
    best = max(trials, key=lambda t: t.quantile)
    raise CalibrationError(
        f"no tolerance in {sorted(t.tol for t in trials)} reaches p{percentile_q:g} >= {target_psnr:g} dB on the "
        f"{reference.shape[0]} calibration images: the best was {best.quantile:.2f} dB (tol {best.tol:g}, "
        f"{best.target_evals:.1f} target evaluations per image; mean {best.mean:.2f} dB). Lower the target, try "
        "stricter tolerances, or use more steps")


def calibrate(pipe, prompts: Sequence[str], target_psnr: float, *, percentile: float = 5.0,
              num_steps: int | None = None, policy: Callable[[float, int], WindowPolicy] | None = None,
              tols: Sequence[float] = DEFAULT_TOLS, seed: int = 0, **call_kwargs) -> Calibration:
    """The fastest policy whose ``percentile``-th percentile PSNR against the pipeline's own
    ``num_steps``-step output reaches ``target_psnr`` dB on ``prompts`` (see the module docstring).

    ``pipe``: a pipeline with a ``calibration_runs`` method that returns its
    :class:`CalibrationRuns`, such as :class:`sdsv.tiny.pipeline.TinyPipeline` (``num_steps``
    default 50; ``call_kwargs`` such as ``solver=`` and ``guidance=`` go to every call, the
    self-draft drafts), or a diffusers pipeline that :func:`sdsv.enable` supports (``num_steps``
    default: the pipeline's ``num_inference_steps`` default; ``call_kwargs`` go to ``pipe(...)``,
    e.g. ``height``, ``width``, ``guidance_scale``; a prompt may be a dict of one call's
    arguments, such as ``prompt_embeds``; the cost is counted per image a call returns).
    ``policy(tol, num_steps)``: the policy family searched, a function that returns a window
    policy of ``num_steps`` steps (default: the faithful intent's windows,
    :meth:`~sdsv.ErrorControlled.faithful`, at each tolerance; uncorrected and with the last step
    the target's when a diffusers pipeline was enabled with a draft transformer, which corrected
    windows cannot use). ``tols``: the tolerances tried (one number or several). ``seed``: image ``i``
    uses ``seed + i``. Every argument is checked, and every policy of the ladder built, before
    anything is sampled. Raises :class:`CalibrationError` when no tolerance meets the target.
    """
    if pipe is None:
        raise TypeError("pipe must be a pipeline (a TinyPipeline, or a diffusers pipeline sdsv.enable supports), "
                        "got None")
    if isinstance(prompts, (list, tuple)) and not prompts:
        raise ValueError("prompts is empty: calibrate needs at least one prompt")
    prompts = as_list("prompts", prompts, (str, dict), "a prompt (a str, or a dict of one call's arguments)")
    target_psnr = as_float("target_psnr", target_psnr)
    percentile = as_float("percentile", percentile)
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {percentile:g}")
    tols = as_floats("tols", tols, positive=True)
    if num_steps is not None:
        num_steps = as_int("num_steps", num_steps, minimum=1)
    as_seeds("seed", seed, len(prompts))
    if isinstance(policy, WindowPolicy):
        raise TypeError(f"policy must be a function (tol, num_steps) -> window policy, the family searched, got a "
                        f"{type(policy).__name__} instance: pass e.g. policy=lambda tol, n: ErrorControlled(n, tol=tol)")
    if policy is not None and not callable(policy):
        raise TypeError(f"policy must be a function (tol, num_steps) -> window policy, got {type(policy).__name__}")

    runs_for = getattr(pipe, "calibration_runs", None)
    if runs_for is None:
        from .integrations.hf_diffusers.calibration import DiffusersAdapter
        runs: CalibrationRuns = DiffusersAdapter(pipe, prompts, seed, num_steps, call_kwargs)
    else:
        runs = runs_for(prompts, seed, num_steps, call_kwargs)
    if policy is None:
        policy = faithful_ladder if getattr(runs, "self_draft", True) else uncorrected_ladder
    n = runs.num_steps
    ladder = {tol: ladder_policy(policy, tol, n) for tol in sorted(set(tols), reverse=True)}
    if not any(p.uses_draft for p in ladder.values()):
        raise ValueError(f"num_steps={n} leaves no policy of the ladder a step to speculate on "
                         f"({ladder[max(ladder)].describe()} samples the target alone, as the reference does): "
                         "calibrate with more steps")
    reference, reference_evals = runs.reference()
    return search(runs.run, reference, reference_evals, ladder.__getitem__, target_psnr, percentile, list(ladder))


def faithful_ladder(tol: float, n: int) -> WindowPolicy:
    """The faithful intent's windows at ``tol`` (calibrate's default family with a self-draft)."""
    return dataclasses.replace(ErrorControlled.faithful(n), tol=tol)


def uncorrected_ladder(tol: float, n: int) -> WindowPolicy:
    """The faithful windows uncorrected, every step after them the target's: corrected windows need
    the self-draft's anchors, and a trained draft's last step was never measured alone (calibrate's
    default family with a draft transformer)."""
    return dataclasses.replace(ErrorControlled.faithful(n), tol=tol, correct=False, draft_last=0)


def ladder_policy(policy: Callable[[float, int], WindowPolicy], tol: float, n: int) -> WindowPolicy:
    """``policy(tol, n)``, checked: a window policy of ``n`` steps."""
    p = policy(tol, n)
    if not isinstance(p, WindowPolicy):
        raise TypeError(f"policy({tol:g}, {n}) returned {type(p).__name__}, expected a window policy of {n} steps")
    if p.num_steps != n:
        raise ValueError(f"policy({tol:g}, {n}) returned a policy of {p.num_steps} steps, not num_steps={n}: the "
                         "reference samples num_steps steps; build the policy from its second argument")
    return p
