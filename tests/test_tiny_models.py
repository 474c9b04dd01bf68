"""The shipped tiny models and `sdsv demo`, end to end (no training, no downloads)."""

import json

import pytest
import torch

from sdsv import AcceptanceTest, ErrorControlled, FixedInterval, StagePlan
from sdsv.cli import main as cli_main
from sdsv.metrics import psnr
from sdsv.tiny.compress import block_linear_macs
from sdsv.tiny.data import class_index, make_batch
from sdsv.tiny.pipeline import TinyPipeline
from sdsv.tiny.weights import load_model, shipped_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipe():
    return TinyPipeline.from_pretrained()


def test_shipped_weights_are_small():
    total = sum(shipped_path(n).stat().st_size for n in ("target", "lite", "svd", "classifier"))
    assert total < 25e6


def test_drafts_are_compressed_from_the_target(pipe):
    t, lite, svd = pipe.models["target"], pipe.models["lite"], pipe.models["svd"]
    assert lite.cfg.depth == t.cfg.depth // 2 and lite.cfg.dim == t.cfg.dim
    ratio = block_linear_macs(t) / block_linear_macs(svd)
    assert 2.7 < ratio < 3.3, ratio
    assert lite.cfg.guidance_embed and svd.cfg.guidance_embed and not t.cfg.guidance_embed


def test_classifier_recognises_the_procedural_data():
    clf = load_model(shipped_path("classifier"))
    x, c, s = make_batch(512, torch.Generator().manual_seed(777))
    with torch.no_grad():
        acc = (clf(x).argmax(1) == class_index(c, s)).float().mean().item()
    assert acc > 0.95, acc


@pytest.mark.parametrize("draft", [{}, {"draft": "svd"}], ids=["default", "svd"])
def test_image_does_not_depend_on_batch_mates(pipe, draft):
    prompts = ["a red circle", "a blue triangle", "a green square"]
    together = pipe(prompts, num_steps=20, seed=[5, 6, 7], **draft)
    alone = pipe(prompts[1], num_steps=20, seed=[6], **draft)
    torch.testing.assert_close(together.images[1:2], alone.images, atol=2e-4, rtol=0)


def test_sdsv_is_closer_to_target_than_its_draft(pipe):
    prompts = ["a red circle", "a blue triangle", "a yellow ring", "a white square"]
    seeds = [0, 1, 2, 3]
    ref = pipe(prompts, policy=StagePlan.target_only(30), seed=seeds).images
    for d in ("lite", "svd"):
        draft_only = pipe(prompts, policy=StagePlan.draft_only(30), draft=d, seed=seeds).images
        spec = pipe(prompts, policy=StagePlan.paper_default(30), draft=d, seed=seeds)
        assert psnr(spec.images, ref).mean() > psnr(draft_only, ref).mean()
        assert spec.stats.target_calls < 30


def test_identical_draft_on_the_real_target(pipe):
    """The invariant on the shipped model: target as its own draft accepts every window."""
    tgt = pipe.denoiser("target")
    noise = pipe.noise(1, 0)
    labels = pipe.encode(["a purple cross"])
    from sdsv import flow_match_sigmas, sample

    sig = flow_match_sigmas(20)
    with torch.inference_mode():
        ref = sample(tgt, None, noise, sig, StagePlan.target_only(20), labels=labels)
        r = sample(tgt, tgt, noise, sig, StagePlan.paper_default(20), accept=AcceptanceTest("x0_rms", 1e-4), labels=labels)
    assert r.stats.acceptance_rate == 1.0
    torch.testing.assert_close(r.latents, ref.latents, atol=1e-4, rtol=0)


def by_label(rows: list[dict], label: str) -> dict:
    return next(r for r in rows if r["method"] == label)


def test_demo_end_to_end(tmp_path, capsys):
    out_json = tmp_path / "demo.json"
    rc = cli_main(["demo", "--steps", "24", "--prompts", "a red circle", "an orange diamond", "--out", str(tmp_path),
                   "--json", str(out_json), "--quiet", "--threads", "1", "--no-compile", "--repeats", "1"])
    assert rc == 0
    rows = json.loads(out_json.read_text())
    assert [r["method"] for r in rows] == [
        "target-only", "target-only (20 steps)", "target-only (15 steps, dpm++2m)", "target-only (20 steps, dpm++2m)",
        "target-only (12 steps, unipc)", "draft-only (lite)", "draft-only (svd)", "improved-draft (lite)", "improved-draft (svd)", "sdsv (lite)",
        "sdsv (svd)", "faithful: error-ctrl corrected (self, damped, x0 tol 0.3, k<=5, last step draft)", "accurate: error-ctrl corrected on unipc (self, 12 steps)",
        "cache (every 3)", "cache (every 4)", "sdsv (self)", "error-ctrl (self)",
        "error-ctrl (self, tol 0.5)", "cache on dpm++2m (12 steps, every 2)", "error-ctrl on dpm++2m (self, 12 steps)"]
    keys = {"method", "target_calls", "target_evals", "draft_evals", "wall_s", "speedup", "acceptance", "psnr",
            "psnr_min", "ssim", "psnr_converged", "psnr_converged_min", "sampler_share"}
    assert all(set(r) == keys for r in rows)
    # accuracy: against DPM-Solver++(2M) with 48 steps; the 24-step target is closer to it than 20 Euler steps
    assert all(r["psnr_converged_min"] <= r["psnr_converged"] for r in rows)
    assert rows[0]["psnr_converged"] > by_label(rows, "target-only (20 steps)")["psnr_converged"]
    by = {r["method"]: r for r in rows}
    assert rows[0]["target_calls"] == 48 and rows[0]["speedup"] == 1.0
    assert by["draft-only (lite)"]["target_calls"] == 0 and by["draft-only (lite)"]["draft_evals"] == 48
    assert by["target-only (15 steps, dpm++2m)"]["target_calls"] == 30
    assert by["target-only (12 steps, unipc)"]["target_calls"] == 24
    # the cache: 2 warm-up target steps, then one target step every 3 (22 steps: 7 windows + 1 step)
    assert by["cache (every 3)"]["target_calls"] == 2 * (2 + 8)
    # on DPM-Solver++(2M) with 12 steps: 2 warm-up target steps, then the target every 2nd step
    assert by["cache on dpm++2m (12 steps, every 2)"]["target_calls"] == 2 * (2 + 5)
    assert all(r["psnr"] > 10 and r["psnr_min"] <= r["psnr"] for r in rows[1:])
    assert all(0 <= r["sampler_share"] < 1 for r in rows)
    assert (tmp_path / "demo_grid.png").stat().st_size > 1000
    assert (tmp_path / "demo_speed_psnr.png").stat().st_size > 1000
    text = capsys.readouterr().out
    assert "best self-draft configuration with its error checked" in text and "worst PSNR" in text
    assert "acc PSNR" in text and "acc worst" in text and "target-only (48 steps, dpm++2m) (accuracy)" in text
    assert "cache on dpm++2m (12 steps, every 2): " in text and "a second-order solver alone (dpm++2m 15, dpm++2m 20, unipc 12 steps)" in text
    assert "sdsv (svd)" in text and "speedup" in text and "machine:" in text and "models eager (--no-compile)" in text


@pytest.mark.parametrize("plan", [
    StagePlan.paper_default(16), StagePlan.fast(16), StagePlan.slow(16), StagePlan.minimal_warmup(16),
    StagePlan.conservative_warmup(16), FixedInterval(16, every=3),
    ErrorControlled(16), ErrorControlled(16, order=2, warmup=3),
], ids=lambda p: p.name + ("" if not isinstance(p, ErrorControlled) else f"-o{p.order}"))
def test_self_draft_works_with_every_plan(pipe, plan):
    order = getattr(plan, "order", 1)
    ref = pipe(["a red circle", "a blue ring"], num_steps=16, policy=StagePlan.target_only(16))
    verification = {"accept": AcceptanceTest("x0_rms", 0.05)} if plan.verifies else {}
    out = pipe(["a red circle", "a blue ring"], policy=plan, draft="self", forecast_order=order, **verification)
    assert out.stats.target_calls < ref.stats.target_calls
    assert psnr(out.images, ref.images).min() > 20, psnr(out.images, ref.images)


def test_self_draft_needs_a_target_step_first(pipe):
    # Improved-Draft with the self-draft: 5 target steps, then forecasts from their anchors alone
    out = pipe("a red circle", policy=StagePlan.improved_draft(16), draft="self")
    assert (out.stats.target_calls, out.stats.draft_evals) == (5, 11)
    with pytest.raises(RuntimeError, match="at least one target step"):
        pipe("a red circle", policy=StagePlan.draft_only(8), draft="self")


def test_dpm_solver_baseline_through_the_pipeline(pipe):
    ref = pipe("a red circle", policy=StagePlan.target_only(50))
    out = pipe("a red circle", policy=StagePlan.target_only(20), solver="dpm++2m")
    euler = pipe("a red circle", policy=StagePlan.target_only(20))
    assert out.stats.target_calls == 20
    assert psnr(out.images, ref.images).item() > psnr(euler.images, ref.images).item()
    # speculation on the solver: the self-draft's cache every 2nd step stays close to the solver alone
    cached = pipe("a red circle", policy=FixedInterval(20, every=2), draft="self", solver="dpm++2m")
    assert cached.stats.target_calls == 2 + 9 and cached.stats.unverified_windows == 9
    assert psnr(cached.images, out.images).item() > 30
    with pytest.raises(ValueError, match="solver must be one of euler, dpm\\+\\+2m, unipc"):
        pipe("a red circle", policy=StagePlan.target_only(20), solver="heun")
