"""Property-based checks of the public API (hypothesis, fixed seed: ``derandomize``; more
examples with ``SDSV_HYPOTHESIS_EXAMPLES=2000``; 100 by default): generated shapes, dtypes, memory layouts,
schedules, plans, thresholds and batch sizes give either a clear error or the plain Euler
result; adversarial models are refused with the error for what they did; the ops agree across
backends on what they accept and what they return."""

import os

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

import sdsv_kernels  # noqa: E402
from sdsv import (AcceptanceTest, ErrorControlled, FixedInterval, NonFiniteOutputError, StagePlan,  # noqa: E402
                  flow_match_sigmas, sample)

from toy_models import RowwiseDenoiser  # noqa: E402

# these tests sweep one set of options over every policy, on purpose
pytestmark = pytest.mark.filterwarnings("ignore::sdsv.IgnoredOptionWarning")

EXAMPLES = int(os.environ.get("SDSV_HYPOTHESIS_EXAMPLES", "100"))
PROPS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True)

shapes = st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple)
plans = st.sampled_from(["target_only", "paper_default", "fast", "slow", "cache", "error_controlled"])


def make_plan(name: str, n: int):
    if name == "cache":
        return FixedInterval(n, every=2)
    if name == "error_controlled":
        return ErrorControlled(n, k_min=1, k_init=1, warmup=min(2, n))
    return getattr(StagePlan, name)(n)


def euler(model, noise, sigmas):
    x = noise.clone()
    for i in range(sigmas.numel() - 1):
        x = x + (sigmas[i + 1] - sigmas[i]) * model(x, sigmas[i].expand(x.shape[0]))
    return x


@PROPS
@given(batch=st.integers(1, 3), shape=shapes, n=st.integers(2, 12), shift=st.floats(0.5, 4.0), plan=plans,
       verify=st.sampled_from(["endpoints", "full"]), transposed=st.booleans(), solver=st.sampled_from(["euler", "dpm++2m"]))
def test_identical_draft_reproduces_target_only_for_any_plan(batch, shape, n, shift, plan, verify, transposed, solver):
    target = RowwiseDenoiser()
    noise = torch.randn((batch, *shape), dtype=torch.float64)
    if transposed and len(shape) >= 2:  # a non-contiguous layout must give the same result
        noise = noise.transpose(-1, -2).contiguous().transpose(-1, -2)
    sig = flow_match_sigmas(n, shift, dtype=torch.float64)
    ref = sample(target, None, noise, sig, StagePlan.target_only(n), solver=solver)
    r = sample(target, target, noise, sig, make_plan(plan, n), verify=verify, accept=AcceptanceTest("rel_l2", 1e-9),
               solver=solver)
    torch.testing.assert_close(r.latents, ref.latents, atol=1e-9, rtol=1e-9)
    if solver == "euler":
        torch.testing.assert_close(ref.latents, euler(target, noise, sig), atol=1e-9, rtol=1e-9)
    assert r.stats.target_calls <= n and noise.isfinite().all()


@PROPS
@given(batch=st.integers(1, 3), n=st.integers(3, 10), tau=st.floats(0.0, 2.0), plan=plans,
       verify=st.sampled_from(["endpoints", "full"]))
def test_any_threshold_gives_a_finite_result_and_consistent_counts(batch, n, tau, plan, verify):
    target, draft = RowwiseDenoiser(), RowwiseDenoiser(bias=0.05)
    noise = torch.randn(batch, 6)
    r = sample(target, draft, noise, flow_match_sigmas(n), make_plan(plan, n), verify=verify,
               accept=AcceptanceTest("x0_rms", tau))
    assert r.latents.shape == noise.shape and torch.isfinite(r.latents).all()
    st_ = r.stats
    assert all(0 <= w.accepted <= w.k for w in st_.windows)
    assert st_.target_evals >= st_.target_calls >= 1 or plan == "target_only" and st_.target_calls == n


BAD_MODELS = {
    "shape": (lambda x, s: x[:, :1], ValueError, "returned shape"),
    "dtype": (lambda x, s: x.double(), TypeError, "returned torch.float64"),
    "tuple": (lambda x, s: (x,), TypeError, "returned tuple"),
    "nan": (lambda x, s: x * float("nan"), NonFiniteOutputError, "NaN/inf"),
}


@PROPS
@given(which=st.sampled_from(["target", "draft"]), bad=st.sampled_from(list(BAD_MODELS)), plan=plans,
       n=st.integers(3, 8))
def test_adversarial_models_are_refused_with_the_right_error(which, bad, plan, n):
    raw, exc, match = BAD_MODELS[bad]
    calls = []

    def fn(x, s):
        calls.append(x.shape[0])
        return raw(x, s)

    good = RowwiseDenoiser()
    target, draft = (fn, good) if which == "target" else (good, fn)
    try:
        sample(target, draft, torch.randn(2, 3, 2), flow_match_sigmas(n), make_plan(plan, n),
               accept=AcceptanceTest("rel_l2", 1e-3))
    except exc as e:
        assert calls and match in str(e), str(e)
    else:  # only a model the plan never calls may misbehave unnoticed (a short plan's windows can vanish)
        assert not calls, f"the bad {which} was called {len(calls)} times and nothing was raised"


def _native():
    status = sdsv_kernels.backends()
    return [b for b in ("cpp",) if status[b] is True]


@PROPS
@given(r=st.integers(1, 5), shape=shapes, dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
       broken=st.sampled_from([None, "shape", "dtype", "h"]))
def test_ops_agree_across_backends_on_inputs_and_results(r, shape, dtype, broken):
    g = torch.Generator().manual_seed(r * 31 + len(shape))
    t, d, y = (torch.randn((r, *shape), generator=g).to(dtype) for _ in range(3))
    h = torch.full((r,), -0.05)
    if broken == "shape":
        d = d[..., :1] if shape[-1] > 1 else torch.randn((r, *shape, 2)).to(dtype)
    elif broken == "dtype":
        d = d.double()
    elif broken == "h":
        h = h[:-1] if r > 1 else torch.full((2,), -0.05)
    results = {}
    for backend in ["reference"] + _native():
        with sdsv_kernels.use_backend(backend):
            try:
                results[backend] = ("ok", sdsv_kernels.pair_stats(t, d, y, h), sdsv_kernels.rollout_step(y, t, h))
            except (TypeError, ValueError) as e:
                results[backend] = ("error", type(e), str(e))
    kinds = {res[0] for res in results.values()}
    assert kinds == ({"error"} if broken else {"ok"}), results
    if broken:
        assert len({res[1:] for res in results.values()}) == 1, results  # the same error, word for word
    else:
        ref = results["reference"]
        for res in results.values():
            torch.testing.assert_close(res[1], ref[1], rtol=2e-4, atol=1e-3)
            torch.testing.assert_close(res[2].float(), ref[2].float(), rtol=1.6e-2, atol=1.6e-2)
