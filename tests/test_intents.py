"""The two intents of the tiny pipeline's self-draft: ``faithful`` (default: close to its own
50-step Euler output, the damped forecast) and ``accurate`` (UniPC, 26 steps, short corrected
windows, the line: close to the exact sample); each is only a default, the same as naming its solver, steps, policy
and forecast."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sdsv import ErrorControlled, StagePlan
from sdsv.forecast import DAMPED, LINE
from sdsv.policies.error_controlled import (ACCURATE_TOL, FAITHFUL_DRAFT_LAST, FAITHFUL_ERROR, FAITHFUL_K_MAX,
                                            FAITHFUL_TOL, SHORT_WINDOWS)
from sdsv.intents import INTENTS, default_policy
from sdsv.tiny.pipeline import TinyPipeline

DEFAULTS = {name: TinyPipeline.intent_defaults(name) for name in INTENTS}  # (solver, steps) of each intent

PROMPTS = ["a red circle", "a blue square"]


@pytest.fixture(scope="module")
def pipe():
    return TinyPipeline.from_pretrained(names=("target", "lite"))


def test_faithful_is_the_default_and_only_a_default(pipe):
    out = pipe(PROMPTS, draft="self", num_steps=20, seed=3)
    same = pipe(PROMPTS, draft="self", policy=ErrorControlled.faithful(20), solver="euler", forecast=DAMPED, seed=3)
    assert torch.equal(out.latents, same.latents)
    line = pipe(PROMPTS, draft="self", policy=ErrorControlled.faithful(20), solver="euler", forecast=LINE, seed=3)
    assert not torch.equal(line.latents, out.latents)  # the forecast is the intent's, not the line
    plain = pipe(PROMPTS, num_steps=20, seed=3)  # a plain call is the faithful self-draft
    assert torch.equal(plain.latents, out.latents)
    assert {w.kind for w in out.stats.windows} == {"unverified"}  # corrected windows close as unverified ones
    uncorrected = pipe(PROMPTS, draft="self", policy=dataclasses.replace(ErrorControlled.faithful(20), correct=False),
                       seed=3)
    assert not torch.equal(uncorrected.latents, out.latents)  # the default's windows are corrected
    assert out.stats.draft_evals > uncorrected.stats.draft_evals
    assert out.stats.target_evals < 2 * 20  # windows were taken
    p = ErrorControlled.faithful(50)
    assert (p.tol, p.k_max, p.correct, p.predict, p.warmup, p.name, p.error_metric, p.draft_last) == (
        FAITHFUL_TOL, FAITHFUL_K_MAX, True, "draft", 2, "faithful", FAITHFUL_ERROR, FAITHFUL_DRAFT_LAST)


def test_accurate_is_unipc_with_26_steps_and_short_corrected_windows(pipe):
    out = pipe(PROMPTS, draft="self", intent="accurate", seed=3)
    same = pipe(PROMPTS, draft="self", policy=ErrorControlled.accurate(26), solver="unipc", forecast=LINE, seed=3)
    assert torch.equal(out.latents, same.latents)
    # a policy named without an intent gets the faithful intent's forecast, not the accurate one's
    damped = pipe(PROMPTS, draft="self", policy=ErrorControlled.accurate(26), solver="unipc", seed=3)
    assert not torch.equal(damped.latents, out.latents)
    uncorrected = pipe(PROMPTS, draft="self", policy=dataclasses.replace(ErrorControlled.accurate(26), correct=False),
                       solver="unipc", forecast=LINE, seed=3)
    assert not torch.equal(uncorrected.latents, out.latents)  # the default's windows are corrected
    assert out.stats.draft_evals > uncorrected.stats.draft_evals
    p = ErrorControlled.accurate(26)
    assert (p.num_steps, p.tol, p.k_min, p.k_init, p.k_max, p.correct, p.predict) == (
        26, ACCURATE_TOL, SHORT_WINDOWS["k_min"], SHORT_WINDOWS["k_init"], SHORT_WINDOWS["k_max"], True, "draft")
    assert DEFAULTS["accurate"] == ("unipc", 26) and DEFAULTS["faithful"] == ("euler", 50)
    # the demo's and the tail experiment's rows run what the intents run
    from sdsv.evaluation.methods import intent_methods
    faithful, accurate = intent_methods(50)
    assert (faithful.solver, faithful.policy, faithful.forecast) == (DEFAULTS["faithful"][0], ErrorControlled.faithful(50),
                                                                      INTENTS["faithful"].forecast)
    assert (accurate.solver, accurate.policy, accurate.forecast) == (
        DEFAULTS["accurate"][0], ErrorControlled.accurate(DEFAULTS["accurate"][1]), INTENTS["accurate"].forecast)
    assert (INTENTS["faithful"].forecast, INTENTS["accurate"].forecast) == (DAMPED, LINE)
    assert max(w.k for w in out.stats.windows) <= SHORT_WINDOWS["k_max"]


def test_an_intent_sets_only_what_the_call_leaves_open(pipe):
    # a named solver and step count win over the intent's
    out = pipe(PROMPTS[:1], draft="self", intent="accurate", solver="euler", num_steps=12, seed=1)
    same = pipe(PROMPTS[:1], draft="self", policy=ErrorControlled.accurate(12), solver="euler", forecast=LINE, seed=1)
    assert torch.equal(out.latents, same.latents)
    # and so do a named forecast or forecast order
    named = pipe(PROMPTS[:1], draft="self", intent="accurate", num_steps=12, solver="euler", forecast=DAMPED, seed=1)
    assert torch.equal(named.latents, pipe(PROMPTS[:1], draft="self", policy=ErrorControlled.accurate(12),
                                           solver="euler", seed=1).latents)
    ordered = pipe(PROMPTS[:1], draft="self", num_steps=12, forecast_order=1, seed=1)
    assert torch.equal(ordered.latents, pipe(PROMPTS[:1], draft="self", num_steps=12, forecast=LINE, seed=1).latents)
    # a trained draft keeps the paper's multi-stage plan, on the intent's solver and steps
    lite = pipe(PROMPTS[:1], draft="lite", intent="accurate", seed=1)
    plan = pipe(PROMPTS[:1], draft="lite", policy=StagePlan.paper_default(DEFAULTS["accurate"][1]), solver="unipc", seed=1)
    assert torch.equal(lite.latents, plan.latents)


def test_an_unknown_intent_is_refused(pipe):
    with pytest.raises(ValueError, match="intent must be one of 'faithful', 'accurate', got 'fast'"):
        pipe(PROMPTS, draft="self", intent="fast")


def test_enable_defaults_to_the_faithful_windows():
    # sdsv.enable and the tiny pipeline take their default from the same function
    assert default_policy("faithful", self_draft=True)(28) == ErrorControlled.faithful(28)
    assert default_policy("faithful", self_draft=True)(2).warmup == 2
    assert default_policy("accurate", self_draft=True) == ErrorControlled.accurate
    assert default_policy("accurate", self_draft=False) == StagePlan.paper_default
