"""benchmarks/forecast_windows.py: a replay takes exactly the recorded windows, the plans it builds
cover every step once, and each lab split is the line (or the damped forecast) where its answer is
known, so what the study measures is the forecast, not the tool."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
_spec = importlib.util.spec_from_file_location("forecast_windows",
                                               Path(__file__).parents[1] / "benchmarks" / "forecast_windows.py")
fw = importlib.util.module_from_spec(_spec)
sys.modules["forecast_windows"] = fw  # its dataclasses look their module up
_spec.loader.exec_module(fw)

PROMPTS, SEEDS = ["a red circle", "a blue ring"], [1, 2]


@pytest.fixture(scope="module")
def pipe():
    from sdsv.tiny.pipeline import TinyPipeline

    return TinyPipeline.from_pretrained(names=("target",))


def sample(pipe, policy, forecast=None, net=None, split=None):
    from sdsv.forecast import LINE

    if net is not None:
        pipe.self_draft = fw.LF.learned_self_draft(pipe, net, split=split)
    try:
        with torch.inference_mode():
            return pipe(PROMPTS, policy=policy, draft="self", solver="euler", seed=SEEDS, forecast=forecast or LINE)
    finally:
        if net is not None:
            del pipe.self_draft


def recorded(pipe):
    from sdsv import ErrorControlled

    rec = fw.Recording(ErrorControlled(50, tol=0.3))
    return rec, sample(pipe, rec)


def covers_every_step_once(plan: dict) -> bool:
    step = 0
    for st in sorted(plan):
        if st != step:
            return False
        step = st + plan[st][1] + 1
    return step == 50


def test_a_replay_takes_the_recorded_windows_and_gives_the_same_images(pipe):
    rec, out = recorded(pipe)
    plans = rec.plans()
    assert all(covers_every_step_once(p) for p in plans)
    assert any(kind == "unverified" for p in plans for kind, _ in p.values())
    replay = fw.Replay(plans_=tuple(plans))
    again = sample(pipe, replay)
    assert again.stats.target_evals == out.stats.target_evals
    torch.testing.assert_close(again.images, out.images, rtol=0, atol=0)
    assert replay.plans() == plans
    with pytest.raises(ValueError, match="plans for a batch"):
        fw.Replay(plans_=tuple(plans[:1])).start(2)


def test_recordings_and_replays_over_several_calls_keep_each_image_its_own_windows(pipe):
    """An image set runs in batches: the second call's samples follow the first's."""
    from sdsv import ErrorControlled
    from sdsv.forecast import LINE

    def calls(policy):
        with torch.inference_mode():
            return [pipe([p], policy=policy, draft="self", solver="euler", seed=[s], forecast=LINE).images
                    for p, s in zip(PROMPTS, SEEDS)]

    rec = fw.Recording(ErrorControlled(50, tol=0.3))
    first = calls(rec)
    whole_rec, whole = recorded(pipe)
    assert rec.plans() == whole_rec.plans()  # batch mates do not change an image's windows
    replay = fw.Replay(plans_=tuple(rec.plans()))
    for got, want in zip(calls(replay), first):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="0 plans for a batch of 1"):
        replay.start(1)


def test_the_plans_built_from_a_recording_cover_every_step_once(pipe):
    rec, _ = recorded(pipe)
    plans = rec.plans()
    for plan in plans:
        for until in (10, 30, 50):
            cut = fw.windows_until(plan, until)
            assert covers_every_step_once(cut)
            assert all(kind == "target" or st + k < until for st, (kind, k) in cut.items())
        exact = fw.target_before(plan, 10)
        assert covers_every_step_once(exact) and all(exact[st] == ("target", 0) for st in range(10))
    tested, reference, inside = fw.one_window_plans(plans, 10)
    for b, (t, r) in enumerate(zip(tested, reference)):
        assert covers_every_step_once(t) and covers_every_step_once(r)
        drafted = [st for st, (kind, _) in t.items() if kind == "unverified" and st >= 10]
        assert len(drafted) == (1 if b in inside else 0)
        assert all(kind == "target" for st, (kind, _) in r.items() if st >= 10)


def test_the_lab_splits_are_the_line_or_the_damped_forecast_where_they_should_be(pipe):
    from sdsv import ErrorControlled
    from sdsv.forecast import DAMPED

    rec, line = recorded(pipe)
    replay = lambda: fw.Replay(plans_=tuple(rec.plans()))  # noqa: E731
    trained = fw.LF.make_net(192)
    torch.nn.init.normal_(trained[-1].weight, std=0.05)  # a net whose correction is not zero
    fw.OneWindowSplit.inside = {}  # the net nowhere: the line
    for net, split in ((fw.ZERO_NET, fw.ResidualErrors), (trained, fw.OneWindowSplit)):
        got = sample(pipe, replay(), net=net, split=split)
        torch.testing.assert_close(got.images, line.images, rtol=0, atol=1e-4)
    assert fw.ResidualErrors.seen and all(t > 0 for rows in fw.ResidualErrors.seen.values() for _, _, t, _ in rows)
    fw.OneWindowSplit.inside = {0: set(range(50)), 1: set(range(50))}  # the net everywhere: the learned split
    torch.testing.assert_close(sample(pipe, replay(), net=trained, split=fw.OneWindowSplit).images,
                               sample(pipe, replay(), net=trained).images, rtol=0, atol=1e-5)
    damped = sample(pipe, ErrorControlled(20, tol=0.3), forecast=DAMPED)
    based = sample(pipe, ErrorControlled(20, tol=0.3), forecast=DAMPED, net=fw.ZERO_NET, split=fw.DampedBase)
    assert based.stats.target_evals == damped.stats.target_evals
    torch.testing.assert_close(based.images, damped.images, rtol=0, atol=1e-4)
    scaled = fw.scaled(trained, 0.25)
    torch.testing.assert_close(scaled[-1].weight, 0.25 * trained[-1].weight)


def test_the_first_window_slope_changes_the_two_anchor_forecast_only():
    from sdsv.forecast import DAMPED

    two, three = [0.98, 1.0][::-1], [0.9, 0.7, 0.5]
    same = fw.FirstWindowSlope(DAMPED, 0.95)  # the damped forecast's own slope: the damped forecast
    for sigmas in (two, three):
        assert same.coefficients(sigmas, 0.9) == pytest.approx(DAMPED.coefficients(sigmas, 0.9))
    other = fw.FirstWindowSlope(DAMPED, 0.5)
    assert other.coefficients(three, 0.4) == pytest.approx(DAMPED.coefficients(three, 0.4))
    reuse, line = [0.0, 1.0], fw.lagrange_coefficients(two, 0.9)
    assert other.coefficients(two, 0.9) == pytest.approx([r + 0.5 * (c - r) for r, c in zip(reuse, line)])


def whole_run_script():
    spec = importlib.util.spec_from_file_location("learned_forecast_whole_run",
                                                  Path(__file__).parents[1] / "benchmarks" / "learned_forecast_whole_run.py")
    wr = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wr)
    return wr


@pytest.mark.parametrize("argv", [["--train-start", "20000"], ["--train-start", "21104"],
                                  ["--train-start", "21056", "--train-images", "96"]])
def test_the_whole_run_script_trains_on_no_image_it_reports_or_chooses_on(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        whole_run_script().main(argv)
    assert stop.value.code == 2
    assert "choose nothing" in capsys.readouterr().err


def test_the_whole_run_script_trains_in_its_own_windows_only_from_a_net(capsys):
    with pytest.raises(SystemExit) as stop:
        whole_run_script().main(["--own-windows"])
    assert stop.value.code == 2
    assert "--own-windows needs --init" in capsys.readouterr().err


@pytest.mark.parametrize("mode", [["--evaluate", "report"], ["--time"]])
def test_the_whole_run_script_says_which_net_is_missing(mode):
    with pytest.raises(SystemExit, match="no trained net at .*whole_run_line_7.pt: train it first"):
        whole_run_script().main(["--iters", "7", *mode])


def test_the_whole_run_simulation_is_the_sampler_with_autograd(pipe):
    """benchmarks/learned_forecast_whole_run.py trains through its own copy of the sampler's
    Euler steps over fixed windows: it must give the sampler's images, for the line and for a
    net with a correction, and carry gradients to the net."""
    wr = whole_run_script()
    rec, line = recorded(pipe)
    plans = rec.plans()
    trained = fw.LF.make_net(192)
    torch.nn.init.normal_(trained[-1].weight, std=0.02)
    with torch.no_grad():
        torch.testing.assert_close(wr.simulate(pipe, fw.ZERO_NET, PROMPTS, SEEDS, plans), line.images, rtol=0, atol=1e-4)
        want = sample(pipe, fw.Replay(plans_=tuple(plans)), net=trained).images
        torch.testing.assert_close(wr.simulate(pipe, trained, PROMPTS, SEEDS, plans), want, rtol=0, atol=1e-4)
        from sdsv.forecast import DAMPED  # the damped base: its two- and three-anchor forecasts, and the net on it

        damped = sample(pipe, fw.Replay(plans_=tuple(plans)), forecast=DAMPED).images
        torch.testing.assert_close(wr.simulate(pipe, fw.ZERO_NET, PROMPTS, SEEDS, plans, base=DAMPED), damped,
                                   rtol=0, atol=1e-4)
        want = sample(pipe, fw.Replay(plans_=tuple(plans)), forecast=DAMPED, net=trained, split=fw.DampedBase).images
        torch.testing.assert_close(wr.simulate(pipe, trained, PROMPTS, SEEDS, plans, base=DAMPED), want,
                                   rtol=0, atol=1e-4)
    for p in pipe.target.parameters():
        p.requires_grad_(False)
    wr.simulate(pipe, trained, PROMPTS, SEEDS, plans).square().sum().backward()
    assert trained[-1].weight.grad is not None and trained[-1].weight.grad.abs().sum() > 0
