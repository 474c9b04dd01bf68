"""``sdsv.enable(pipe, draft=...)``: the pipeline's plain ``pipe(...)`` call samples with SDSV.

How the hook works (and why this one)
-------------------------------------
``enable`` swaps the pipeline instance's class for a subclass whose ``__call__`` wraps the
original (same signature, same docstring); ``disable`` swaps it back and deletes what ``enable``
added, so the pipeline object is exactly as before. A call is one :class:`SDSVCall`; the
pipeline runs its own ``__call__`` from start to end:

1. **The pipeline's own preamble, unchanged**: input checks, prompt encoding,
   ``generator``-driven latents and their packing, the scheduler's shifted sigmas, the guidance
   embedding, position ids. Its transformer calls of the first step are *recorded* instead of
   run, by a ``ModelHook`` in the transformer's own diffusers ``HookRegistry``
   (:class:`~.registry.FirstStepCapture`; no model forward is spent on them).
2. **SDSV, inside the first scheduler step.** For the call, the pipeline's ``scheduler`` is
   :class:`_SamplingScheduler`: the pipeline's scheduler (or its Euler conversion) for everything
   but ``step``; its first ``step`` removes the capture, samples the whole schedule with
   :func:`sdsv.sample` (the recorded calls become the target's and draft's denoisers,
   :mod:`.denoisers`, and the per-sample conditioning), sets the pipeline's ``interrupt`` and
   returns the final latents.
3. **The pipeline's own end**: its loop skips the remaining steps (``if self.interrupt:
   continue``: Flux, Wan and SD3 pipelines all honour it) and then decodes those latents as it
   always does (unpacking, VAE scaling/shift, ``vae.decode``, post-processing, model offload),
   returning its own output class. sdsv copies no part of it.

Recording the real calls, rather than re-implementing each pipeline's preamble, keeps every
argument the pipeline supports working as it does there, and a self-check compares the
timesteps the pipeline passed with what the adapter would pass, so a changed convention fails
loudly instead of sampling wrong. Arguments SDSV cannot honour (per-step callbacks, IP-Adapter,
SD3 skip-layer guidance, Wan2.2's second transformer) are refused before anything runs.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
import threading
import weakref
from dataclasses import dataclass
from typing import Callable

import torch

from ..._checks import as_int
from ...acceptance import AcceptanceTest
from ...forecast import NewtonForecast, SelfDraft, resolve_forecast
from ...intents import INTENTS, default_policy, intent_named
from ...policies import WindowPolicy
from ...sampler import check_noise_and_sigmas, check_options, check_verification_options, sample_checked
from ...result import SampleStats
from ...errors import RefusedError
from .families import Family, check_hooks_survive_compile, check_no_cache, family_of, unwrap
from .split import TransformerSplit

_STATE = "_sdsv_state"
_SUBCLASSES: dict[type, type] = {}
# one lock per enabled pipeline, kept outside it (disable leaves nothing on the pipeline): calls
# on one pipeline from several threads run one after the other, and enable / disable wait for a
# running call (the self-draft's hooks and the scheduler stand-in are per pipeline, not per call)
_LOCKS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _call_lock(pipe) -> threading.RLock:
    with _LOCKS_GUARD:
        lock = _LOCKS.get(pipe)
        if lock is None:
            lock = _LOCKS[pipe] = threading.RLock()
        return lock


@dataclass
class SDSVConfig:
    """What ``enable`` was given. ``policy`` is a window policy or a function
    ``num_inference_steps -> policy`` (e.g. ``StagePlan.paper_default``). ``draft`` is a
    transformer or ``"self"`` (the forecast self-draft, with its ``forecast`` and ``head_blocks``)."""

    draft: torch.nn.Module | str
    policy: WindowPolicy | Callable[[int], WindowPolicy]
    accept: AcceptanceTest | None  # None: the sampler's default (verified windows only)
    verify: str | None
    convert_scheduler: bool
    forecast: NewtonForecast | None = None  # resolved at enable (None with a draft transformer)
    head_blocks: int = 0
    shard: bool = False
    intent: str = "faithful"


@dataclass
class _State:
    """What :func:`enable` keeps on the pipeline: its class, its family, its settings as given
    (``config``), those checked with their defaults (``verify``, ``accept``), and the self-draft's
    split of ``pipe.transformer`` (built once, its hooks attached until :func:`disable`; None with
    a draft transformer)."""

    original_class: type
    family: Family
    config: SDSVConfig
    verify: str
    accept: AcceptanceTest
    split: TransformerSplit | None


# ---- scheduler ------------------------------------------------------------------------------
def euler_scheduler_for(scheduler):
    """The :class:`FlowMatchEulerDiscreteScheduler` SDSV samples with for ``scheduler``.

    Returns ``scheduler`` itself when it already is one (deterministic, not inverted); builds
    ``FlowMatchEulerDiscreteScheduler(num_train_timesteps, shift=flow_shift)`` for a multistep
    flow-matching solver (UniPC/DPM-Solver with ``use_flow_sigmas`` and ``flow_prediction``, the
    Wan2.1 checkpoints' default); raises :class:`RefusedError` for anything else.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    cfg = scheduler.config
    kind = type(scheduler).__name__
    if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
        _refuse_non_deterministic_euler(cfg)
        return scheduler
    if cfg.get("use_flow_sigmas") and cfg.get("prediction_type") == "flow_prediction":
        if cfg.get("use_dynamic_shifting"):
            raise RefusedError(f"{kind} with use_dynamic_shifting cannot be converted; set "
                               "pipe.scheduler = FlowMatchEulerDiscreteScheduler(...) yourself")
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=cfg.get("num_train_timesteps", 1000),
                                               shift=float(cfg.get("flow_shift", 1.0)))
    raise RefusedError(
        f"{kind} is not a flow-matching Euler scheduler: SDSV's windows are Euler steps of a rectified flow "
        "(x_next = x + (sigma_next - sigma) v); use FlowMatchEulerDiscreteScheduler"
    )


def _refuse_non_deterministic_euler(cfg) -> None:
    """A FlowMatchEulerDiscreteScheduler config SDSV cannot step with: stochastic or inverted."""
    if cfg.get("stochastic_sampling"):
        raise RefusedError("FlowMatchEulerDiscreteScheduler(stochastic_sampling=True) re-noises every step; "
                           "SDSV's windows are deterministic Euler steps")
    if cfg.get("invert_sigmas"):
        raise RefusedError("FlowMatchEulerDiscreteScheduler(invert_sigmas=True) runs sigmas upwards; SDSV "
                           "needs sigmas decreasing to 0")


# DPMSolverMultistepScheduler settings under which its steps are sdsv's "dpm++2m" rule
# (sdsv.solvers.DPMSolver2M): data prediction, second order, midpoint, flow sigmas ending in 0
_DPM_2M = dict(algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint", prediction_type="flow_prediction",
               use_flow_sigmas=True, final_sigmas_type="zero", thresholding=False, euler_at_final=False,
               use_lu_lambdas=False, variance_type=None)


# UniPCMultistepScheduler settings under which its steps are sdsv's "unipc" rule (sdsv.solvers.UniPC):
# the Wan2.1 checkpoints' configuration (bh2, second order, data prediction, corrector at every step)
_UNIPC = dict(solver_order=2, solver_type="bh2", predict_x0=True, prediction_type="flow_prediction",
              use_flow_sigmas=True, lower_order_final=True, final_sigmas_type="zero", thresholding=False)


def solver_for(scheduler) -> str | None:
    """The sampler's step rule that IS ``scheduler``'s: ``"euler"`` for a deterministic
    FlowMatchEulerDiscreteScheduler, ``"dpm++2m"`` for DPMSolverMultistepScheduler as DPM-Solver++(2M)
    on flow sigmas (:data:`_DPM_2M`), ``"unipc"`` for UniPCMultistepScheduler as Wan ships it
    (:data:`_UNIPC`); None when the sampler has no such rule."""
    kind = type(scheduler).__name__
    cfg = scheduler.config
    if kind == "FlowMatchEulerDiscreteScheduler":
        _refuse_non_deterministic_euler(cfg)
        return "euler"
    if kind == "DPMSolverMultistepScheduler" and all(cfg.get(k, v) == v for k, v in _DPM_2M.items()):
        return "dpm++2m"
    if (kind == "UniPCMultistepScheduler" and all(cfg.get(k, v) == v for k, v in _UNIPC.items())
            and not cfg.get("disable_corrector") and getattr(scheduler, "solver_p", None) is None):
        return "unipc"
    return None


def scheduler_and_solver(s, convert: bool):
    """``(the scheduler a call runs its preamble with, the sampler's solver)`` for the pipeline's
    scheduler ``s``: itself and its own rule when the sampler has it (:func:`solver_for`); with
    ``convert``, the FlowMatchEulerDiscreteScheduler of the same schedule; else refused."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    solver = solver_for(s)
    if solver is not None:
        return s, solver
    euler = euler_scheduler_for(s)  # refuses what is not a flow-matching multistep solver either
    if not convert:
        kind = type(s).__name__
        why = f"this {kind} configuration is not one of the sampler's step rules (euler, dpm++2m, unipc)"
        raise RefusedError(
            f"{kind} is a multistep solver (flow_shift={s.config.get('flow_shift')}) and {why}. Pass "
            "convert_scheduler=True to sdsv.enable to sample with FlowMatchEulerDiscreteScheduler(shift=flow_shift) "
            "(the same shifted flow schedule; outputs differ by the solver), or set pipe.scheduler = "
            "DPMSolverMultistepScheduler(algorithm_type='dpmsolver++', solver_order=2, prediction_type="
            "'flow_prediction', use_flow_sigmas=True, flow_shift=...) to speculate on DPM-Solver++(2M)"
        )
    assert isinstance(euler, FlowMatchEulerDiscreteScheduler)
    return euler, "euler"


def _sharded(denoiser):
    """``enable(..., shard=True)``: the denoiser's rows spread over the ranks."""
    from ...distributed import ShardedDenoiser
    return ShardedDenoiser(denoiser)


def _sharded_split(split):
    from ...distributed import ShardedSplit
    return ShardedSplit(split)


# ---- enable / disable -----------------------------------------------------------------------
def enable(pipe, draft="self", *, policy=None, intent: str = "faithful", accept: AcceptanceTest | None = None,
           verify: str | None = None, convert_scheduler: bool = False, forecast: NewtonForecast | None = None,
           forecast_order: int | None = None, head_blocks: int = 0, shard: bool = False):
    """Make ``pipe(...)`` sample with SDSV: ``pipe.transformer`` is the target, ``draft`` the draft.

    ``draft``: ``"self"`` (the default; None means the same) — the **forecast self-draft**: the
    target's own embeddings, conditioning and output layer, its blocks replaced by a forecast of
    their residual from its last evaluations on the sample's path (``forecast``, a
    :class:`~sdsv.forecast.NewtonForecast`, or the polynomial of order ``forecast_order`` in sigma;
    by default the intent's: damped when faithful, the line when accurate; the first
    ``head_blocks`` blocks computed), no weights needed (:mod:`.split`); or a transformer of the
    same class and input/output contract as ``pipe.transformer`` (fewer blocks, quantized,
    distilled...; checked here). ``policy``: a window policy (:class:`~sdsv.StagePlan`,
    :class:`~sdsv.ErrorControlled`, :class:`~sdsv.FixedInterval`) or a function ``num_inference_steps -> policy``; default
    (:func:`sdsv.intents.default_policy`) the intent's ``ErrorControlled`` windows with the
    self-draft, ``StagePlan.paper_default`` with a draft transformer. ``intent``
    (:mod:`sdsv.intents`): ``"faithful"`` (default) samples with the pipeline scheduler's own step
    rule, close to the images the pipeline gives without sdsv; ``"accurate"`` steps
    UniPC over the scheduler's sigmas (with the self-draft, ``ErrorControlled.accurate``
    windows unless ``policy`` is given): closer to the model's exact sample for the cost, best
    with fewer steps than the pipeline's Euler default (26 of 50 on the tiny models,
    docs/tail.md); the step count stays the call's ``num_inference_steps``. ``accept``: the
    :class:`~sdsv.AcceptanceTest` (default ``x0_rms <= 0.3``). ``verify``: ``"endpoints"`` (the
    paper's speculative verification, the default) or ``"full"``. Both apply to verified windows
    only: a policy without them (the default self-draft windows, the cache) says they are ignored
    (:class:`~sdsv.IgnoredOptionWarning`). The pipeline's scheduler sets the step rule:
    ``FlowMatchEulerDiscreteScheduler`` samples with Euler steps, ``DPMSolverMultistepScheduler``
    configured as DPM-Solver++(2M) on flow sigmas with the sampler's ``"dpm++2m"`` (the same
    steps, speculated on), ``UniPCMultistepScheduler`` as the Wan2.1 checkpoints ship it with
    ``"unipc"``. ``convert_scheduler``: for another multistep flow solver configuration, sample
    with ``FlowMatchEulerDiscreteScheduler(shift=flow_shift)`` instead of refusing. ``shard``:
    inside a ``torch.distributed`` job (torchrun; every rank runs the same ``pipe(...)`` call),
    spread the rows of every model call over the ranks (:mod:`sdsv.distributed`); every rank gets
    the same result.

    After each call ``pipe.sdsv_stats`` holds the run's :class:`~sdsv.SampleStats`. Returns ``pipe``.
    """
    family_of(pipe)  # refuses what is not a supported pipeline (or diffusers missing) before anything else
    with _call_lock(pipe):  # a call running in another thread finishes first
        return _enable(pipe, draft, policy, intent, accept, verify, convert_scheduler, forecast, forecast_order,
                       head_blocks, shard)


def _enable(pipe, draft, policy, intent, accept, verify, convert_scheduler, forecast, forecast_order, head_blocks,
            shard):
    head_blocks = as_int("head_blocks", head_blocks, minimum=0)
    family = family_of(pipe)
    family.check_pipeline(pipe)
    state = pipe.__dict__.get(_STATE)
    draft = "self" if draft is None else draft
    intent_forecast = intent_named(intent).forecast
    if isinstance(draft, str):
        if draft != "self":
            raise ValueError(f"draft must be a transformer or 'self' (the forecast self-draft), got {draft!r}")
        forecast = resolve_forecast(forecast, forecast_order, "forecast_order", intent_forecast)
        split = None if state is None else state.split
        if split is not None and split.transformer is unwrap(pipe.transformer) and split.head_blocks == head_blocks:
            check_hooks_survive_compile(pipe.transformer)  # enabled again: the same split, its hooks kept
        else:
            split = family.self_draft_split(pipe.transformer, None, head_blocks)  # refuses an unknown block layout
    else:
        if forecast is not None or forecast_order is not None:
            raise ValueError("forecast and forecast_order set the self-draft's forecast; a draft transformer has none")
        family.check_draft(pipe.transformer, draft)
        split = None
    if policy is None:
        policy = default_policy(intent, self_draft=draft == "self")
    if not isinstance(policy, WindowPolicy) and not callable(policy):
        raise TypeError(f"policy must be a window policy or a function num_inference_steps -> policy, got "
                        f"{type(policy).__name__}")
    if isinstance(policy, WindowPolicy) and policy.corrects and draft != "self":
        raise ValueError(f"policy {policy.describe()} corrects its windows by interpolating the self-draft's anchors: "
                         "it needs draft='self', not a draft transformer")
    # checked once, here, for every call; a policy given as a function of the step count is checked at each call
    checked_verify, checked_accept = check_options(policy, verify, accept)
    scheduler_and_solver(pipe.scheduler, convert_scheduler)  # refuse a wrong scheduler now, not at the first call

    if shard:
        from ...distributed import rank_and_world
        rank_and_world(None)  # refuse now without a process group
    config = SDSVConfig(draft=draft, policy=policy, accept=accept, verify=verify, convert_scheduler=convert_scheduler,
                        forecast=forecast, head_blocks=head_blocks, shard=bool(shard),
                        intent=intent)
    original = type(pipe) if state is None else state.original_class  # enabled already: new settings, same class
    if state is not None and state.split is not None and state.split is not split:
        state.split.detach()
    if split is not None:
        split.attach()  # the self-draft's hooks, until disable
    object.__setattr__(pipe, _STATE, _State(original, family, config, checked_verify, checked_accept, split))
    if state is not None:
        return pipe
    pipe.__class__ = _sdsv_subclass(original)
    return pipe


def disable(pipe):
    """Undo :func:`enable`: the original class back, the self-draft's hooks, ``sdsv_stats`` and the
    SDSV settings removed."""
    if _STATE not in getattr(pipe, "__dict__", {}):
        return pipe
    with _call_lock(pipe):  # a call running in another thread finishes first
        state = pipe.__dict__.get(_STATE)
        if state is None:
            return pipe
        pipe.__class__ = state.original_class
        if state.split is not None:
            state.split.detach()
        pipe.__dict__.pop(_STATE, None)
        pipe.__dict__.pop("sdsv_stats", None)
        return pipe


def is_enabled(pipe) -> bool:
    return _STATE in pipe.__dict__


def enabled_config(pipe) -> SDSVConfig | None:
    """What :func:`enable` was last given for ``pipe`` (None when it is not enabled); passing its
    fields back to :func:`enable` restores those settings."""
    state = pipe.__dict__.get(_STATE)
    return None if state is None else state.config


def _sdsv_subclass(cls: type) -> type:
    sub = _SUBCLASSES.get(cls)
    if sub is None:
        original_call = cls.__call__

        @functools.wraps(original_call)
        def __call__(self, *args, **kwargs):
            with _call_lock(self):  # concurrent calls on one pipeline run one after the other
                if _STATE not in self.__dict__:  # disabled while this call waited: the plain pipeline
                    return original_call(self, *args, **kwargs)
                return SDSVCall(self, original_call, args, kwargs)()

        # same name, so messages, reprs and saved configs name the user's pipeline class
        sub = type(cls.__name__, (cls,), {"__call__": __call__, "__module__": cls.__module__,
                                          "__qualname__": cls.__qualname__, "_sdsv_enabled_class": True})
        _SUBCLASSES[cls] = sub
    return sub


# ---- one call -------------------------------------------------------------------------------
class _SamplingScheduler:
    """The scheduler a pipeline's call runs with under SDSV: ``scheduler`` (the pipeline's own, or
    its Euler conversion) for everything — ``set_timesteps``, ``timesteps``, ``sigmas``,
    ``config``, ``order`` — except ``step``: the first one hands ``sample_all(latents, timestep)``
    the initial latents and returns what it returns, the final latents, in the model output's
    dtype (as FlowMatchEuler and DPM-Solver steps return theirs: Wan's latents turn the
    transformer's dtype, as after the pipeline's own steps)."""

    def __init__(self, scheduler, sample_all):
        self.__dict__.update(_scheduler=scheduler, _sample_all=sample_all)

    def __getattr__(self, name):
        return getattr(self.__dict__["_scheduler"], name)

    def __setattr__(self, name, value):
        setattr(self.__dict__["_scheduler"], name, value)

    def step(self, model_output, timestep, sample, *args, return_dict: bool = True, **kwargs):
        latents = self._sample_all(sample, timestep).to(model_output.dtype)
        if return_dict:
            from diffusers.schedulers.scheduling_utils import SchedulerOutput
            return SchedulerOutput(prev_sample=latents)
        return (latents,)


_MISSING = object()


def _depth(frame) -> int:
    """How many frames ``frame`` is from the bottom of the stack."""
    n = 0
    while frame is not None:
        frame, n = frame.f_back, n + 1
    return n


def _progress_option(pipe):
    """The pipeline's progress-bar config as the sampler's ``progress=`` (its own total and unit)."""
    cfg = dict(getattr(pipe, "_progress_bar_config", None) or {})
    for k in ("total", "unit", "iterable"):
        cfg.pop(k, None)
    return cfg


def _resolve_policy(config: SDSVConfig, n: int, stacklevel: int) -> WindowPolicy:
    """The call's policy for ``n`` steps: ``enable`` checked a policy given as such; one given as a
    function of the step count is checked here, as what it returns is known only now (a warning
    names the frame ``stacklevel`` above this function's caller: the caller's ``pipe(...)``)."""
    policy = config.policy
    p = policy(n) if not isinstance(policy, WindowPolicy) else policy
    if not isinstance(p, WindowPolicy):
        raise TypeError(f"the policy function returned {type(p).__name__}, expected a window policy")
    if p is not policy:
        check_verification_options(p, config.verify, config.accept, stacklevel=stacklevel + 2)
    if p.num_steps != n:
        raise ValueError(f"policy {p.name!r} has {p.num_steps} steps but the pipeline runs {n}: pass "
                         "num_inference_steps to match, or a function num_inference_steps -> policy as policy")
    return p


class SDSVCall:
    """One ``pipe(...)`` call under SDSV, as one object: it runs the pipeline's own call with the
    first step's transformer calls captured and its scheduler's first step sampling (the module
    docstring): it reads the schedule, builds the target, draft and self-draft once, samples, and
    hands the final latents back to the pipeline, which decodes them."""

    def __init__(self, pipe, original_call, args: tuple, kwargs: dict):
        state: _State = pipe.__dict__[_STATE]
        self.pipe, self.original_call, self.args, self.kwargs = pipe, original_call, args, kwargs
        self.state, self.family, self.config = state, state.family, state.config
        bound = inspect.signature(original_call).bind(pipe, *args, **kwargs)
        bound.apply_defaults()
        self.call_args = {k: v for k, v in bound.arguments.items() if k != "self"}
        pipe.__dict__.pop("sdsv_stats", None)  # a refused or failed call leaves no stale statistics
        self.family.check_pipeline(pipe)
        if not isinstance(self.config.draft, str):  # a cache may have been attached to it since enable
            check_no_cache(self.config.draft, "the draft")
        self.family.refuse_call(pipe, self.call_args)
        self.scheduler, own_rule = scheduler_and_solver(pipe.scheduler, self.config.convert_scheduler)
        # Euler's timesteps are sigma * num_train_timesteps; the multistep schedulers store them as
        # integers (int64(sigma * 1000)): the denoisers then pass the scheduler's own per step
        self.own_timesteps = own_rule != "euler"
        self.solver = INTENTS[self.config.intent].solver_for(own_rule)
        self.progress = _progress_option(pipe)  # read before the call hides the pipeline's own bar
        self.stats: SampleStats | None = None
        self.split: TransformerSplit | None = None  # the self-draft's split of this call, when it forecasts

    def __call__(self):
        from .registry import CAPTURE_HOOK, FirstStepCapture, RegisteredHooks

        pipe = self.pipe
        self.depth = _depth(sys._getframe())
        saved = {name: pipe.__dict__.get(name, _MISSING) for name in ("scheduler", "_progress_bar_config")}
        bar = dict(getattr(pipe, "_progress_bar_config", None) or {})
        self.capture, self.captured = FirstStepCapture(), RegisteredHooks()
        try:
            self.captured.register(pipe.transformer, self.capture, CAPTURE_HOOK)
            # not via setattr: the pipeline's config stays untouched
            pipe.__dict__["scheduler"] = _SamplingScheduler(self.scheduler, self.sample)
            pipe.__dict__["_progress_bar_config"] = {**bar, "disable": True}  # the SDSV bar replaces it
            with torch.no_grad():
                out = self.original_call(pipe, *self.args, **self.kwargs)
        finally:
            self.captured.remove()
            for name, old in saved.items():
                if old is _MISSING:
                    pipe.__dict__.pop(name, None)
                else:
                    pipe.__dict__[name] = old
            if self.stats is not None:
                pipe._interrupt = False  # as every call of the pipeline ends without a callback's interrupt
        # no step taken (0 steps): the pipeline's result stands
        pipe.__dict__["sdsv_stats"] = SampleStats() if self.stats is None else self.stats
        return out

    def schedule(self, latents: torch.Tensor, timestep) -> tuple[torch.Tensor, torch.Tensor]:
        """The scheduler's sigmas and timesteps, checked against what the sampler derives."""
        dev = latents.device
        sigmas, timesteps = self.scheduler.sigmas.to(dev), self.scheduler.timesteps.to(dev)
        check_noise_and_sigmas(latents, sigmas)  # NaN or rising sigmas named as such, before the timestep check
        n = sigmas.numel() - 1
        expected = sigmas[:-1] * int(self.scheduler.config.num_train_timesteps)
        if timesteps.numel() != n or not (torch.equal(timesteps, expected) or self.own_timesteps and bool(
                ((timesteps.to(torch.float64) - expected.to(torch.float64)).abs() < 1.0).all())):
            raise RefusedError("the scheduler's timesteps are not sigmas * num_train_timesteps (custom timesteps?); "
                               "SDSV derives each row's timestep from its sigma")
        if not torch.equal(torch.as_tensor(timestep, device=dev).float().reshape(()), timesteps[0]):
            raise RefusedError("the pipeline did not start at the schedule's first step (img2img strength?); "
                               "only full text-to-image/video sampling is supported")
        return sigmas, timesteps

    def models(self, policy: WindowPolicy, make, calls: list[dict], sigmas, timesteps):
        """``(target, draft, self_draft)`` for the sampler, each built once per call (sharded when asked)."""
        cfg, family, pipe = self.config, self.family, self.pipe

        def denoiser(transformer):
            d = make(transformer)
            if self.own_timesteps:
                d.use_timesteps(sigmas[:-1], timesteps)
            return d

        target = denoiser(pipe.transformer)
        first = calls[0]
        family.check_timestep(first, target.timestep(sigmas[:1].expand(first["timestep"].shape[0]),
                                                     first["hidden_states"]))
        if cfg.draft == "self" and policy.uses_draft:
            split = self.split = self.self_draft_split().with_denoiser(target)
            self_draft = SelfDraft(_sharded_split(split) if cfg.shard else split, forecast=cfg.forecast)
            # the self-draft's own target (recording residuals) and draft
            return self_draft.target, self_draft.draft, self_draft
        draft = None if cfg.draft == "self" else denoiser(cfg.draft)
        if cfg.shard:
            target, draft = _sharded(target), None if draft is None else _sharded(draft)
        return target, draft, None

    def self_draft_split(self) -> TransformerSplit:
        """The split :func:`enable` built, rebuilt only for a transformer replaced since; a
        whole-model compile since enable is refused (:func:`.families.check_hooks_survive_compile`)."""
        state, transformer = self.state, self.pipe.transformer
        check_hooks_survive_compile(transformer)
        if state.split.transformer is not unwrap(transformer):
            split = self.family.self_draft_split(transformer, None, self.config.head_blocks)
            state.split.detach()  # from the transformer replaced
            split.attach()
            state.split = split
        return state.split

    def sample(self, latents: torch.Tensor, timestep) -> torch.Tensor:
        """The pipeline's first scheduler step: ``latents`` are its initial latents, ``timestep``
        its first step's; samples the whole schedule and returns the final latents. The pipeline's
        loop then skips its remaining steps (``interrupt``) and decodes them."""
        if self.stats is not None:
            raise RefusedError(f"{type(self.pipe).__name__} stepped again after SDSV sampled its whole schedule "
                               "and set its interrupt flag: an unsupported pipeline variant")
        self.captured.remove()  # the transformer is the model again
        cfg, pipe, calls = self.config, self.pipe, self.capture.calls
        sigmas, timesteps = self.schedule(latents, timestep)  # checks the latents too: they may be the caller's
        # a warning names the caller's pipe(...): above the pipeline's frames, SDSVCall.__call__ and the wrapper
        policy = _resolve_policy(cfg, sigmas.numel() - 1, stacklevel=_depth(sys._getframe()) - self.depth + 3)
        make, cond = self.family.conditioning(pipe, self.call_args, calls, latents,
                                              int(self.scheduler.config.num_train_timesteps))
        target, draft, self_draft = self.models(policy, make, calls, sigmas, timesteps)
        # the self-draft's hooks are attached since enable (attached() keeps them so)
        with self.split.attached() if self.split is not None else contextlib.nullcontext():
            result = sample_checked(target, draft, latents, sigmas, policy, verify=self.state.verify,
                                    accept=self.state.accept, solver=self.solver, self_draft=self_draft,
                                    progress=self.progress, **cond)
        self.stats = result.stats
        pipe._interrupt = True  # the pipeline's loop skips its remaining steps, then decodes what we return
        return result.latents
