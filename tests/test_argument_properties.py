"""Property-based checks of the public entry points' arguments (issue 33): for ``sdsv.sample``,
``TinyPipeline.__call__``, ``sdsv.calibrate``, the window policies' and the self-draft's
constructors and ``sdsv.flow_match_sigmas``, any value of a wrong type or out of range, given for
one argument with every other one valid, raises a TypeError or ValueError whose message names
that argument — never another exception, and never a result: nothing is sampled (the models and
the sampler refuse to run here), so a value that slipped through fails the test. A new argument
is covered by adding a line to its table."""

from __future__ import annotations

import math
import os
from unittest import mock

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

from sdsv import (AcceptanceTest, ErrorControlled, FixedInterval, SelfDraft, StagePlan, calibrate,  # noqa: E402
                  flow_match_sigmas, sample)
from sdsv.tiny.data import parse_prompt  # noqa: E402
from sdsv.tiny.pipeline import TinyPipeline  # noqa: E402

from toy_models import RowwiseSplit, random_dit  # noqa: E402

EXAMPLES = int(os.environ.get("SDSV_HYPOTHESIS_EXAMPLES", "12"))  # per argument
PROPS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True)

# ---- wrong values, by what the argument is -------------------------------------------------------
junk = st.one_of(st.none(), st.text(max_size=4), st.lists(st.integers(), max_size=2), st.just(object()),
                 st.builds(lambda: torch.tensor(3)), st.builds(lambda: torch.tensor(0.5)), st.just(b"2"),
                 st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))
not_an_int = st.one_of(junk, st.booleans(), st.floats(allow_nan=True, allow_infinity=True),
                       st.builds(lambda x: np.float64(x), st.floats(-10, 10)), st.just(torch.Generator()))
not_a_number = st.one_of(junk, st.booleans(), st.just(1j))


def bad_int(minimum: int | None = None, maximum: int | None = None):
    """Not an int, or an int outside [minimum, maximum]."""
    out = [not_an_int]
    if minimum is not None:
        out.append(st.integers(max_value=minimum - 1).filter(lambda v: v > -10**30))
    if maximum is not None:
        out.append(st.integers(min_value=maximum + 1, max_value=maximum + 10**6))
    return st.one_of(*out)


def bad_float(positive: bool = False, minimum: float | None = None):
    """Not a number, or a number that is not finite (or not positive / below ``minimum``)."""
    out = [not_a_number, st.sampled_from([math.nan, math.inf, -math.inf])]
    if positive:
        out.append(st.floats(max_value=0.0, allow_nan=False, allow_infinity=False))
    if minimum is not None:
        out.append(st.floats(max_value=minimum, exclude_max=True, allow_nan=False, allow_infinity=False))
    return st.one_of(*out)


def bad_choice(*choices):
    """Not a str, or a str that is none of ``choices``."""
    return st.one_of(junk.filter(lambda v: not isinstance(v, str)), st.booleans(), st.integers(),
                     st.text(max_size=8).filter(lambda v: v not in choices), st.just(list(choices[:1])))


def bad_bool():
    return st.one_of(junk, st.integers(), st.floats())


def _not_a_prompt(text: str) -> bool:
    try:
        parse_prompt(text)
    except ValueError:
        return True
    return False


bad_prompts = st.one_of(st.none(), st.integers(), st.floats(), st.just([]), st.just(()),
                        st.lists(st.one_of(st.integers(), st.none(), st.floats()), min_size=1, max_size=2),
                        st.text(max_size=12).filter(_not_a_prompt), st.builds(lambda: torch.tensor([1, 2])))
bad_seed = st.one_of(st.none(), st.floats(), st.text(max_size=3), st.booleans(), st.just(torch.Generator()),
                     st.builds(lambda: torch.tensor(3)), st.integers(max_value=-1),
                     st.integers(min_value=2**64, max_value=2**70), st.lists(st.floats(), min_size=1, max_size=1),
                     st.just([0, 1, 2]), st.just(np.float64(3.0)))
bad_policy = st.one_of(junk, st.integers(), st.just(ErrorControlled), st.just(lambda n: ErrorControlled(n)))
bad_progress = st.one_of(st.text(max_size=3), st.integers(), st.floats(), st.lists(st.integers(), max_size=2),
                         st.just(object()))
bad_accept = st.one_of(junk, st.floats(), st.integers(), st.just(AcceptanceTest))


def not_none(strategy):
    """For an argument whose None means "the default"."""
    return strategy.filter(lambda v: v is not None)


def refuses(call, name: str) -> None:
    """``call()`` raises TypeError/ValueError naming ``name`` (and nothing else happens)."""
    try:
        call()
    except (TypeError, ValueError) as e:
        assert name in str(e), f"the error does not name {name!r}: {type(e).__name__}: {e}"
    else:
        raise AssertionError(f"a bad {name} was accepted")


def no_sampling():
    def refuse(*a, **k):
        raise AssertionError("sampled although an argument was bad")
    return mock.patch("sdsv.tiny.pipeline.sample", refuse)


# ---- sdsv.sample ---------------------------------------------------------------------------------
def _refusing_model(x, sigma, **cond):
    raise AssertionError("a model was called although an argument was bad")


N = 4
bad_noise = st.one_of(junk, st.integers(), st.builds(lambda: torch.ones(3, dtype=torch.long).view(1, 3)),
                      st.builds(lambda: torch.randn(4)), st.builds(lambda: torch.full((1, 3), math.nan)),
                      st.builds(lambda: torch.randn(0, 3)), st.builds(lambda: torch.randn(1, 0)),
                      st.builds(lambda: torch.randn(1, 3, device="meta")))
bad_sigmas = st.one_of(junk, st.lists(st.floats(), max_size=5), st.builds(lambda: torch.linspace(0, 1, N + 1)),
                       st.builds(lambda: flow_match_sigmas(N).view(1, -1)), st.builds(lambda: flow_match_sigmas(N + 2)),
                       st.builds(lambda: flow_match_sigmas(N) + 0.1), st.builds(lambda: torch.tensor([1.0])),
                       st.builds(lambda: flow_match_sigmas(N).to("meta")),
                       st.builds(lambda: flow_match_sigmas(N).index_fill(0, torch.tensor([1]), math.nan)))

SAMPLE = {
    "target": st.one_of(st.none(), st.integers(), st.text(max_size=3)),
    "noise": bad_noise,
    "sigmas": bad_sigmas,
    "policy": bad_policy,
    "verify": not_none(bad_choice("endpoints", "full")),
    "accept": not_none(bad_accept),
    "solver": bad_choice("euler", "dpm++2m", "unipc"),
    "progress": bad_progress,
    "per_sample": st.one_of(st.integers(), st.floats(), st.lists(st.integers(), min_size=1, max_size=2),
                            st.just(["nope"]), st.just(object())),
    "self_draft": st.one_of(st.integers(), st.text(max_size=3), st.just(object())),
}


@pytest.mark.parametrize("name", sorted(SAMPLE))
@PROPS
@given(data=st.data())
def test_sample_refuses_any_bad_argument_by_name(name, data):
    value = data.draw(SAMPLE[name], label=name)
    args = dict(target=_refusing_model, draft=None, noise=torch.randn(2, 3), sigmas=flow_match_sigmas(N),
                policy=StagePlan.target_only(N), labels=torch.zeros(2, 1))
    args[name] = value
    refuses(lambda: sample(**args), name)


# ---- TinyPipeline.__call__ -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_pipe():
    return TinyPipeline({"target": random_dit()})


PIPELINE = {
    "prompts": bad_prompts,
    "num_steps": not_none(bad_int(minimum=1)),
    "policy": not_none(bad_policy),
    "draft": st.one_of(bad_choice("self"), st.just("svd")),
    "forecast_order": not_none(bad_int(minimum=0, maximum=2)),
    "forecast": st.one_of(st.integers(), st.text(max_size=8), st.floats()),
    "solver": not_none(bad_choice("euler", "dpm++2m", "unipc")),
    "intent": bad_choice("faithful", "accurate"),
    "verify": not_none(bad_choice("endpoints", "full")),
    "accept": not_none(bad_accept),
    "guidance": bad_float(minimum=0.0),
    "seed": bad_seed,
    "shift": bad_float(positive=True),
    "progress": bad_progress,
}


@pytest.mark.parametrize("name", sorted(PIPELINE))
@PROPS
@given(data=st.data())
def test_tiny_pipeline_refuses_any_bad_argument_by_name(toy_pipe, name, data):
    value = data.draw(PIPELINE[name], label=name)
    args = dict(prompts=["a red circle", "a blue ring"], num_steps=6)
    args[name] = value
    with no_sampling():
        refuses(lambda: toy_pipe(**args), name)


# ---- sdsv.calibrate ------------------------------------------------------------------------------
CALIBRATE = {
    "pipe": st.one_of(st.none(), st.integers(), st.text(max_size=3)),
    "prompts": bad_prompts,
    "target_psnr": bad_float(),
    "percentile": st.one_of(bad_float(), st.floats(min_value=100, exclude_min=True, allow_infinity=False),
                            st.floats(max_value=0, exclude_max=True, allow_infinity=False)),
    "num_steps": st.one_of(not_none(bad_int(minimum=1)), st.sampled_from([1, 2])),  # 1 or 2: no window to speculate on
    "policy": st.one_of(junk.filter(lambda v: v is not None), st.integers(), st.just(ErrorControlled(20)),
                        st.just(lambda tol, n: None), st.just(lambda tol, n: ErrorControlled(n + 1, tol=tol))),
    "tols": st.one_of(bad_float(positive=True), st.just([]), st.lists(bad_float(positive=True), min_size=1, max_size=2)
                      ).filter(lambda v: not (isinstance(v, list) and v and all(type(t) is int and t > 0 for t in v))),
    "seed": bad_seed,
}


@pytest.mark.parametrize("name", sorted(CALIBRATE))
@PROPS
@given(data=st.data())
def test_calibrate_refuses_any_bad_argument_by_name(toy_pipe, name, data):
    value = data.draw(CALIBRATE[name], label=name)
    args = dict(pipe=toy_pipe, prompts=["a red circle", "a blue ring"], target_psnr=30.0, num_steps=20)
    args[name] = value
    with no_sampling():
        refuses(lambda: calibrate(**args), name)


# ---- the window policies', the self-draft's and the schedule's constructors -----------------------------------------------------------
POLICIES = {
    "StagePlan": (StagePlan, dict(num_steps=10, stage0_steps=2, warmup_steps=4, k_warmup=1, k_main=3), {
        "num_steps": bad_int(minimum=4), "stage0_steps": bad_int(minimum=0, maximum=4),
        "warmup_steps": bad_int(minimum=2, maximum=10), "k_warmup": bad_int(minimum=1),
        "k_main": bad_int(minimum=1), "main": bad_choice("speculate", "draft"), "name": not_an_int.filter(
            lambda v: not isinstance(v, str)),
    }),
    "FixedInterval": (FixedInterval, dict(num_steps=10), {
        "num_steps": bad_int(minimum=2), "every": bad_int(minimum=1), "warmup": bad_int(minimum=0, maximum=10),
        "name": st.one_of(st.none(), st.integers()), "closing_error": bad_bool(),
    }),
    "ErrorControlled": (ErrorControlled, dict(num_steps=10), {
        "num_steps": bad_int(minimum=2), "tol": bad_float(positive=True), "order": bad_int(minimum=0),
        "k_init": bad_int(minimum=2, maximum=4), "k_min": bad_int(minimum=1, maximum=2),
        "k_max": bad_int(minimum=2), "warmup": bad_int(minimum=0, maximum=10),
        "reject_above": st.one_of(bad_float(positive=True).filter(lambda v: v is not None)),
        "error_metric": bad_choice("x0_rms", "v_rms"), "name": st.one_of(st.none(), st.integers()),
    }),
}
FACTORIES = {
    "ErrorControlled.faithful": (ErrorControlled.faithful, dict(num_steps=10), {"num_steps": bad_int(minimum=1)}),
    "ErrorControlled.accurate": (ErrorControlled.accurate, dict(num_steps=10), {"num_steps": bad_int(minimum=1)}),
    **{f"StagePlan.{m}": (getattr(StagePlan, m), dict(num_steps=10), {"num_steps": bad_int(minimum=1)})
       for m in ("paper_default", "fast", "slow", "target_only", "draft_only")},
    "StagePlan.improved_draft": (StagePlan.improved_draft, dict(num_steps=10, stage0_steps=5),
                                 {"num_steps": bad_int(minimum=1), "stage0_steps": bad_int(minimum=0)}),
    "StagePlan.minimal_warmup": (StagePlan.minimal_warmup, dict(num_steps=10, k=9),
                                 {"num_steps": bad_int(minimum=1), "k": bad_int(minimum=1)}),
    "StagePlan.conservative_warmup": (StagePlan.conservative_warmup, dict(num_steps=10, k=9),
                                      {"num_steps": bad_int(minimum=1), "k": bad_int(minimum=1)}),
}
POLICIES["flow_match_sigmas"] = (flow_match_sigmas, dict(num_steps=10), {
    "num_steps": bad_int(minimum=1), "shift": bad_float(positive=True),
    "dtype": st.one_of(junk, st.sampled_from([torch.int64, torch.bool, torch.complex64, "float32", float])),
})
POLICIES["SelfDraft"] = (lambda **k: SelfDraft(RowwiseSplit(), **k), dict(order=1), {
    "order": not_none(bad_int(minimum=0, maximum=2)), "slots": not_none(bad_int(minimum=2)),
})
CASES = [(c, a) for table in (POLICIES, FACTORIES) for c, (_, _, bad) in table.items() for a in sorted(bad)]


@pytest.mark.parametrize("which, name", CASES, ids=[f"{c}-{a}" for c, a in CASES])
@PROPS
@given(data=st.data())
def test_policy_constructors_refuse_any_bad_argument_by_name(which, name, data):
    make, valid, bad = {**POLICIES, **FACTORIES}[which]
    make(**valid)  # the baseline is valid
    value = data.draw(bad[name], label=f"{which}({name}=)")
    refuses(lambda: make(**{**valid, name: value}), name)
