"""Text-to-image with the shipped tiny models: prompts in, images and SDSV statistics out."""

from __future__ import annotations

import inspect
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from .._checks import as_float, as_int, as_list, as_seeds, as_str
from ..acceptance import AcceptanceTest
from ..forecast import NewtonForecast, SelfDraft, resolve_forecast
from ..guidance import ClassifierFreeGuidance
from ..intents import default_policy, intent_named
from ..policies import FixedInterval, StagePlan, WindowPolicy
from ..progress import check_progress
from ..solvers import SOLVERS
from ..result import SampleStats
from ..sampler import check_options, sample
from ..schedule import flow_match_sigmas
from .data import parse_prompt
from .model import TinyDiT
from .split import TinyDiTSplit
from .weights import MODEL_NAMES, load_model, shipped_path

DEFAULT_GUIDANCE = 3.0
#: the pipeline's own sampler, what the intents (:mod:`sdsv.intents`) start from: 50 Euler steps
DEFAULT_SOLVER, DEFAULT_STEPS = "euler", 50


class CompileUnavailable(RuntimeError):
    """``torch.compile`` could not build the models on this machine (e.g. no C++ compiler)."""


@dataclass
class TinyOutput:
    images: torch.Tensor  # [b, 3, 32, 32] in [0, 1]
    latents: torch.Tensor  # [b, 3, 32, 32], the model's space ([-1, 1] nominal)
    stats: SampleStats

    @classmethod
    def of(cls, res) -> "TinyOutput":
        return cls(images=((res.latents + 1) / 2).clamp(0, 1), latents=res.latents, stats=res.stats)


class GuidanceEmbedded:
    """Denoiser of a guidance-distilled draft: one forward at batch b gives the guided velocity.

    ``model`` is the TinyDiT or its compiled forward (same signature)."""

    def __init__(self, model, scale: float):
        self.model, self.scale = model, float(scale)

    def __call__(self, x, sigma, labels):
        g = torch.full((x.shape[0],), self.scale, device=x.device, dtype=torch.float32)
        return self.model(x, sigma, labels, guidance=g)


def _own_code(model: TinyDiT, name: str):
    """``model``'s forward behind a function with a code object of its own.

    Dynamo keeps its compiled graphs per code object. Compiled directly, the three models would
    share ``TinyDiT.forward``'s cache: one list of (by default at most 8) graphs whose guards are
    checked in turn on every call, where one model's new batch size also turns the batch
    dimension dynamic for the others. A code object per model keeps each model's graphs apart.
    """

    def forward(x, sigma, labels, guidance=None):
        return model(x, sigma, labels, guidance)

    return _renamed(forward, name)


class _CompiledSplit:
    """A :class:`TinyDiTSplit` whose two forwards run through ``torch.compile``, each behind a
    code object of its own (see :func:`_own_code`)."""

    sdsv_pure = True  # as TinyDiTSplit: never writes into its inputs

    def __init__(self, split: TinyDiTSplit, **options):
        def with_residual(x, sigma, labels, guidance=None):
            return split.forward_with_residual(x, sigma, labels, guidance)

        def with_forecast(x, sigma, bank, index, coeffs, labels, guidance=None):
            return split.forward_with_forecast(x, sigma, bank, index, coeffs, labels, guidance)

        self.forward_with_residual = torch.compile(_renamed(with_residual, "self_target"), **options)
        self.forward_with_forecast = torch.compile(_renamed(with_forecast, "self_draft"), **options)


def _renamed(fn, name: str):
    code = fn.__code__.replace(co_name=f"forward_{name}")
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)


def _plain(model):
    def fn(x, sigma, labels):
        return model(x, sigma, labels)

    return fn


class TinyPipeline:
    """The target and its drafts with the project's own trained weights: ``"self"``, the target
    forecasting its own blocks (no weights; the default), and the trained ``lite`` and ``svd``."""

    #: the step rule and step count of the pipeline's own sampler
    own_solver, own_steps = DEFAULT_SOLVER, DEFAULT_STEPS
    #: what a prompt looks like, for messages
    prompt_form = "'a <colour> <shape>'"

    def __init__(self, models: dict[str, TinyDiT]):
        if "target" not in models:
            raise ValueError("a TinyPipeline needs at least the target model")
        self.models = models
        # name -> torch.compile'd forward of that model, filled by compile()
        self.compiled: dict[str, Callable] = {}
        self.compiled_split: _CompiledSplit | None = None

    @classmethod
    def from_pretrained(cls, weights_dir: str | Path | None = None, names: Sequence[str] = MODEL_NAMES) -> "TinyPipeline":
        return cls({n: load_model(shipped_path(n, weights_dir)) for n in names})

    @property
    def target(self) -> TinyDiT:
        return self.models["target"]

    @classmethod
    def intent_defaults(cls, intent: str) -> tuple[str, int]:
        """``(solver, steps)`` of a call with ``intent`` that names neither (:mod:`sdsv.intents`)."""
        i = intent_named(intent)
        return i.solver_for(cls.own_solver), i.num_steps(cls.own_steps)

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        return torch.tensor([parse_prompt(p) for p in prompts], dtype=torch.long)

    def calibration_runs(self, prompts: Sequence[str], seed: int, num_steps: int | None,
                         call_kwargs: dict) -> "TinyCalibrationRuns":
        """What :func:`sdsv.calibrate` compares on this pipeline (:class:`sdsv.calibrate.CalibrationRuns`)."""
        return TinyCalibrationRuns(self, prompts, seed, num_steps, call_kwargs)

    def denoiser(self, name: str, guidance: float = DEFAULT_GUIDANCE):
        """The sampler-facing callable ``(x, sigma, labels) -> v`` of one model at one guidance scale."""
        if name not in self.models:
            raise ValueError(f"no model {name!r} loaded; have {sorted(self.models)}")
        model = self.models[name]
        forward = self.compiled.get(name, model)
        if model.cfg.guidance_embed:
            return GuidanceEmbedded(forward, guidance)
        null = torch.tensor(model.null_labels)
        return ClassifierFreeGuidance(_plain(forward), guidance, {"labels": null})

    def self_draft(self, order: int | None = None, forecast: NewtonForecast | None = None) -> SelfDraft:
        """The target as its own draft: embedding, conditioning and output layer computed, the
        eight blocks forecast from the last target evaluations (:mod:`sdsv.forecast`); compiled
        when the pipeline is."""
        split = self.compiled_split or TinyDiTSplit(self.target)
        return SelfDraft(split, order=order, forecast=forecast)

    def self_denoisers(self, self_draft: SelfDraft, guidance: float = DEFAULT_GUIDANCE):
        """The sampler-facing ``(target, draft)`` of a self-draft at one guidance scale."""
        null = {"labels": torch.tensor(self.target.null_labels)}
        return (ClassifierFreeGuidance(self_draft.target, guidance, null),
                ClassifierFreeGuidance(self_draft.draft, guidance, null))

    def compile(self, guidance: float = DEFAULT_GUIDANCE, **options) -> "TinyPipeline":
        """Run every model through ``torch.compile`` (inductor; ``options`` go to it).

        At batch 1 on a CPU these models are small enough that eager PyTorch spends a large share
        of each forward dispatching a few hundred small operators one by one; inductor fuses the
        element-wise ones (modulation, GELU, gated residuals) into a few generated C++ loops.
        That overhead is not part of what a draft model saves (on a GPU at Flux size it is
        negligible), so measuring both the target and the drafts compiled shows their cost
        ratio closer to their compute ratio. Compilation happens here, with one forward per model
        at batch 1 (2 rows with guidance), so a missing C++ compiler fails here and not mid-run;
        a new batch size later recompiles once (dynamic batch dimension), e.g. the verification
        batch. Raises :class:`CompileUnavailable` (models left eager) when inductor cannot
        build on this machine.
        """
        compiled = {n: torch.compile(_own_code(m, n), **options) for n, m in self.models.items()}
        old, self.compiled = (self.compiled, self.compiled_split), compiled
        self.compiled_split = _CompiledSplit(TinyDiTSplit(self.target), **options)
        cfg = self.target.cfg
        try:
            with torch.inference_mode():  # the mode __call__ samples in (dynamo guards on it)
                x = torch.zeros(1, cfg.channels, cfg.image_size, cfg.image_size)
                sigma = torch.full((1,), 0.5)
                labels = self.encode(["a red circle"])
                for name in self.models:
                    self.denoiser(name, guidance)(x, sigma, labels=labels)
            # the self-draft's two graphs: a short cached run calls both
            self("a red circle", policy=FixedInterval(4, every=2, warmup=2), draft="self", guidance=guidance)
        except Exception as e:  # inductor raises several types (no compiler, unsupported platform)
            self.compiled, self.compiled_split = old
            why = " ".join(str(e).split())[:300]  # inductor's messages span many lines
            raise CompileUnavailable(f"torch.compile failed, models stay eager: {type(e).__name__}: {why}") from e
        return self

    def compile_or_warn(self, guidance: float = DEFAULT_GUIDANCE) -> str:
        """:meth:`compile`, or a warning on stderr and eager models where it cannot build; returns
        how the models run, for result headers."""
        try:
            self.compile(guidance=guidance)
        except CompileUnavailable as e:
            print(f"warning: {e}", file=sys.stderr)
            return "eager (torch.compile unavailable)"
        return "torch.compile (inductor)"

    def prompt_list(self, prompts) -> list[str]:
        """``prompts`` (one str or a list of them) as a list; a clear error for anything else."""
        if isinstance(prompts, (list, tuple)) and not prompts:
            raise ValueError(f"no prompts given: pass one prompt or a list of them ({self.prompt_form})")
        return as_list("prompts", prompts, (str,), f"a prompt ({self.prompt_form})")

    @staticmethod
    def noise(num: int, seed: int | Sequence[int]) -> torch.Tensor:
        """One generator per image (seed + i), so an image does not depend on its batch mates."""
        seeds = as_seeds("seed", seed, num)
        return torch.stack([torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(s)) for s in seeds])

    @torch.inference_mode()
    def __call__(
        self,
        prompts: Sequence[str] | str,
        *,
        num_steps: int | None = None,
        policy: WindowPolicy | None = None,
        draft: str = "self",
        forecast_order: int | None = None,
        forecast: NewtonForecast | None = None,
        solver: str | None = None,
        intent: str = "faithful",
        verify: str | None = None,
        accept: AcceptanceTest | None = None,
        guidance: float = DEFAULT_GUIDANCE,
        seed: int | Sequence[int] = 0,
        shift: float = 1.0,
        progress: bool | dict = False,
    ) -> TinyOutput:
        """Images for ``prompts`` ('a <colour> <shape>'), one seed per image.

        ``draft``: ``"self"`` (the default, as :func:`sdsv.enable`'s: the target forecasting its
        own blocks with ``forecast``, a :class:`~sdsv.forecast.NewtonForecast`, or the polynomial of
        ``forecast_order`` 0/1/2; by default the intent's: damped when faithful, the line when
        accurate) or a trained draft, ``"lite"`` or ``"svd"`` (~20 dB from the target).
        ``policy``: any window policy; by default (:func:`sdsv.intents.default_policy`) with the self-draft the
        ``intent``'s error-controlled windows, with a trained draft the paper's multi-stage plan.
        ``intent`` (:mod:`sdsv.intents`) sets what is not given: ``"faithful"`` (default) stays
        close to the pipeline's own sampler, Euler with 50 steps, with
        :meth:`ErrorControlled.faithful` windows; ``"accurate"`` gets closer to the model's exact
        sample for fewer target calls: UniPC with 26 steps and
        :meth:`ErrorControlled.accurate` windows (short, corrected) (docs/tail.md measures both against both
        yardsticks). ``solver``: ``"euler"``, ``"dpm++2m"`` (DPM-Solver++(2M)) or ``"unipc"``, for
        every policy (:mod:`sdsv.solvers`).
        """
        c = self.check_call(prompts, num_steps=num_steps, policy=policy, draft=draft, forecast_order=forecast_order,
                            forecast=forecast, solver=solver, intent=intent, verify=verify, accept=accept,
                            guidance=guidance, seed=seed, shift=shift, progress=progress)
        policy, draft, guidance = c.policy, c.draft, c.guidance
        self_draft = None
        if draft == "self" and policy.uses_draft:  # a target-only policy samples the plain target
            self_draft = self.self_draft(forecast=c.forecast)
            tgt, drf = self.self_denoisers(self_draft, guidance)
        else:
            tgt = self.denoiser("target", guidance) if policy.uses_target else None
            drf = self.denoiser(draft, guidance) if policy.uses_draft else None
        res = sample(tgt, drf, c.noise, c.sigmas, policy, verify=verify, accept=accept, progress=progress,
                     self_draft=self_draft, solver=c.solver, labels=c.labels)
        return TinyOutput.of(res)

    def check_call(self, prompts, *, num_steps=None, policy=None, draft="self", forecast_order=None, forecast=None,
                   solver=None, intent="faithful", verify=None, accept=None, guidance=DEFAULT_GUIDANCE, seed=0,
                   shift=1.0, progress=False) -> types.SimpleNamespace:
        """:meth:`__call__`'s arguments checked (a one-line error naming the first bad one) and
        resolved, before anything is sampled: the policy, solver, labels, noise and sigmas."""
        default_solver, default_steps = self.intent_defaults(intent)
        solver = default_solver if solver is None else as_str("solver", solver)
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
        prompts = self.prompt_list(prompts)
        if num_steps is not None:
            num_steps = as_int("num_steps", num_steps, minimum=1)
        if policy is not None and not isinstance(policy, WindowPolicy):
            raise TypeError(f"policy must be a window policy (sdsv.ErrorControlled, StagePlan, FixedInterval), got "
                            f"{type(policy).__name__}")
        if policy is not None and num_steps is not None and policy.num_steps != num_steps:
            raise ValueError(f"num_steps={num_steps} but the policy {policy.name!r} has {policy.num_steps} steps: "
                             "pass one of them (the policy's count is used)")
        as_str("draft", draft)
        forecast = resolve_forecast(forecast, forecast_order, "forecast_order", intent_named(intent).forecast)
        guidance = as_float("guidance", guidance)
        if guidance < 0:
            raise ValueError(f"guidance must be >= 0, got {guidance:g}")
        check_options(None, verify, accept)  # their types; sample() says if the policy ignores them
        check_progress(progress)
        if policy is None:
            policy = default_policy(intent, self_draft=draft == "self")(default_steps if num_steps is None else num_steps)
        drafts = ["self", *(n for n in self.models if n != "target")]
        if policy.uses_draft and draft not in drafts and draft != "target":  # a policy without draft steps needs none
            raise ValueError(f"draft must be one of {', '.join(map(repr, drafts))} (the models loaded), got {draft!r}")
        return types.SimpleNamespace(
            policy=policy, draft=draft, forecast=forecast, solver=solver, guidance=guidance,
            labels=self.encode(prompts), noise=self.noise(len(prompts), seed), sigmas=flow_match_sigmas(policy.num_steps, shift))


class TinyCalibrationRuns:
    """:func:`sdsv.calibrate` on the tiny pipeline (and its video subclass): the reference is the
    target alone with the call's solver (the pipeline's own sampler), each policy tried runs the
    self-draft; image ``i`` uses seed ``seed + i``; ``num_steps`` defaults to the pipeline's own 50.
    The prompts and the call's arguments are checked here, before anything is sampled."""

    def __init__(self, pipe: TinyPipeline, prompts: Sequence[str], seed: int, num_steps: int | None,
                 call_kwargs: dict):
        for k in ("policy", "draft", "seed", "num_steps"):
            if k in call_kwargs:
                raise TypeError(f"calibrate sets {k}= itself; pass the others (solver=, guidance=, ...)")
        unknown = sorted(set(call_kwargs) - set(inspect.signature(TinyPipeline.__call__).parameters) - {"self"})
        if unknown:
            raise TypeError(f"calibrate: {type(pipe).__name__} takes no argument {', '.join(unknown)}")
        self.pipe, self.prompts, self.kwargs = pipe, pipe.prompt_list(prompts), call_kwargs
        pipe.encode(self.prompts)  # a prompt the models do not understand, refused now
        self.num_steps = pipe.own_steps if num_steps is None else num_steps
        self.seeds = as_seeds("seed", seed, len(self.prompts))
        # the call's own checks (solver, guidance, intent, ...), on a policy that samples nothing yet
        self.pipe.check_call(self.prompts, policy=StagePlan.target_only(self.num_steps), draft="self",
                             seed=self.seeds, **self.kwargs)

    def run(self, policy: WindowPolicy) -> tuple[torch.Tensor, float]:
        out = self.pipe(self.prompts, policy=policy, draft="self", seed=self.seeds, **self.kwargs)
        images = out.images if isinstance(out, TinyOutput) else out.frames  # a video pipeline's clips
        return images, out.stats.target_evals / len(self.prompts)

    def reference(self) -> tuple[torch.Tensor, float]:
        return self.run(StagePlan.target_only(self.num_steps))  # the plain target, as the pipeline samples without sdsv
