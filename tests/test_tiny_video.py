"""The tiny video model (issue 24): clips, the spatio-temporal DiT, its drafts and the pipeline.

Model and pipeline tests use a small randomly initialised video DiT (fast, no weights); the
tests of the shipped weights are marked slow.
"""

import pytest
import torch

from sdsv import AcceptanceTest, ErrorControlled, FixedInterval, StagePlan
from sdsv.tiny.compress import make_lite
from sdsv.tiny.split import TinyDiTSplit
from sdsv.tiny.train import weighted_mse
from sdsv.tiny.video.classifier import VideoClassifier
from sdsv.tiny.video.data import MOTIONS, make_clips, parse_prompt, prompt_of
from sdsv.tiny.video.model import TinyVideoDiT, TinyVideoDiTConfig
from sdsv.tiny.video.pipeline import TinyVideoPipeline
from sdsv.tiny.video.train import noisy_clips
from sdsv.tiny.weights import load_model, save_model, shipped_path

SMALL = dict(frames=4, image_size=16, patch=4, patch_t=2, dim=32, depth=4, heads=2)
EXACT = AcceptanceTest("rel_l2", 0.0)  # no draft that differs at all passes


def small_model(seed=0, **over) -> TinyVideoDiT:
    """A small video DiT whose zero-initialised output layers are randomised, so it is not the
    zero velocity (which every draft would match)."""
    torch.manual_seed(seed)
    m = TinyVideoDiT(TinyVideoDiTConfig(**{**SMALL, **over}))
    with torch.no_grad():
        for layer in (m.ada, m.final_ada, m.patch_out, m.out_conv):
            layer.weight.normal_(0, 0.1)
            layer.bias.normal_(0, 0.1)
    return m.eval().requires_grad_(False)


def small_pipe(draft_seed=1) -> TinyVideoPipeline:
    return TinyVideoPipeline({"target": small_model(0), "lite": small_model(draft_seed)})


PROMPTS = ["a red circle moving left", "a blue square growing", "an orange diamond rotating"]


# ---- data -------------------------------------------------------------------------------------
def test_clips_are_deterministic_per_seed():
    a = make_clips(6, torch.Generator().manual_seed(3), return_mask=True)
    b = make_clips(6, torch.Generator().manual_seed(3), return_mask=True)
    c = make_clips(6, torch.Generator().manual_seed(4))
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0])


def test_clip_layout_and_range():
    x, color, shape, motion, mask = make_clips(5, torch.Generator().manual_seed(0), frames=6, size=16, return_mask=True)
    assert x.shape == (5, 3, 6, 16, 16) and mask.shape == (5, 1, 6, 16, 16)
    assert x.min() >= -1 and x.max() <= 1
    assert color.shape == shape.shape == motion.shape == (5,)


def test_prompts_round_trip():
    for c, s, m in [(0, 0, 0), (5, 2, 4), (7, 5, 6)]:
        assert parse_prompt(prompt_of(c, s, m)) == (c, s, m)
    assert parse_prompt("  A Red   Circle  moving   LEFT ") == (0, 0, 0)
    with pytest.raises(ValueError, match="motion"):
        parse_prompt("a red circle")
    with pytest.raises(ValueError):
        parse_prompt("a red circle dancing")


def test_each_motion_does_what_it_says():
    n = len(MOTIONS)
    g = torch.Generator().manual_seed(0)
    _, _, _, _, mask = make_clips(4 * n, g, motion=torch.arange(n).repeat(4), return_mask=True)
    m = mask[:, 0]  # [b, T, H, W]
    area = m.sum((2, 3))
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    cx, cy = (m * xs).sum((2, 3)) / area, (m * ys).sum((2, 3)) / area  # image y grows downwards
    dx, dy, growth = cx[:, -1] - cx[:, 0], cy[:, -1] - cy[:, 0], area[:, -1] / area[:, 0]
    for i, name in enumerate(MOTIONS):
        rows = torch.arange(4) * n + i
        moved = {"moving left": -dx, "moving right": dx, "moving up": -dy, "moving down": dy}.get(name)
        if moved is not None:
            assert (moved[rows] > 4).all(), (name, moved[rows])
        elif name == "growing":
            assert (growth[rows] > 1.8).all(), growth[rows]
        elif name == "shrinking":
            assert (growth[rows] < 0.6).all(), growth[rows]
        else:  # rotating: stays in place, keeps its size
            assert (dx[rows].abs() < 0.5).all() and (dy[rows].abs() < 0.5).all()
            assert ((growth[rows] - 1).abs() < 0.1).all()


# ---- model ------------------------------------------------------------------------------------
def test_model_shapes_and_patches():
    m = small_model()
    x = torch.randn(3, 3, 4, 16, 16)
    assert torch.equal(m.unpatchify(m.patchify(x)), x)
    assert m.patchify(x).shape == (3, 2 * 4 * 4, 3 * 2 * 4 * 4)
    labels = torch.tensor([[0, 1, 2], [3, 4, 5], list(m.null_labels)])
    v = m(x, torch.rand(3), labels)
    assert v.shape == x.shape and torch.isfinite(v).all()


def test_untrained_model_predicts_zero_velocity():
    """adaLN-Zero as the image target: every block starts as the identity, the output as zero."""
    m = TinyVideoDiT(TinyVideoDiTConfig(**SMALL))
    v = m(torch.randn(2, 3, 4, 16, 16), torch.rand(2), torch.tensor([[0, 0, 0], [1, 1, 1]]))
    assert torch.equal(v, torch.zeros_like(v))


def test_the_split_for_the_self_draft_computes_the_forward():
    m = small_model()
    x, s, lab = torch.randn(2, 3, 4, 16, 16), torch.rand(2), torch.tensor([[0, 1, 2], [3, 4, 5]])
    out, residual = TinyDiTSplit(m).forward_with_residual(x, s, lab)
    torch.testing.assert_close(out, m(x, s, lab), atol=1e-6, rtol=0)
    assert residual.shape == (2, 3 + 32, 32)  # the three word tokens and the space-time tokens


def test_loss_falls_on_a_short_run():
    """Forty steps of the training recipe lower the loss on a fixed held-out batch."""
    torch.manual_seed(0)
    m = TinyVideoDiT(TinyVideoDiTConfig(**SMALL))
    held_out = noisy_clips(64, torch.Generator().manual_seed(99), frames=4, size=16)

    def held_out_loss():
        xt, sigma, labels, v, w = held_out
        with torch.no_grad():
            return weighted_mse(m(xt, sigma, labels), v, w).item()

    before = held_out_loss()
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        xt, sigma, labels, v, w = noisy_clips(16, g, frames=4, size=16)
        loss = weighted_mse(m(xt, sigma, labels), v, w)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_out_loss()
    assert after < 0.85 * before, (before, after)


def test_lite_keeps_every_other_block_and_takes_the_guidance_scale():
    t = small_model()
    lite = make_lite(t)
    assert isinstance(lite, TinyVideoDiT) and lite.cfg.depth == 2 and lite.cfg.guidance_embed
    assert torch.equal(lite.blocks[0].qkv.weight, t.blocks[1].qkv.weight)
    assert torch.equal(lite.blocks[1].fc2.weight, t.blocks[3].fc2.weight)
    x, s, lab = torch.randn(2, 3, 4, 16, 16), torch.rand(2), torch.tensor([[0, 1, 2], [3, 4, 5]])
    assert lite(x, s, lab, guidance=torch.full((2,), 3.0)).shape == x.shape


def test_weights_round_trip(tmp_path):
    m, lite, clf = small_model(), make_lite(small_model()), VideoClassifier(frames=4)
    for name, model in (("t", m), ("l", lite), ("c", clf)):
        save_model(model, tmp_path / f"{name}.safetensors", dtype=torch.float32)
        back = load_model(tmp_path / f"{name}.safetensors")
        assert type(back) is type(model)
        for (k, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
            assert torch.equal(a, b), k
    assert back.predict(torch.randn(2, 3, 4, 32, 32)).shape == (2, 3)


# ---- pipeline ---------------------------------------------------------------------------------
def test_pipeline_returns_frames_and_uses_unipc_by_default():
    pipe = small_pipe()
    out = pipe(PROMPTS[:2], policy=StagePlan.target_only(8), seed=3)
    assert out.frames.shape == (2, 3, 4, 16, 16) and out.frames.min() >= 0 and out.frames.max() <= 1
    unipc = pipe(PROMPTS[:2], policy=StagePlan.target_only(8), seed=3, solver="unipc")
    euler = pipe(PROMPTS[:2], policy=StagePlan.target_only(8), seed=3, solver="euler")
    assert torch.equal(out.latents, unipc.latents) and not torch.equal(out.latents, euler.latents)


@pytest.mark.parametrize("solver", ["euler", "dpm++2m", "unipc"])
def test_identical_draft_reproduces_target_only(solver):
    model = small_model()
    pipe = TinyVideoPipeline({"target": model, "lite": model})
    ref = pipe(PROMPTS, policy=StagePlan.target_only(16), seed=0, solver=solver)
    r = pipe(PROMPTS, policy=StagePlan.paper_default(16), draft="lite", accept=AcceptanceTest("x0_rms", 1e-4),
             seed=0, solver=solver)
    assert r.stats.windows and r.stats.acceptance_rate == 1.0 and r.stats.target_calls < 16
    torch.testing.assert_close(r.latents, ref.latents, atol=1e-4, rtol=0)


@pytest.mark.parametrize("draft", ["lite", "self"])
@pytest.mark.parametrize("solver", ["euler", "unipc"])
def test_impossible_threshold_reproduces_target_only(draft, solver):
    pipe = small_pipe()
    ref = pipe(PROMPTS, policy=StagePlan.target_only(16), seed=0, solver=solver)
    r = pipe(PROMPTS, policy=StagePlan.paper_default(16), draft=draft, accept=EXACT, seed=0, solver=solver)
    assert r.stats.windows and all(w.accepted == 0 for w in r.stats.windows)
    torch.testing.assert_close(r.latents, ref.latents, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kwargs", [dict(policy=StagePlan.paper_default(16), draft="lite"),
                                    dict(policy=StagePlan.paper_default(16), draft="self"),
                                    dict(policy=ErrorControlled(16, tol=0.3), draft="self"),
                                    dict(policy=FixedInterval(16, every=3), draft="self")],
                         ids=["sdsv-lite", "sdsv-self", "error-controlled", "cache"])
def test_a_clip_does_not_depend_on_its_batch_mates(kwargs):
    pipe = small_pipe()
    together = pipe(PROMPTS, seed=[5, 6, 7], **kwargs)
    alone = pipe(PROMPTS[1], seed=[6], **kwargs)
    torch.testing.assert_close(together.latents[1:2], alone.latents, atol=1e-4, rtol=0)


def test_video_pipeline_does_not_compile_yet():
    assert small_pipe().compile_or_warn().startswith("eager")


# ---- the shipped weights ----------------------------------------------------------------------
@pytest.mark.slow
def test_shipped_video_weights_are_small_and_load():
    names = ("video_target", "video_lite", "video_classifier")
    assert sum(shipped_path(n).stat().st_size for n in names) < 8e6
    pipe = TinyVideoPipeline.from_pretrained()
    assert pipe.models["lite"].cfg.depth == pipe.target.cfg.depth // 2


@pytest.mark.slow
def test_shipped_video_classifier_recognises_the_procedural_clips():
    clf = load_model(shipped_path("video_classifier"))
    x, c, s, m = make_clips(256, torch.Generator().manual_seed(777))
    with torch.no_grad():
        hit = clf.predict(x) == torch.stack([c, s, m], 1)
    assert hit.float().mean(0).min() > 0.9, hit.float().mean(0)


@pytest.mark.slow
def test_identical_draft_on_the_shipped_video_target():
    pipe = TinyVideoPipeline.from_pretrained(names=("target",))
    pipe.models["lite"] = pipe.target
    ref = pipe(PROMPTS[0], policy=StagePlan.target_only(20))
    r = pipe(PROMPTS[0], policy=StagePlan.paper_default(20), draft="lite", accept=AcceptanceTest("x0_rms", 1e-4))
    assert r.stats.acceptance_rate == 1.0
    torch.testing.assert_close(r.latents, ref.latents, atol=1e-4, rtol=0)


def test_sdsv_demo_video_shows_every_row(tmp_path, capsys):
    """``sdsv demo --video``: the reference, fewer steps on the three solvers, the cache, the
    self-draft's schedules, the trained draft under the paper's plans beside the paper's figures."""
    import json

    from sdsv.cli import main
    from sdsv.tiny.video.demo import PAPER_WAN

    out = tmp_path / "table.json"
    assert main(["demo", "--video", "--steps", "10", "--threads", "1", "--quiet", "--out", str(tmp_path),
                 "--json", str(out)]) == 0
    rows = {r["method"]: r for r in json.loads(out.read_text())}
    text = capsys.readouterr().out
    for solver in ("euler", "dpm++2m", "unipc"):
        assert any(m.startswith("target-only") and solver in m and rows[m]["psnr_mean"] for m in rows), solver
    assert {"cache every 3 (self)", "faithful: error-ctrl corrected (self, damped, x0 tol 0.3, k<=5, last step draft)", "sdsv-slow (self)"} <= set(rows)
    assert set(PAPER_WAN) <= set(rows) and all(PAPER_WAN[m] in text for m in PAPER_WAN)
    assert all(r["temporal"] is None or r["temporal"] >= 0 for r in rows.values())
    assert (tmp_path / "video_reference.png").is_file()


def test_sdsv_demo_video_refuses_image_prompts(capsys):
    from sdsv.cli import main

    with pytest.raises(SystemExit) as e:
        main(["demo", "--video", "--prompts", "a red circle"])
    assert e.value.code == 2 and "video demo samples its own 8 prompts" in capsys.readouterr().err
