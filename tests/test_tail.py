"""`sdsv eval --experiment tail`: the percentile against numpy, the seed sets, the method list,
and a --quick run (both yardsticks, the percentiles, the verdicts, the plot; numbers not checked)."""

import json

import numpy as np
import pytest
import torch

from sdsv.cli import main as cli_main
from sdsv.evaluation.tail import (
    CHECK_FACTOR, CONVERGED_FACTOR, TABLE_SEEDS, SeedSets, converged_reference, convergence_checks, tail_methods, verdicts,
)
from sdsv import ErrorControlled
from sdsv.metrics import percentile, tail_summary
from sdsv.tiny.pipeline import TinyPipeline


# ---- the percentile -------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 5, 48, 1056])
@pytest.mark.parametrize("q", [0, 1, 5, 12.5, 50, 95, 100])
def test_percentile_matches_numpy_linear(n, q):
    values = np.random.default_rng(n).normal(35, 6, n)
    assert percentile(values.tolist(), q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12, abs=1e-12)
    assert percentile(torch.tensor(values), q) == pytest.approx(float(np.percentile(values, q)), rel=1e-6)


def test_percentile_on_known_data():
    v = list(range(1, 101))  # 1..100: the p-th percentile is 1 + 0.99 p
    assert percentile(v, 5) == pytest.approx(5.95) and percentile(v, 1) == pytest.approx(1.99)
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # unsorted input
    assert percentile([20.0, float("inf"), float("inf")], 90) == float("inf")  # identical images: not nan
    with pytest.raises(ValueError):
        percentile([], 5)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_tail_summary():
    s = tail_summary(torch.tensor([30.0, 40.0, 50.0, 20.0]))
    assert s == {"mean": 35.0, "p5": pytest.approx(21.5), "p1": pytest.approx(20.3), "worst": 20.0}


# ---- the seed sets and the methods -----------------------------------------------------------
def test_default_seed_sets_are_disjoint_and_cover_every_prompt():
    from sdsv.evaluation.cli import FULL
    from sdsv.evaluation.runner import balanced_prompts

    sets = SeedSets(FULL["tail_images"], FULL["calibration_images"])
    sets.check_disjoint()
    report = set(sets.report_seeds)
    assert len(report) >= 1024 and not report & set(TABLE_SEEDS) and FULL["tail_images"] % FULL["tail_batch"] == 0
    report_prompts = balanced_prompts(sets.report)
    assert len(set(report_prompts)) == 48 and {report_prompts.count(p) for p in report_prompts} == {22}  # 22 seeds each
    # the tail study chooses configurations on the seeds that follow the report set's
    study = SeedSets(FULL["tail_images"], 96)
    study.check_disjoint()
    assert study.calibration_seeds == range(21056, 21152) and len(set(balanced_prompts(1152)[1056:])) == 48
    with pytest.raises(ValueError, match="overlap"):
        SeedSets(300, 10, start=10_000).check_disjoint()


def test_tail_methods_at_50_steps():
    ms = tail_methods(50)
    labels = [m.label for m in ms]
    assert labels == ["target-only (50 steps)", "target-only (15 steps)", "target-only (25 steps, dpm++2m)",
                      "target-only (12 steps, unipc)", "cache (every 3)", "faithful: error-ctrl corrected (self, damped, x0 tol 0.3, k<=5, last step draft)",
                      "accurate: error-ctrl corrected on unipc (self, 26 steps)"]
    faithful, accurate = ms[-2], ms[-1]
    assert faithful.policy == ErrorControlled.faithful(50) and faithful.solver == "euler" and faithful.draft == "self"
    assert accurate.policy == ErrorControlled.accurate(26) and accurate.solver == "unipc"
    assert (accurate.solver, accurate.policy.num_steps) == TinyPipeline.intent_defaults("accurate")  # the intent the pipeline runs
    conv = converged_reference(50)
    assert conv.solver == "dpm++2m" and conv.policy.num_steps == CONVERGED_FACTOR * 50 == 100
    assert [(m.solver, m.policy.num_steps) for m in convergence_checks(50)] == [("dpm++2m", CHECK_FACTOR * 50)]


def test_verdicts_use_the_5th_percentile():
    rows = [{"method": "ref", "speedup": 1.0, "batched_speedup": 1.0, "fid_p5": None, "acc_p5": 30.0},
            {"method": "a", "speedup": 2.0, "batched_speedup": 2.0, "fid_p5": 35.0, "acc_p5": 29.0},
            {"method": "b", "speedup": 1.5, "batched_speedup": 2.5, "fid_p5": 34.0, "acc_p5": 28.0}]
    text, lists = verdicts(rows)
    assert lists["dominated_fid_p5_speedup"] == {"a": [], "b": ["a"]}
    assert lists["dominated_fid_p5_batched_speedup"] == {"a": [], "b": []}
    assert lists["dominated_acc_p5_speedup"] == {"ref": [], "a": [], "b": ["a"]}
    assert "fidelity p5, by latency speedup" in text and "accuracy p5, by batched throughput speedup" in text


# ---- end to end -----------------------------------------------------------------------------
@pytest.mark.slow
def test_eval_quick_tail(tmp_path, capsys):
    assert cli_main(["eval", "--quick", "--experiment", "tail", "--out", str(tmp_path), "--threads", "1", "--quiet",
                     "--no-compile"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tail.json", "tail.md", "tail.png"]
    md = (tmp_path / "tail.md").read_text()
    assert md in capsys.readouterr().out
    data = json.loads((tmp_path / "tail.json").read_text())
    assert data["report_seeds"] == [20000, 20003] and data["calibration_seeds"] == [20004, 20005]
    assert data["converged_reference"] == "target-only (16 steps, dpm++2m)"
    assert [c["method"] for c in data["convergence"]] == [
        "target-only (32 steps, dpm++2m)", "target-only (8 steps) (the fidelity reference)"]
    rows = data["rows"]
    assert [r["method"] for r in rows] == [m.label for m in tail_methods(8)]
    ref, others = rows[0], rows[1:]
    assert ref["speedup"] == 1.0 and "fid_p5" not in ref and ref["acc_p5"] <= ref["acc_mean"]
    for r in others:
        for y in ("fid", "acc", "cal_fid", "cal_acc"):
            assert r[f"{y}_mean"] >= r[f"{y}_p5"]
        for y in ("fid", "acc"):
            assert r[f"{y}_p5"] >= r[f"{y}_p1"] >= r[f"{y}_worst"] and 0 < r[f"{y}_ssim"] <= 1
        assert r["target_evals"] > 0 and r["speedup"] > 0 and r["batched_speedup"] > 0
    assert set(data["dominated_fid_p5_speedup"]) == {r["method"] for r in others}
    assert set(data["dominated_acc_p5_speedup"]) == {r["method"] for r in rows}
    for head in ("fid. p5", "fid. p1", "fid. worst", "fid. SSIM", "acc. p5", "acc. p1", "acc. worst", "acc. SSIM"):
        assert f"| {head} |" in md
    assert "**How converged the reference is**" in md and "**Calibration set (2 images)" in md
    assert "seeds 20000..20003" in md and "calibration set seeds 20004..20005" in md and "machine:" in md
    png = (tmp_path / "tail.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_eval_tail_sizes_are_checked(capsys):
    with pytest.raises(SystemExit):
        cli_main(["eval", "--experiment", "tail", "--tail-images", "50", "--tail-batch", "48"])
    assert "--tail-images: a multiple of --tail-batch" in capsys.readouterr().err
