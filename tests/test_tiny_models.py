"""The shipped tiny models and `sdsv demo`, end to end (no training, no downloads)."""

import json

import pytest
import torch

from sdsv import AcceptanceTest, StagePlan
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


def test_image_does_not_depend_on_batch_mates(pipe):
    prompts = ["a red circle", "a blue triangle", "a green square"]
    together = pipe(prompts, num_steps=20, seed=[5, 6, 7])
    alone = pipe(prompts[1], num_steps=20, seed=[6])
    torch.testing.assert_close(together.images[1:2], alone.images, atol=2e-4, rtol=0)


def test_sdsv_is_closer_to_target_than_its_draft(pipe):
    prompts = ["a red circle", "a blue triangle", "a yellow ring", "a white square"]
    seeds = [0, 1, 2, 3]
    ref = pipe(prompts, plan=StagePlan.target_only(30), seed=seeds).images
    for d in ("lite", "svd"):
        draft_only = pipe(prompts, plan=StagePlan.draft_only(30), draft=d, seed=seeds).images
        spec = pipe(prompts, plan=StagePlan.paper_default(30), draft=d, seed=seeds)
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


def test_demo_end_to_end(tmp_path, capsys):
    out_json = tmp_path / "demo.json"
    rc = cli_main(["demo", "--steps", "12", "--prompts", "a red circle", "an orange diamond", "--out", str(tmp_path),
                   "--json", str(out_json), "--quiet", "--threads", "1", "--no-compile", "--repeats", "1"])
    assert rc == 0
    rows = json.loads(out_json.read_text())
    assert [r["method"] for r in rows] == ["target-only", "draft-only (lite)", "draft-only (svd)", "improved-draft (lite)",
                                          "improved-draft (svd)", "sdsv (lite)", "sdsv (svd)"]
    keys = {"method", "target_calls", "target_evals", "draft_evals", "wall_s", "speedup", "acceptance", "psnr", "ssim"}
    assert all(set(r) == keys for r in rows)
    assert rows[0]["target_calls"] == 24 and rows[0]["speedup"] == 1.0
    assert rows[1]["target_calls"] == 0 and rows[1]["draft_evals"] == 24
    assert all(r["psnr"] > 10 for r in rows[1:])
    assert (tmp_path / "demo_grid.png").stat().st_size > 1000
    text = capsys.readouterr().out
    assert "sdsv (svd)" in text and "speedup" in text and "machine:" in text and "models eager (--no-compile)" in text
