"""Target-only DPM-Solver++(2M) through ``sdsv.sample``: diffusers' DPM-Solver++(2M) on flow
sigmas, its order, per-sample independence, counts and errors."""

import math

import pytest
import torch

from sdsv import NonFiniteOutputError, StagePlan, flow_match_sigmas, sample
from sdsv.solvers import dpm_solver_2m_coefficients

from toy_models import RowwiseDenoiser, random_dit


def dpm_target_only(target, noise, sigmas, **kw):
    """``sdsv.sample`` with a target-only policy on DPM-Solver++(2M)."""
    return sample(target, None, noise, sigmas, StagePlan.target_only(max(1, sigmas.numel() - 1)), solver="dpm++2m",
                  **kw)


@pytest.fixture(scope="module")
def dit():
    return random_dit()


def labels_for(b):
    return torch.tensor([[i % 8, i % 6] for i in range(b)])


class Recording:
    """Wraps a denoiser and keeps the state each call sees: the solver's trajectory."""

    def __init__(self, fn):
        self.fn, self.states = fn, []

    def __call__(self, x, sigma, labels):
        assert (sigma == sigma[0]).all(), "all rows of a call are at one step"
        self.states.append(x.clone())
        return self.fn(x, sigma, labels)


def diffusers_dpm_2m(shift):
    diffusers = pytest.importorskip("diffusers")
    return diffusers.DPMSolverMultistepScheduler(
        algorithm_type="dpmsolver++", solver_order=2, prediction_type="flow_prediction",
        use_flow_sigmas=True, flow_shift=shift,
    )


def run_diffusers(scheduler, fn, noise, sigmas, labels):
    """diffusers' loop with ``sigmas`` in place of its own (0.42 has no ``set_timesteps(sigmas=)``
    here); the model is called at the scheduler's sigma. Returns every state and the result."""
    scheduler.set_timesteps(len(sigmas) - 1)
    scheduler.sigmas = sigmas.clone()
    x, states = noise.clone(), []
    for i, t in enumerate(scheduler.timesteps):
        states.append(x.clone())
        v = fn(x, scheduler.sigmas[i].expand(x.shape[0]), labels)
        x = scheduler.step(v, t, x).prev_sample
    return states, x


def test_diffusers_flow_sigmas_are_shifted_from_0_999():
    """What differs from diffusers is the schedule alone: its flow sigmas start from
    ``0.999 * linspace(1, 0)`` (lambda stays finite), ours from ``linspace(1, 0)``."""
    for n, shift in [(10, 1.0), (20, 5.0)]:
        sch = diffusers_dpm_2m(shift)
        sch.set_timesteps(n)
        u = 0.999 * torch.linspace(1, 0, n + 1, dtype=torch.float64)
        expected = (shift * u / (1 + (shift - 1) * u)).float()
        torch.testing.assert_close(sch.sigmas, expected, atol=1e-7, rtol=0)
        assert float(sch.sigmas[0]) < 1.0 and float(flow_match_sigmas(n, shift)[0]) == 1.0


@pytest.mark.parametrize("schedule", ["diffusers", "flow_match_sigmas"])
@pytest.mark.parametrize("n,shift", [(10, 1.0), (15, 3.0), (20, 5.0)], ids=["n10-shift1", "n15-shift3", "n20-shift5"])
def test_matches_diffusers_step_by_step(dit, n, shift, schedule):
    sch = diffusers_dpm_2m(shift)
    sch.set_timesteps(n)
    sigmas = sch.sigmas.clone() if schedule == "diffusers" else flow_match_sigmas(n, shift)
    f = Recording(lambda x, s, labels: dit(x, s, labels))
    noise, lab = torch.randn(2, 3, 32, 32), labels_for(2)
    with torch.no_grad():
        r = dpm_target_only(f, noise, sigmas, labels=lab)
        states, ref = run_diffusers(sch, lambda x, s, labels: dit(x, s, labels), noise, sigmas, lab)
    assert len(f.states) == len(states) == n
    for i, (ours, theirs) in enumerate(zip(f.states, states)):
        torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-5, msg=lambda m: f"step {i}: {m}")
    torch.testing.assert_close(r.latents, ref, atol=2e-5, rtol=1e-5)


def test_matches_diffusers_on_the_shipped_guided_target():
    from sdsv.tiny.pipeline import TinyPipeline

    pipe = TinyPipeline.from_pretrained(names=["target"])
    target = pipe.denoiser("target", 3.0)
    fn = lambda x, s, labels: target(x, s, labels=labels)
    sigmas, lab = flow_match_sigmas(12, 3.0), pipe.encode(["a red circle"])
    noise = pipe.noise(1, 0)
    with torch.inference_mode():
        r = dpm_target_only(target, noise, sigmas, labels=lab)
        _, ref = run_diffusers(diffusers_dpm_2m(3.0), fn, noise, sigmas, lab)
    torch.testing.assert_close(r.latents, ref, atol=2e-5, rtol=1e-5)


class GaussianFlow:
    """Data ``x0 ~ N(mu, c^2)`` per element: the exact velocity and the exact ODE solution
    ``x(sigma) = (1 - sigma) mu + std(sigma) z`` with ``std^2 = (1 - sigma)^2 c^2 + sigma^2``."""

    def __init__(self, shape, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.mu = torch.randn(shape, generator=g, dtype=torch.float64)
        self.c = 0.5 + 1.5 * torch.rand(shape, generator=g, dtype=torch.float64)

    def __call__(self, x, sigma):
        s = sigma.view(-1, *([1] * (x.dim() - 1)))
        var = ((1 - s) * self.c) ** 2 + s**2
        return -self.mu + (s - (1 - s) * self.c**2) / var * (x - (1 - s) * self.mu)

    def endpoint(self, noise):
        return self.mu + self.c * noise


def test_second_order_convergence():
    """Halving the step roughly quarters the error (Euler: halves it). From sigma = 1 the
    uniform-in-sigma steps are O(1) in lambda near both ends, which costs a log factor: the
    error is ~ log(n) / n^2, so the ratio n -> 2n is 4 log(n) / log(2n) (3.3-3.5 here)."""
    flow = GaussianFlow((4, 64))
    noise = torch.randn(4, 64, dtype=torch.float64)
    exact = flow.endpoint(noise)
    ns = [20, 40, 80, 160]
    dpm, euler = [], []
    for n in ns:
        sig = flow_match_sigmas(n, dtype=torch.float64)
        dpm.append(float((dpm_target_only(flow, noise, sig).latents - exact).abs().max()))
        x = noise
        for i in range(n):
            x = x + (sig[i + 1] - sig[i]) * flow(x, sig[i].expand(4))
        euler.append(float((x - exact).abs().max()))
    for i, n in enumerate(ns[:-1]):
        ratio = dpm[i] / dpm[i + 1]
        assert 3.1 < ratio < 4.5, (n, dpm)
        assert 3.8 < ratio * math.log(2 * n) / math.log(n) < 4.2, (n, dpm)  # log-corrected
        assert 1.8 < euler[i] / euler[i + 1] < 2.2, (n, euler)
        assert dpm[i] < 0.2 * euler[i]


def test_first_step_from_sigma_1_is_euler_and_one_step_is_the_data_prediction():
    f = RowwiseDenoiser()
    noise = torch.randn(3, 5, dtype=torch.float64)
    sig = flow_match_sigmas(1, dtype=torch.float64)
    ones = torch.ones(3, dtype=torch.float64)
    torch.testing.assert_close(dpm_target_only(f, noise, sig).latents, noise - f(noise, ones), atol=1e-15, rtol=0)
    c = dpm_solver_2m_coefficients([1.0, 0.75, 0.5, 0.0])
    assert c[0] == (0.75, 0.25, 0.0)  # x - 0.25 v: Euler
    assert c[1][2] == 0.0  # r = inf after a step from lambda = -inf: the second step is first order too
    assert c[2] == (0.0, 1.0, 0.0)  # to sigma = 0: x_N = D


def test_per_sample_independence(dit):
    noise, lab, sig = torch.randn(3, 3, 32, 32), labels_for(3), flow_match_sigmas(12, 3.0)
    f = lambda x, s, labels: dit(x, s, labels)
    with torch.no_grad():
        batched = dpm_target_only(f, noise, sig, labels=lab)
        for b in range(3):
            alone = dpm_target_only(f, noise[b : b + 1], sig, labels=lab[b : b + 1])
            torch.testing.assert_close(batched.latents[b : b + 1], alone.latents, atol=1e-5, rtol=1e-5)
    rowwise = RowwiseDenoiser()
    batched = dpm_target_only(rowwise, noise, sig, labels=lab)
    for b in range(3):
        assert torch.equal(batched.latents[b], dpm_target_only(rowwise, noise[b : b + 1], sig, labels=lab[b : b + 1]).latents[0])


def test_counts_dtypes_and_progress(capsys):
    f = RowwiseDenoiser()
    seen = []

    def model(x, sigma, labels):
        seen.append(sigma.dtype)
        return f(x, sigma, labels).to(x.dtype)

    noise = torch.randn(2, 4, 4, dtype=torch.bfloat16)
    r = dpm_target_only(model, noise, flow_match_sigmas(7), labels=labels_for(2), progress=True)
    s = r.stats
    assert (s.target_calls, s.target_evals, s.draft_evals, s.windows) == (7, 14, 0, [])
    assert s.sampler_s >= 0 and s.target_s > 0
    assert r.latents.dtype == torch.bfloat16 and set(seen) == {torch.float32} and f.calls == [2] * 7
    assert "sdsv" in capsys.readouterr().err
    dpm_target_only(f, noise.float(), flow_match_sigmas(3), progress={"disable": True})
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("sigmas,match", [
    (torch.tensor([1.0, 0.5, 0.6, 0.0]), "strictly decreasing"),
    (torch.tensor([1.0, 0.5, 0.1]), "must end in 0"),
    (torch.tensor([1.5, 0.5, 0.0]), r"must lie in \[0, 1\].*sigmas\[0\]=1.5"),
    (torch.tensor([[1.0, 0.0]]), "1-D tensor"),
    (torch.tensor([1.0, float("nan"), 0.0]), "NaN or inf"),
])
def test_bad_sigmas(sigmas, match):
    with pytest.raises(ValueError, match=match):
        dpm_target_only(RowwiseDenoiser(), torch.randn(1, 4), sigmas)


def test_errors():
    f, sig = RowwiseDenoiser(), flow_match_sigmas(10)

    def nan_below_half(x, sigma):
        v = f(x, sigma)
        if float(sigma[0]) < 0.5:
            v[1, 2] = float("nan")
        return v

    step = int(torch.nonzero(sig < 0.5)[0])
    with pytest.raises(NonFiniteOutputError, match=rf"target model returned NaN/inf at step {step} \(sigma=0.4\) for sample 1"):
        dpm_target_only(nan_below_half, torch.randn(3, 4), sig)
    with pytest.raises(TypeError, match="target is not callable"):
        dpm_target_only(None, torch.randn(1, 4), sig)
    with pytest.raises(ValueError, match="noise contains NaN"):
        dpm_target_only(f, torch.tensor([[0.0, float("nan")]]), sig)
    with pytest.raises(ValueError, match="floating-point tensor"):
        dpm_target_only(f, torch.zeros(2, 4, dtype=torch.long), sig)
    with pytest.raises(ValueError, match=r"returned shape \(1, 3\) for input of shape \(1, 4\)"):
        dpm_target_only(lambda x, s: x[:, :3], torch.randn(1, 4), sig)
    with pytest.raises(TypeError, match="returned torch.float64 on cpu, but the latents are torch.float32"):
        dpm_target_only(lambda x, s: x.double(), torch.randn(1, 4), sig)
    with pytest.raises(ValueError, match="per-sample conditioning 'labels'"):
        dpm_target_only(f, torch.randn(2, 4), sig, labels=labels_for(3), per_sample=["labels"])
