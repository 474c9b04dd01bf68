"""The forecast self-draft (docs/method.md): its contract inside ``sdsv.sample``."""

import threading

import pytest
import torch

from sdsv import AcceptanceTest, ClassifierFreeGuidance, ErrorControlled, FixedInterval, SelfDraft, StagePlan
from sdsv import flow_match_sigmas, sample
from sdsv.forecast import DAMPED, AnchorBank, NewtonForecast, lagrange_coefficients

from toy_models import RowwiseSplit

EXACT = AcceptanceTest("rel_l2", 0.0)


def labels_for(b):
    return torch.tensor([[i % 8, i % 6] for i in range(b)])


def run(sd, plan, noise, verify="endpoints", accept=None, **kw):
    if plan.verifies:  # the other policies would warn that they ignore both
        kw.update(verify=verify, accept=accept)
    return sample(None, None, noise, flow_match_sigmas(plan.num_steps, shift=2.0, dtype=noise.dtype), plan,
                  self_draft=sd, **kw)


def target_only(split, noise, n, **kw):
    sd = SelfDraft(split)
    return run(sd, StagePlan.target_only(n), noise, **kw)


@pytest.mark.parametrize("verify", ["endpoints", "full"])
@pytest.mark.parametrize("plan", ["paper_default", "fast", "slow", "minimal_warmup"])
def test_impossible_threshold_reproduces_target_only_exactly(verify, plan):
    split = RowwiseSplit()
    noise, lab = torch.randn(3, 4, 5), labels_for(3)
    ref = target_only(split, noise, 30, labels=lab)
    r = run(SelfDraft(split), getattr(StagePlan, plan)(30), noise, verify=verify, accept=EXACT, labels=lab)
    assert r.stats.windows and all(w.accepted == 0 for w in r.stats.windows)
    assert torch.equal(r.latents, ref.latents)


def test_rejecting_every_unverified_window_reproduces_target_only_exactly():
    """A hard threshold no forecast meets: every window is redone shorter down to a target step."""
    split = RowwiseSplit()
    noise = torch.randn(2, 6)
    ref = target_only(split, noise, 25)
    plan = ErrorControlled(25, tol=1e-9, reject_above=1e-12, k_init=3)
    r = run(SelfDraft(split), plan, noise)
    assert r.stats.rejected_unverified == r.stats.unverified_windows > 0
    assert torch.equal(r.latents, ref.latents)


@pytest.mark.parametrize("order", [1, 2])
def test_forecast_is_exact_on_residuals_polynomial_in_sigma(order):
    """Order p reproduces a residual that is a degree-p polynomial in sigma (and independent of
    the state): every unverified window then equals target-only to rounding."""
    a, b, c = 0.3, -0.7, 0.4 if order == 2 else 0.0
    split = RowwiseSplit(deep=lambda h, s: (a + b * s + c * s * s).expand_as(h))
    noise = torch.randn(2, 7, dtype=torch.float64)
    ref = target_only(split, noise, 30)
    plan = ErrorControlled(30, tol=1.0, order=order, warmup=order + 1, k_max=6)
    r = run(SelfDraft(split, order=order), plan, noise)
    assert max(max(w.metric) for w in r.stats.windows) < 1e-12  # the closing error: draft == target
    assert r.stats.target_calls < 15
    torch.testing.assert_close(r.latents, ref.latents, atol=1e-12, rtol=0)


def test_order_one_is_not_exact_on_a_quadratic():
    split = RowwiseSplit(deep=lambda h, s: (s * s).expand_as(h))
    r = run(SelfDraft(split, order=1), ErrorControlled(30, tol=1.0), torch.randn(1, 5, dtype=torch.float64))
    assert max(max(w.metric) for w in r.stats.windows) > 1e-6


@pytest.mark.parametrize("verify", ["endpoints", "full"])
@pytest.mark.parametrize("tau", [0.0, 0.004])
def test_anchors_never_come_from_rejected_endpoints(monkeypatch, verify, tau):
    """The deep residual here is the state itself (``r = h = x``), so a bank slot shows which state
    the target evaluated there. Rows the sampler leaves uncommitted must be exactly the rejected
    windows' untested/failed states, and no anchor may ever hold one of them."""
    split = RowwiseSplit(deep=lambda h, s: h.clone())
    dropped = []  # (sample, state) of target rows that did not become anchors
    checked = []

    class Spy(AnchorBank):
        def commit(self, rows, velocities=None):
            keep = set(rows)
            for v, b in enumerate(self.pending_tags):
                if v not in keep:
                    dropped.append((b, self.pending[v].clone()))
            super().commit(rows, velocities)
            for (b, _), ring in self.anchors.items():
                for slot, _ in ring:
                    checked.append(1)
                    assert not any(db == b and torch.equal(self.bank[slot], st) for db, st in dropped)

    monkeypatch.setattr("sdsv.forecast.self_draft.AnchorBank", Spy)
    noise = torch.randn(2, 6, dtype=torch.float64)
    r = run(SelfDraft(split, order=1), StagePlan.paper_default(30), noise, verify=verify, accept=AcceptanceTest("x0_rms", tau))
    windows = r.stats.windows
    if tau:
        assert any(w.accepted == w.k for w in windows) and any(w.accepted < w.k for w in windows), "need both"
    else:
        assert all(w.accepted == 0 for w in windows)
    # rejected endpoints: y_k of each rejected window; full: every verified row past the accepted prefix
    want = sum(w.accepted < w.k for w in windows) if verify == "endpoints" else sum(w.k - w.accepted for w in windows)
    assert len(dropped) == want and checked


def test_sample_result_does_not_depend_on_batch_mates():
    split = RowwiseSplit()
    noise, lab = torch.randn(3, 4, 6), labels_for(3)
    plan = ErrorControlled(40, tol=0.01)
    batched = run(SelfDraft(split), plan, noise, labels=lab)
    for b in range(3):
        alone = run(SelfDraft(split), plan, noise[b:b + 1], labels=lab[b:b + 1])
        assert torch.equal(alone.latents, batched.latents[b:b + 1])
        assert [(w.start, w.k, w.accepted) for w in alone.stats.windows] == \
               [(w.start, w.k, w.accepted) for w in batched.stats.windows if w.sample == b]
    assert len({w.k for w in batched.stats.windows}) > 1, "the controller should vary window lengths"


def test_guidance_branches_keep_their_own_anchors():
    """With classifier-free guidance a call holds cond and uncond rows of every sample; each
    (sample, branch) forecasts from its own anchors: an identical-to-target forecast (a residual
    linear in sigma per branch, forecast by the line) stays exact through the guidance wrapper."""
    split = RowwiseSplit(deep=lambda h, s: (0.2 - 0.5 * s).expand_as(h) * (1 + h.detach().sign() * 0))
    sd = SelfDraft(split, order=1)
    null = {"labels": torch.tensor([7, 5])}
    tgt, drf = ClassifierFreeGuidance(sd.target, 3.0, null), ClassifierFreeGuidance(sd.draft, 3.0, null)
    noise, lab = torch.randn(2, 5, dtype=torch.float64), labels_for(2)
    sig = flow_match_sigmas(20, dtype=torch.float64)
    ref = sample(tgt, None, noise, sig, StagePlan.target_only(20), self_draft=sd, labels=lab)
    r = sample(tgt, drf, noise, sig, FixedInterval(20, every=4), self_draft=sd, labels=lab)
    torch.testing.assert_close(r.latents, ref.latents, atol=1e-12, rtol=0)
    assert split.residual_calls[-1] % 2 == 0  # cond + uncond rows in one call


def test_memory_stays_bounded_over_1000_windows():
    split = RowwiseSplit()
    sizes, pending = [], []

    class Watch(AnchorBank):
        def commit(self, rows, velocities=None):
            super().commit(rows, velocities)
            sizes.append(self.nbytes)
            pending.append(self.pending.shape[0])
            assert all(len(ring) <= self.slots for ring in self.anchors.values())

    import sdsv.forecast.self_draft as mod
    old, mod.AnchorBank = mod.AnchorBank, Watch
    try:
        r = run(SelfDraft(split, order=2), FixedInterval(2002, every=2, warmup=2), torch.randn(2, 16))
    finally:
        mod.AnchorBank = old
    assert r.stats.unverified_windows >= 1000 * 2
    assert len(set(sizes)) == 1 and sizes[0] == 2 * 1 * 3 * 16 * 4  # batch x branches x slots x row x fp32
    assert max(pending) <= 2


def test_two_concurrent_calls_never_share_anchors():
    split = RowwiseSplit()
    sd = SelfDraft(split)
    plan = ErrorControlled(60, tol=0.01)
    noises = [torch.randn(1, 32) for _ in range(4)]
    want = [run(sd, plan, n).latents for n in noises]
    got = [None] * 4
    barrier = threading.Barrier(4)

    def worker(i):
        barrier.wait()
        got[i] = run(sd, plan, noises[i]).latents

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w, g in zip(want, got):
        assert torch.equal(w, g)


def test_lagrange_coefficients():
    assert lagrange_coefficients([0.5], 0.1) == [1.0]
    c = lagrange_coefficients([0.6, 0.5], 0.4)  # r_a + (s - s_a)(r_a - r_b)/(s_a - s_b), s_a = 0.5
    assert c == pytest.approx([-1.0, 2.0])
    c = lagrange_coefficients([0.7, 0.6, 0.5], 0.3)
    assert sum(c) == pytest.approx(1.0)
    assert sum(ci * s * s for ci, s in zip(c, [0.7, 0.6, 0.5])) == pytest.approx(0.09)


def test_errors_are_clear():
    split = RowwiseSplit()
    sd = SelfDraft(split)
    with pytest.raises(RuntimeError, match="runs inside sdsv.sample"):
        sd.draft(torch.randn(1, 4), torch.ones(1))
    with pytest.raises(RuntimeError, match="at least one target step"):  # no warm-up: nothing to forecast from
        run(sd, FixedInterval(10, every=3, warmup=0), torch.randn(1, 4))
    with pytest.raises(ValueError, match="order must be 0, 1 or 2"):
        SelfDraft(split, order=3)
    with pytest.raises(TypeError, match="split model"):
        SelfDraft(lambda x, s: x)
    with pytest.raises(TypeError, match="self_draft must be a sdsv.SelfDraft"):
        sample(split.forward_with_residual, None, torch.randn(1, 4), flow_match_sigmas(3), StagePlan.target_only(3),
               self_draft="self")


# ---- the forecast objects (sdsv.forecast.forecasts) ------------------------------------------

SIGMAS = [0.7, 0.6, 0.5]


@pytest.mark.parametrize("order", [0, 1, 2])
def test_a_polynomial_forecast_gives_the_lagrange_weights_exactly(order):
    f = NewtonForecast.of_order(order)
    assert f.anchors == order + 1
    for n in range(1, order + 2):  # with fewer anchors on record it uses what it has
        assert f.coefficients(SIGMAS[-n:], 0.42) == lagrange_coefficients(SIGMAS[-n:], 0.42)


@pytest.mark.parametrize("slope,curvature", [(0.85, 0.3), (0.0, 0.0), (0.5, 1.5), (1.0, 0.3), (-0.2, 0.0)])
def test_every_forecast_reproduces_a_constant_residual(slope, curvature):
    f = NewtonForecast(slope, curvature)
    for n in range(1, 4):
        assert sum(f.coefficients(SIGMAS[-n:], 0.31)) == pytest.approx(1.0, abs=1e-12)


def test_full_slope_is_exact_on_a_line_whatever_the_curvature():
    line = lambda s: 2.0 - 3.0 * s  # noqa: E731
    for curvature in (0.0, 0.3, 1.0):
        c = NewtonForecast(1.0, curvature).coefficients(SIGMAS, 0.35)
        assert sum(ci * line(s) for ci, s in zip(c, SIGMAS)) == pytest.approx(line(0.35), abs=1e-12)
    # a damped slope is not: it moves a fraction of the way along the line
    c = NewtonForecast(0.5, 0.0).coefficients(SIGMAS[-2:], 0.4)
    assert sum(ci * line(s) for ci, s in zip(c, SIGMAS[-2:])) == pytest.approx(line(0.5) + 0.5 * (line(0.4) - line(0.5)))


def test_a_forecast_given_as_an_object_samples_as_its_order_does():
    split = RowwiseSplit()
    noise = torch.randn(2, 6)
    plan = ErrorControlled(30, tol=0.3)
    for order in (0, 1, 2):
        a = run(SelfDraft(split, order=order), plan, noise)
        b = run(SelfDraft(split, forecast=NewtonForecast.of_order(order)), plan, noise)
        assert torch.equal(a.latents, b.latents)
    assert SelfDraft(split).forecast == DAMPED  # the default: the faithful intent's
    damped = run(SelfDraft(split, forecast=DAMPED), plan, noise)
    assert not torch.equal(damped.latents, run(SelfDraft(split, order=1), plan, noise).latents)


def test_forecast_errors_are_clear():
    split = RowwiseSplit()
    with pytest.raises(ValueError, match="not both"):
        SelfDraft(split, order=1, forecast=DAMPED)
    with pytest.raises(TypeError, match="NewtonForecast"):
        SelfDraft(split, forecast="damped")
    with pytest.raises(ValueError, match="slots must be >= 3"):
        SelfDraft(split, forecast=DAMPED, slots=2)
    for bad in (float("nan"), 3.0, -2.5):
        with pytest.raises(ValueError, match="slope must be (a )?finite"):
            NewtonForecast(bad, 0.0)
    with pytest.raises(TypeError):
        NewtonForecast("0.8", 0.0)
    with pytest.raises(ValueError, match="order must be 0, 1 or 2"):
        NewtonForecast.of_order(3)
    with pytest.raises(ValueError, match="at least one anchor"):
        DAMPED.coefficients([], 0.5)
