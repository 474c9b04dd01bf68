"""Speculation on DPM-Solver++(2M) and UniPC inside ``sdsv.sample`` (``solver=``): the sampler's
invariants hold for every solver, target-only matches diffusers' schedulers, and the general
linear-rule path agrees with Euler's fused ops."""

import pytest
import torch

from sdsv import AcceptanceTest, ErrorControlled, FixedInterval, SelfDraft, StagePlan, flow_match_sigmas, sample
from sdsv.policies import StatelessState, WindowPolicy
from multistep_oracle import sample_dpm_solver_2m
from sdsv.solvers import SOLVERS, DPMSolver2M, Euler, Solver, get_solver

from test_multistep import Recording, diffusers_dpm_2m, run_diffusers
from toy_models import RowwiseDenoiser, RowwiseSplit, random_dit

EXACT = AcceptanceTest("rel_l2", 0.0)   # impossible for any draft that differs at all
LOOSE = AcceptanceTest("rel_l2", 1e-3)  # passes a draft identical to the target


@pytest.fixture(scope="module")
def dit():
    return random_dit()


def labels_for(b):
    return torch.tensor([[i % 8, i % 6] for i in range(b)])


def dit_fn(model):
    return lambda x, sigma, labels: model(x, sigma, labels)


class EulerAsLinearRule(Solver):
    """Euler's matrices through the general path (not the Euler class, so not the fused ops)."""

    name, history = "euler-linear", 0

    def step_matrices(self, sigmas):
        return Euler().step_matrices(sigmas)


def diffusers_unipc(shift):
    diffusers = pytest.importorskip("diffusers")
    return diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)


@pytest.mark.parametrize("schedule", ["diffusers", "flow_match_sigmas"])
@pytest.mark.parametrize("n,shift", [(6, 3.0), (15, 5.0), (20, 1.0)], ids=["n6-shift3", "n15-shift5", "n20-shift1"])
def test_unipc_target_only_matches_diffusers_step_by_step(dit, schedule, n, shift):
    """UniPC bh2 with its corrector (the Wan2.1 checkpoints' scheduler): every state the model sees."""
    sch = diffusers_unipc(shift)
    sch.set_timesteps(n)
    sigmas = sch.sigmas.clone() if schedule == "diffusers" else flow_match_sigmas(n, shift)
    f = Recording(dit_fn(dit))
    noise, lab = torch.randn(2, 3, 32, 32), labels_for(2)
    with torch.no_grad():
        r = sample(f, None, noise, sigmas, StagePlan.target_only(n), solver="unipc", labels=lab)
        states, ref = run_diffusers(sch, dit_fn(dit), noise, sigmas, lab)
    assert len(f.states) == len(states) == n
    for i, (ours, theirs) in enumerate(zip(f.states, states)):
        torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-5, msg=lambda m: f"step {i}: {m}")
    torch.testing.assert_close(r.latents, ref, atol=2e-5, rtol=1e-5)


def test_unipc_is_second_order_and_differs_from_dpm():
    """On an exact Gaussian flow, UniPC's error falls ~4x per halving of the step (its corrector
    makes it no worse than DPM-Solver++(2M) here), and the two rules are different rules."""
    from test_multistep import GaussianFlow
    flow = GaussianFlow((3, 4))
    noise = torch.randn(1, 3, 4, dtype=torch.float64)
    exact = flow.endpoint(noise)
    errs = {}
    for solver in ("unipc", "dpm++2m"):
        for n in (16, 32):
            sig = flow_match_sigmas(n, shift=1.0, dtype=torch.float64)[0:]
            r = sample(lambda x, s: flow(x, s), None, noise, sig, StagePlan.target_only(n), solver=solver)
            errs[solver, n] = (r.latents - exact).abs().max().item()
    assert errs["unipc", 32] < errs["unipc", 16] / 3
    assert errs["unipc", 32] <= errs["dpm++2m", 32] * 1.5 and errs["unipc", 16] != errs["dpm++2m", 16]


@pytest.mark.parametrize("schedule", ["diffusers", "flow_match_sigmas"])
def test_target_only_matches_diffusers_and_the_plain_loop(dit, schedule):
    sch = diffusers_dpm_2m(3.0)
    sch.set_timesteps(15)
    sigmas = sch.sigmas.clone() if schedule == "diffusers" else flow_match_sigmas(15, 3.0)
    f = Recording(dit_fn(dit))
    noise, lab = torch.randn(2, 3, 32, 32), labels_for(2)
    with torch.no_grad():
        r = sample(f, None, noise, sigmas, StagePlan.target_only(15), solver="dpm++2m", labels=lab)
        states, ref = run_diffusers(sch, dit_fn(dit), noise, sigmas, lab)
        plain = sample_dpm_solver_2m(dit_fn(dit), noise, sigmas, labels=lab)
    for i, (ours, theirs) in enumerate(zip(f.states, states)):
        torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-5, msg=lambda m: f"step {i}: {m}")
    torch.testing.assert_close(r.latents, ref, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(r.latents, plain.latents, atol=1e-5, rtol=1e-5)
    assert r.stats.target_calls == 15


@pytest.mark.parametrize("solver", ["dpm++2m", "unipc"])
@pytest.mark.parametrize("verify", ["endpoints", "full"])
@pytest.mark.parametrize("plan", ["paper_default", "fast", "slow", "minimal_warmup"])
def test_identical_draft_accepts_all_and_matches_target_only(dit, verify, plan, solver):
    f = dit_fn(dit)
    noise, sig, lab = torch.randn(2, 3, 32, 32), flow_match_sigmas(30, shift=3.0), labels_for(2)
    with torch.no_grad():
        ref = sample(f, None, noise, sig, StagePlan.target_only(30), solver=solver, labels=lab)
        r = sample(f, f, noise, sig, getattr(StagePlan, plan)(30), verify=verify, accept=LOOSE, solver=solver,
                   labels=lab)
    assert r.stats.windows and all(w.accepted == w.k for w in r.stats.windows)
    torch.testing.assert_close(r.latents, ref.latents, atol=2e-5, rtol=1e-5)
    assert r.stats.target_calls < 30


class TargetStepsThatMayDraft(WindowPolicy):
    """Target steps only, from a policy that declares a draft (its rounds are laid out as a
    speculative policy's; a target-only policy must give the same numbers)."""

    name = "target_steps"

    def __init__(self, num_steps):
        self.num_steps = num_steps

    def start(self, batch):
        return StatelessState(lambda step: ("target", 0))


@pytest.mark.parametrize("solver", ["dpm++2m", "unipc", EulerAsLinearRule()], ids=["dpm++2m", "unipc", "euler-linear"])
@pytest.mark.parametrize("verify", ["endpoints", "full"])
def test_impossible_threshold_reproduces_target_steps_exactly(verify, solver):
    """Every window rejected: every step is a target step, with the same op and inputs as target
    steps under per-sample history, and as a target-only policy's."""
    target, draft = RowwiseDenoiser(), RowwiseDenoiser(bias=0.01)
    noise, sig, lab = torch.randn(3, 4, 5, 6), flow_match_sigmas(50), labels_for(3)
    ref = sample(target, draft, noise, sig, TargetStepsThatMayDraft(50), solver=solver, labels=lab)
    alone = sample(target, None, noise, sig, StagePlan.target_only(50), solver=solver, labels=lab)
    r = sample(target, draft, noise, sig, StagePlan.paper_default(50), verify=verify, accept=EXACT, solver=solver,
               labels=lab)
    assert r.stats.windows and all(w.accepted == 0 for w in r.stats.windows)
    assert torch.equal(r.latents, ref.latents)
    assert torch.equal(alone.latents, ref.latents)
    assert r.stats.target_calls == 50


@pytest.mark.parametrize("verify", ["endpoints", "full"])
def test_general_path_with_eulers_matrices_equals_the_fused_euler_path(verify):
    """The same windows and decisions, the same latents (to fp32 rounding of another op order)."""
    target, draft = RowwiseDenoiser(), RowwiseDenoiser(bias=0.02, bad_below=0.4)
    noise, sig = torch.randn(3, 8), flow_match_sigmas(37)
    acc = AcceptanceTest("rel_l2", 0.01)
    fused = sample(target, draft, noise, sig, StagePlan(37, 3, 11, 4, 7), verify=verify, accept=acc)
    general = sample(target, draft, noise, sig, StagePlan(37, 3, 11, 4, 7), verify=verify, accept=acc,
                     solver=EulerAsLinearRule())
    assert [(w.sample, w.start, w.k, w.accepted) for w in fused.stats.windows] == \
           [(w.sample, w.start, w.k, w.accepted) for w in general.stats.windows]
    assert any(w.accepted == 0 for w in fused.stats.windows) and any(w.accepted > 0 for w in fused.stats.windows)
    torch.testing.assert_close(general.latents, fused.latents, atol=1e-6, rtol=1e-6)


def test_history_follows_the_accepted_path():
    """Mixed accepted and rejected windows in one batch: each sample's result is what it gets
    alone (its history is its own and a rejected window's history is discarded), and equals a
    hand-run DPM-Solver++(2M) over the predictions the windows used."""
    target, draft = RowwiseDenoiser(), RowwiseDenoiser(bias=0.02, bad_below=0.4)
    noise, sig = torch.randn(3, 8, dtype=torch.float64), flow_match_sigmas(30, dtype=torch.float64)
    acc = AcceptanceTest("rel_l2", 0.01)
    plan = StagePlan(30, 2, 10, 3, 6)
    batched = sample(target, draft, noise, sig, plan, accept=acc, solver="dpm++2m")
    accepted = [w.accepted for w in batched.stats.windows]
    assert 0 in accepted and any(a > 0 for a in accepted)
    for b in range(3):
        alone = sample(target, draft, noise[b: b + 1], sig, plan, accept=acc, solver="dpm++2m")
        torch.testing.assert_close(batched.latents[b: b + 1], alone.latents, atol=1e-12, rtol=0)
        # replay: which model stepped from each state of the committed path
        used = ["target"] * 30
        for w in alone.stats.windows:
            for j in range(w.accepted):
                used[w.start + j] = "draft"
        mats = DPMSolver2M().step_matrices([float(s) for s in sig])
        x, d_prev = noise[b: b + 1].clone(), torch.zeros_like(noise[b: b + 1])
        for n in range(30):
            model = target if used[n] == "target" else draft
            v = model(x, sig[n].expand(1))
            (a_v, a_y, a_h), (b_v, b_y, _) = mats[n]
            x, d_prev = a_v * v + a_y * x + a_h * d_prev, b_v * v + b_y * x
        torch.testing.assert_close(alone.latents, x, atol=1e-12, rtol=0)


@pytest.mark.parametrize("plan", [FixedInterval(24, every=2), FixedInterval(24, every=3),
                                  ErrorControlled(24, tol=0.1, k_min=1, k_init=1, k_max=3)],
                         ids=["cache-2", "cache-3", "error-controlled"])
@pytest.mark.parametrize("solver", ["dpm++2m", "unipc"])
def test_unverified_windows_with_a_perfect_draft_reproduce_target_only(plan, solver):
    target = RowwiseDenoiser()
    noise, sig = torch.randn(2, 3, 4, dtype=torch.float64), flow_match_sigmas(24, shift=2.0, dtype=torch.float64)
    ref = sample(target, None, noise, sig, StagePlan.target_only(24), solver=solver)
    r = sample(target, target, noise, sig, plan, solver=solver)
    assert r.stats.unverified_windows > 0 and r.stats.target_calls < 24
    torch.testing.assert_close(r.latents, ref.latents, atol=1e-12, rtol=0)


@pytest.mark.parametrize("solver", ["dpm++2m", "unipc"])
def test_self_draft_on_second_order_solvers(solver):
    """The forecast self-draft's schedules run on the multistep solvers: an impossible threshold and
    a rejected-everything error controller reproduce target steps exactly; the cache stays close."""
    split = RowwiseSplit()
    noise, sig = torch.randn(3, 4, 5), flow_match_sigmas(30, shift=2.0)
    ref = sample(None, None, noise, sig, TargetStepsThatMayDraft(30), self_draft=SelfDraft(split), solver=solver)
    r = sample(None, None, noise, sig, StagePlan.slow(30), accept=EXACT, self_draft=SelfDraft(split), solver=solver)
    assert r.stats.windows and torch.equal(r.latents, ref.latents)
    rej = sample(None, None, noise, sig, ErrorControlled(30, tol=1e-9, reject_above=1e-12, k_init=3),
                 self_draft=SelfDraft(split), solver=solver)
    assert rej.stats.rejected_unverified == rej.stats.unverified_windows > 0
    assert torch.equal(rej.latents, ref.latents)
    cached = sample(None, None, noise, sig, FixedInterval(30, every=2), self_draft=SelfDraft(split), solver=solver)
    assert cached.stats.target_calls < 20
    err = (cached.latents - ref.latents).norm() / ref.latents.norm()
    assert 0 < err < 0.05


def test_solver_argument_errors():
    target = RowwiseDenoiser()
    noise, sig = torch.randn(1, 4), flow_match_sigmas(5)
    with pytest.raises(ValueError, match="unknown solver 'heun'; choose from euler, dpm\\+\\+2m, unipc"):
        sample(target, None, noise, sig, StagePlan.target_only(5), solver="heun")

    class Broken(Solver):
        name, history = "broken", 1

        def step_matrices(self, sigmas):
            return [[[1.0, 1.0]] for _ in sigmas[1:]]  # 1 x 2: a history-1 rule needs 2 x 3

    with pytest.raises(ValueError, match="step 0's matrix must be 2 x 3"):
        sample(target, None, noise, sig, StagePlan.target_only(5), solver=Broken())

    class NotFinite(Solver):
        name, history = "nan", 0

        def step_matrices(self, sigmas):
            return [[[float("nan"), 1.0]] for _ in sigmas[1:]]

    with pytest.raises(ValueError, match="step 0's matrix is not finite"):
        sample(target, None, noise, sig, StagePlan.target_only(5), solver=NotFinite())
    assert get_solver("dpm++2m") is SOLVERS["dpm++2m"] and isinstance(get_solver(Euler()), Euler)
