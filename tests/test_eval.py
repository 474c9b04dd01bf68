"""`sdsv eval`: the classifier-space metrics, FLOP counting (the self-draft's too), the shared
Method and the dominance verdicts, the pareto comparison, and a --quick smoke run of every
experiment (outputs well-formed; the numbers are not checked)."""

import json
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sdsv import AcceptanceTest, ErrorControlled, FixedInterval, StagePlan
from sdsv.cli import main as cli_main
from sdsv.forecast import DAMPED
from sdsv.evaluation import (
    ClassifierFeatures, CountingPipeline, FlopTable, balanced_prompts, frechet_distance, frechet_distance_from_stats,
    inception_score, perceptual_distance, prompt_alignment,
)
from sdsv.evaluation.experiments import _vs_fewer, _who_wins
from sdsv.evaluation.methods import Method, dominated_by, fewer_steps, intent_methods, on_dpm_methods, self_draft_methods
from sdsv.tiny.classifier import ShapeClassifier
from sdsv.tiny.data import class_index, make_batch, num_classes, parse_prompt
from sdsv.tiny.model import TinyDiT, TinyDiTConfig
from sdsv.tiny.weights import load_model, shipped_path

from toy_models import random_dit


# ---- FD-tiny -------------------------------------------------------------------------------------
def test_fd_of_identical_sets_is_zero():
    f = torch.randn(400, 16, generator=torch.Generator().manual_seed(0)) @ torch.randn(16, 16)
    assert frechet_distance(f, f) < 1e-8


def test_fd_of_a_shift_is_its_squared_length_and_grows():
    f = torch.randn(300, 8, generator=torch.Generator().manual_seed(1))
    shift = torch.zeros(8)
    values = []
    for d in (0.5, 1.0, 2.0):
        shift[0] = d
        values.append(frechet_distance(f, f + shift))
        assert values[-1] == pytest.approx(d * d, rel=1e-6)  # same covariance: only the means differ
    assert values == sorted(values)


def test_fd_from_stats_matches_the_closed_form_for_commuting_covariances():
    g = torch.Generator().manual_seed(2)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    s1, s2 = torch.rand(6, generator=g, dtype=torch.float64) + 0.1, torch.rand(6, generator=g, dtype=torch.float64) + 0.1
    mu1, mu2 = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    c1, c2 = q @ torch.diag(s1) @ q.T, q @ torch.diag(s2) @ q.T
    expect = float((mu1 - mu2).pow(2).sum() + (s1.sqrt() - s2.sqrt()).pow(2).sum())
    assert frechet_distance_from_stats(mu1, c1, mu2, c2) == pytest.approx(expect, rel=1e-9)
    assert frechet_distance_from_stats(mu2, c2, mu1, c1) == pytest.approx(expect, rel=1e-9)


def test_fd_needs_two_samples():
    with pytest.raises(ValueError, match="n >= 2"):
        frechet_distance(torch.zeros(1, 4), torch.zeros(5, 4))


# ---- IS-tiny and alignment ------------------------------------------------------------------------
def test_inception_score_bounds():
    c = 12
    confident_spread = torch.eye(c).repeat(3, 1) * 50.0  # every class equally often, confidently
    assert inception_score(confident_spread) == pytest.approx(c, rel=1e-6)
    one_answer = torch.zeros(30, c)
    one_answer[:, 4] = 50.0
    assert inception_score(one_answer) == pytest.approx(1.0, abs=1e-9)
    rnd = inception_score(torch.randn(200, c, generator=torch.Generator().manual_seed(3)) * 2)
    assert 1.0 < rnd < c


def test_prompt_alignment_counts_matches():
    logits = torch.tensor([[3.0, 0.0], [0.0, 1.0], [2.0, 5.0], [1.0, 0.0]])
    assert prompt_alignment(logits, torch.tensor([0, 1, 0, 1])) == 0.5
    with pytest.raises(ValueError):
        prompt_alignment(logits, torch.tensor([0, 1]))


def test_alignment_is_high_on_real_data_and_low_on_wrong_prompts():
    feats = ClassifierFeatures(load_model(shipped_path("classifier")))
    x, c, s = make_batch(192, torch.Generator().manual_seed(99))
    f = feats((x + 1) / 2)
    truth = class_index(c, s)
    assert prompt_alignment(f.logits, truth) > 0.95
    assert prompt_alignment(f.logits, (truth + 1) % num_classes()) < 0.1
    assert inception_score(f.logits) > 0.7 * num_classes()  # real data of all classes: confident and diverse


# ---- LPIPS-tiny --------------------------------------------------------------------------------
def test_perceptual_distance_properties():
    torch.manual_seed(0)
    feats = ClassifierFeatures(ShapeClassifier())  # random weights suffice for the properties
    x, _, _ = make_batch(6, torch.Generator().manual_seed(4))
    a = (x + 1) / 2
    g = torch.Generator().manual_seed(5)
    noise = torch.randn(a.shape, generator=g)
    near, far = (a + 0.05 * noise).clamp(0, 1), (a + 0.3 * noise).clamp(0, 1)
    assert torch.allclose(perceptual_distance(feats, a, a), torch.zeros(6, dtype=torch.float64), atol=1e-10)
    d_near, d_far = perceptual_distance(feats, a, near), perceptual_distance(feats, a, far)
    assert (d_near > 0).all() and (d_far > d_near).all() and (d_far <= 4).all()
    torch.testing.assert_close(perceptual_distance(feats, near, a), d_near)
    torch.testing.assert_close(perceptual_distance(feats, a, near, chunk=4), d_near)  # chunking changes nothing
    with pytest.raises(ValueError):
        perceptual_distance(feats, a, a[:3])


# ---- FLOPs ------------------------------------------------------------------------------------
def _models():
    t = random_dit(dim=32, depth=2, seed=0)
    d = TinyDiT(TinyDiTConfig(dim=32, depth=1, heads=2, guidance_embed=True)).eval().requires_grad_(False)
    return {"target": t, "svd": d}


def test_flop_table_counts_per_call_with_attention_and_guidance():
    models = _models()
    table = FlopTable(models)
    f1, f3 = table.per_call("target", 1, 3.0), table.per_call("target", 3, 3.0)
    assert f1 > 0 and f3 == 3 * f1
    assert table.per_call("target", 2, 1.0) == f1  # CFG runs 2 rows per row; guidance 1 skips the uncond half
    # the meta-device count = the count on real tensors + the attention matmuls that the fused CPU kernel hides
    x, sig, lab = torch.randn(2, 3, 32, 32), torch.rand(2), torch.zeros(2, 2, dtype=torch.long)
    with FlopCounterMode(display=False) as fc:
        models["target"](x, sig, lab)
    cfg = models["target"].cfg
    seq = models["target"].tokens + (2 if cfg.cond_tokens else 0)  # image tokens + the two prompt-word tokens
    attention = cfg.depth * 2 * (2 * 2 * seq * seq * cfg.dim)  # QK^T and AV, 2 rows, 2 flops per MAC
    assert table.per_call("target", 1, 3.0) == fc.get_total_flops() + attention


def test_counted_calls_times_table_equal_the_sampler_counts():
    pipe = CountingPipeline(_models())
    out = pipe(["a red circle", "a blue ring", "a white cross"], policy=StagePlan.paper_default(12), draft="svd",
               accept=AcceptanceTest("x0_rms", 0.5), seed=[1, 2, 3])
    calls = pipe.reset_calls()
    assert sum(b * n for b, n in calls["target"].items()) == out.stats.target_evals
    assert sum(calls["target"].values()) == out.stats.target_calls
    assert sum(b * n for b, n in calls["svd"].items()) == out.stats.draft_evals
    table = FlopTable(pipe.models)
    flops = table.total(calls, 3.0)
    assert flops["target"] == out.stats.target_evals * table.per_call("target", 1, 3.0)
    assert flops["svd"] == out.stats.draft_evals * table.per_call("svd", 1, 3.0)
    assert pipe.calls == {}


def test_self_draft_calls_and_flops_are_counted_around_the_actual_calls():
    class Measured(CountingPipeline):
        """Counts the FLOPs of every actual self-draft draft call on real tensors."""

        draft_flops = 0

        def self_denoisers(self, self_draft, guidance=3.0):
            target, draft = super().self_denoisers(self_draft, guidance)

            def measured(x, sigma, **cond):
                with FlopCounterMode(display=False) as fc:
                    out = draft(x, sigma, **cond)
                self.draft_flops += fc.get_total_flops()
                return out

            return target, measured

    pipe = Measured(_models())
    out = pipe(["a red circle", "a blue ring"], policy=ErrorControlled(12, tol=0.3), draft="self", seed=[1, 2])
    calls = pipe.reset_calls()
    assert set(calls) == {"target", "self"}  # the self-draft's target calls are the target's
    assert sum(b * n for b, n in calls["target"].items()) == out.stats.target_evals
    assert sum(b * n for b, n in calls["self"].items()) == out.stats.draft_evals > 0
    table = FlopTable(pipe.models)
    flops = table.total(calls, 3.0)
    assert flops["self"] == pipe.draft_flops  # the meta-device table = the actual calls on real tensors
    assert flops["self"] == out.stats.draft_evals * table.per_call("self", 1, 3.0)
    assert 0 < table.per_call("self", 1, 3.0) < 0.2 * table.per_call("target", 1, 3.0)  # only the cheap parts


# ---- the shared Method and who wins --------------------------------------------------------------
def test_demo_and_eval_share_one_method_type():
    import sdsv.demo
    import sdsv.evaluation

    assert sdsv.demo.Method is sdsv.evaluation.Method is Method
    rows = sdsv.demo.methods_for(50, ["lite", "svd", "self"], "paper_default", "full", AcceptanceTest("x0_rms", 0.3))
    by = {m.label: m for m in rows}
    assert by["sdsv (lite)"].verify == "full" and by["sdsv (lite)"].accept == AcceptanceTest("x0_rms", 0.3)
    assert by["sdsv (self)"].accept == AcceptanceTest("x0_rms", 0.2) and by["sdsv (self)"].verify == "full"
    own = intent_methods(50) + self_draft_methods(50) + on_dpm_methods(50)
    assert [m.label for m in rows if m.draft == "self"] == [m.label for m in own]
    assert by["target-only (15 steps, dpm++2m)"] == fewer_steps(15, "dpm++2m")
    assert {m.schedule_type for m in rows} == {"target", "draft", "SDSV", "cache", "error-controlled"}


def test_method_key_holds_what_determines_the_images():
    slow, acc = StagePlan.slow(20), AcceptanceTest("x0_rms", 0.2)
    m = Method("a", slow, "self", "endpoints", acc)
    assert Method("b", slow, "self", "endpoints", acc).key == m.key  # the label does not matter
    assert Method("a", slow, "self", "endpoints", AcceptanceTest("x0_rms", 0.3)).key != m.key
    assert Method("a", slow, "self", "endpoints", acc, forecast=DAMPED).key != m.key
    assert Method("a", slow, "lite", "endpoints", acc, forecast=DAMPED).key == \
        Method("a", slow, "lite", "endpoints", acc).key  # the forecast is the self-draft's only
    cached = Method("c", FixedInterval(20, every=3), "self")
    assert not cached.speculates and cached.schedule_type == "cache"
    assert Method("c", FixedInterval(20, every=3), "self", "full", acc).key == cached.key  # nothing verified
    assert Method("c", ErrorControlled(20), "self").key != Method("c", ErrorControlled(20, tol=0.5), "self").key
    assert fewer_steps(10).key != fewer_steps(10, "dpm++2m").key
    assert fewer_steps(10).key == Method("x", StagePlan.target_only(10), "svd", "full").key  # no draft, no windows
    kw = fewer_steps(10, "dpm++2m").pipeline_kwargs()
    assert kw["solver"] == "dpm++2m" and "draft" not in kw
    with pytest.raises(ValueError, match="solver"):
        Method("x", StagePlan.target_only(10), solver="heun")
    with pytest.raises(ValueError, match="draft"):
        Method("x", StagePlan.target_only(10), draft="big")


def test_dominated_by_on_speed_and_worst_image():
    rows = [dict(method="ref", speedup=1.0, psnr_min=None), dict(method="a", speedup=2.0, psnr_min=30.0),
            dict(method="b", speedup=3.0, psnr_min=30.0), dict(method="c", speedup=1.5, psnr_min=35.0),
            dict(method="d", speedup=1.5, psnr_min=29.0), dict(method="e", speedup=3.0, psnr_min=30.0)]
    by = {r["method"]: dominated_by(rows, r) for r in rows}
    assert by == {"ref": [], "a": ["b", "e"], "b": [], "c": [], "d": ["a", "b", "c", "e"], "e": []}  # ties: both stay
    for r, f in zip(rows, (1.0, 4.0, 3.0, 1.0, 1.0, 3.0)):
        r["flops_speedup"] = f
    assert dominated_by(rows, rows[1], x="flops_speedup") == [] and dominated_by(rows, rows[2], "flops_speedup") == ["a"]


def test_who_wins_names_the_frontier_and_what_beats_each_row():
    rows = [dict(method="target-only", family="target", speedup=1.0, psnr_min=None),
            dict(method="euler 20", family="target", speedup=2.5, psnr_min=27.8),
            dict(method="dpm 15", family="target", speedup=3.3, psnr_min=31.0),
            dict(method="cache 3", family="cache", speedup=2.6, psnr_min=35.8),
            dict(method="error-ctrl", family="error-controlled", speedup=2.3, psnr_min=36.0),
            dict(method="sdsv self", family="SDSV", speedup=2.2, psnr_min=34.5)]
    text = _who_wins(rows, "speedup", "measured speedup")
    assert "slowest to fastest: error-ctrl 2.30x / 36.00 dB (error-controlled); cache 3 2.60x / 35.80 dB (cache); " \
           "dpm 15 3.30x / 31.00 dB (target)." in text
    assert "euler 20 2.50x / 27.80 dB by dpm 15, cache 3;" in text
    assert "sdsv self 2.20x / 34.50 dB by cache 3, error-ctrl." in text
    assert "SDSV (verified windows): nowhere (1 row, dominated)" in text
    assert "unverified cache: at 2.60x (1 of 1 rows)" in text and "with fewer steps: at 3.30x (1 of 2 rows)" in text
    assert rows[1]["dominated_by"] == ["dpm 15", "cache 3"] and rows[3]["dominated_by"] == []
    assert "dominated_by" not in rows[0]  # the reference takes no part


# ---- evaluation set and the pareto comparison -----------------------------------------------------
def test_balanced_prompts_cover_every_class_once_per_48():
    prompts = balanced_prompts(96)
    classes = [parse_prompt(p) for p in prompts]
    assert len(set(classes[:48])) == 48 and classes[48:] == classes[:48]
    assert all(a[0] != b[0] for a, b in zip(classes, classes[1:]))
    assert len({c[1] for c in classes[:6]}) == 6  # the image strip's columns show six shapes


def test_vs_fewer_steps_interpolates_and_finds_dominance():
    fewer = [dict(speedup=1.5, psnr=30.0, fd=0.1), dict(speedup=3.0, psnr=20.0, fd=0.4)]
    rows = [dict(speedup=2.25, psnr=26.0, fd=0.2), dict(speedup=2.25, psnr=24.0, fd=0.3),
            dict(speedup=1.2, psnr=35.0, fd=0.05), dict(speedup=1.4, psnr=29.0, fd=0.2)]
    _vs_fewer(rows, fewer, "speedup")
    assert rows[0]["dpsnr_speedup"] == pytest.approx(1.0) and rows[0]["dfd_speedup"] == pytest.approx(-0.05)
    assert not rows[0]["dominated_speedup"]
    assert rows[1]["dpsnr_speedup"] == pytest.approx(-1.0)
    assert rows[2]["dpsnr_speedup"] is None and not rows[2]["dominated_speedup"]
    assert rows[3]["dpsnr_speedup"] is None and rows[3]["dominated_speedup"]  # 1.5x at 30 dB is faster and better


@pytest.mark.slow
def test_runner_reuses_batches_for_subsets():
    from sdsv.evaluation import Method, Runner

    r = Runner(images=4, steps=6, batch=2, latency_images=1, progress=False)
    m = Method("sdsv", StagePlan.paper_default(6), "lite", "endpoints", AcceptanceTest("x0_rms", 0.05))
    head = r.run(m, 2)
    full = r.run(m)
    assert full.n == 4 and head.n == 2 and torch.equal(full.images[:2], head.images)
    assert r.run(m, 2).target_evals == head.target_evals < full.target_evals
    assert full.target_evals == sum(b * c for b, c in full.calls["target"].items())
    alone = r.pipe(r.prompts[2:3], policy=m.policy, draft="lite", accept=m.accept, seed=r.seeds[2:3]).images
    torch.testing.assert_close(full.images[2:3], alone, atol=2e-4, rtol=0)  # batch mates do not matter
    with pytest.raises(ValueError, match="multiple of the batch"):
        r.run(m, 3)


# ---- end to end ---------------------------------------------------------------------------------
SELF_ROWS = ["cache (every 3)", "cache (every 4)", "SDSV w/ self", "error-ctrl (self)", "error-ctrl (self, tol 0.5)"]
EXPECTED = {
    "table1": ["target-only", "draft lite alone", "draft svd alone", "SDSV w/ lite", "SDSV w/ svd", *SELF_ROWS],
    "table2": ["target-only", "Improved-Draft (svd)", "SDSV-fast (svd)", "SDSV-slow (svd)",
               *[r.replace("SDSV w/ self", "SDSV-slow (self)") for r in SELF_ROWS],
               "cache on dpm++2m (4 steps, every 2)", "error-ctrl on dpm++2m (self, 4 steps)",
               "target-only (3 steps)", "target-only (2 steps, dpm++2m)", "target-only (3 steps, dpm++2m)",
               "target-only (4 steps, dpm++2m)"],
    "warmup": ["(a) minimal warm-up", "(b) vanilla (target)", "(c) conservative warm-up", "(d) multi-stage"],
}


def _table_rows(md: str) -> list[list[str]]:
    lines = [l for l in md.splitlines() if l.startswith("|")]
    return [[c.strip() for c in l.strip("|").split("|")] for l in lines]


@pytest.mark.slow
def test_eval_quick_runs_every_experiment(tmp_path, capsys):
    assert cli_main(["eval", "--quick", "--out", str(tmp_path), "--threads", "1", "--quiet", "--no-compile"]) == 0
    printed = capsys.readouterr().out
    for name in ("table1", "table2", "warmup", "pareto"):
        md = (tmp_path / f"{name}.md").read_text()
        assert md in printed  # the files are what the command printed
        assert "machine:" in md and f"torch {torch.__version__}" in md and "weights (sha256)" in md
        assert "models eager" in md  # --no-compile, said in every header
        data = json.loads((tmp_path / f"{name}.json").read_text())
        assert data["experiment"] == name and data["images"] == (2 if name == "pareto" else 4) and data["steps"] == 8
        rows = data["rows"]
        if name in EXPECTED:
            assert [r["method"] for r in rows] == EXPECTED[name]
            table = _table_rows(md)
            assert len(table) == 2 + len(rows) and all(len(t) == len(table[0]) for t in table)
        ref = next(r for r in rows if r["plan"].startswith("target_only[0-8"))
        assert ref["speedup"] == 1.0 and ref["psnr"] is None and ref["psnr_min"] is None and ref["fd"] is None
        assert "dominated_by" not in ref and "| PSNR min ↑ |" in md and "**Who wins on speed and the worst image**" in md
        for r in rows:
            assert r["latency_ms"] > 0 and r["gflops"] > 0 and 0 <= r["align"] <= 1
            assert 1 - 1e-9 <= r["is_tiny"] <= num_classes()
            assert r["target_evals"] + r["draft_evals"] >= r["steps"] - 1e-9  # a step costs at least one eval
            if r is not ref:
                assert math.isfinite(r["psnr"]) or r["psnr"] == math.inf
                assert r["psnr_min"] <= r["psnr"] and isinstance(r["dominated_by"], list)
                assert r["fd"] >= 0 and 0 <= r["lpips"] <= 4 and -1 <= r["ssim"] <= 1
            if r["draft"] == "self":  # a self-draft eval runs the target's cheap parts: counted, < 5% of a target eval
                per_target = ref["gflops"] / ref["target_evals"]
                assert 0 < r["gflops"] - per_target * r["target_evals"] < 0.05 * per_target * r["draft_evals"]
    by = {n: {r["method"]: r for r in json.loads((tmp_path / f"{n}.json").read_text())["rows"]} for n in ("table1", "table2")}
    shared = by["table1"]["SDSV w/ self"], by["table2"]["SDSV-slow (self)"]  # one method, sampled once
    assert shared[0]["psnr"] == shared[1]["psnr"] and shared[0]["target_evals"] == shared[1]["target_evals"]
    pareto = json.loads((tmp_path / "pareto.json").read_text())["rows"]
    sweep = [r for r in pareto if r["draft"] in ("lite", "svd") and "tau" in r]
    assert {(r["draft"], r["verify"]) for r in sweep} == {(d, v) for d in ("lite", "svd") for v in ("endpoints", "full")}
    fewer = sorted((r["solver"], r["steps"]) for r in pareto if r["family"] == "target" and r["steps"] < 8)
    assert fewer == [("dpm++2m", 2), ("dpm++2m", 3), ("dpm++2m", 4)] + [("euler", s) for s in (2, 3, 4, 5)]  # of 8 steps
    own = [r for r in pareto if r["draft"] == "self"]
    assert sorted(r["every"] for r in own if "every" in r) == [2, 3, 4, 5]
    assert sorted(r["tol"] for r in own if "tol" in r) == [0.2, 0.3, 0.5, 0.8]
    assert sorted(r["tau"] for r in own if "tau" in r) == [0.1, 0.2, 0.3]
    assert all(isinstance(r["dominated_speedup"], bool) for r in sweep + own)
    md = (tmp_path / "pareto.md").read_text()
    assert "Against the target alone with fewer Euler steps" in md and "**By counted-FLOPs speedup.**" in md
    for png in ("warmup_strip.png", "pareto.png", "pareto_flops.png"):
        data = (tmp_path / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


@pytest.mark.slow
def test_eval_single_experiment_writes_only_its_outputs(tmp_path):
    assert cli_main(["eval", "--quick", "--experiment", "table2", "--out", str(tmp_path), "--threads", "1", "--quiet", "--no-compile",
                     "--images", "3", "--batch", "2"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table2.json", "table2.md"]
    rows = json.loads((tmp_path / "table2.json").read_text())["rows"]
    assert [r["method"] for r in rows] == EXPECTED["table2"]


def test_eval_wan_video_reports_the_tail_of_clips_beside_the_paper(tmp_path, capsys):
    import json

    from sdsv.evaluation.video import video_prompts
    from sdsv.tiny.video.data import MOTIONS, parse_prompt

    assert cli_main(["eval", "--quick", "--experiment", "wan-video", "--video-clips", "3", "--out", str(tmp_path),
                     "--threads", "1", "--quiet"]) == 0
    rows = json.loads((tmp_path / "wan_video.json").read_text())["rows"]
    paper = {r["method"]: r["paper"] for r in rows if r["paper"]}
    assert paper == {"improved-draft (lite)": "3.67x", "sdsv-fast (lite)": "3.01x", "sdsv-slow (lite)": "1.77x"}
    for r in rows[1:]:
        assert r["psnr_worst"] <= r["psnr_p5"] <= r["psnr_mean"] and r["temporal"] >= 0
    assert "5th percentile" in (tmp_path / "wan_video.md").read_text()
    # every motion within 7 consecutive clips, and valid prompts
    assert {parse_prompt(p)[2] for p in video_prompts(7)} == set(range(len(MOTIONS)))
