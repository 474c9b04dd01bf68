"""The training script of the tiny models, on toy sizes (seconds): every stage runs, resumes and
warm-starts, and what it writes loads back through the package."""

import json

import pytest
import torch

from sdsv.tiny import train
from sdsv.tiny.data import make_batch
from sdsv.tiny.model import TinyDiT, TinyDiTConfig
from sdsv.tiny.weights import load_model, save_model

TOY = ["--dim", "32", "--depth", "2", "--heads", "2", "--batch", "4", "--threads", "1"]


def test_every_stage_runs_and_writes_loadable_weights(tmp_path):
    out = str(tmp_path)
    train.main(["--stage", "target", "--target-steps", "3", "--out", out, *TOY])
    train.main(["--stage", "classifier", "--classifier-steps", "2", "--out", out, *TOY])
    for d in ("lite", "svd"):
        train.main(["--stage", d, "--distill-steps", "2", "--out", out, *TOY])
    target, lite, svd = (load_model(tmp_path / f"{n}.safetensors") for n in ("target", "lite", "svd"))
    assert target.cfg.cond_tokens and target.cfg.out_conv and not target.cfg.guidance_embed
    assert lite.cfg.depth == 1 and lite.cfg.guidance_embed and svd.cfg.low_rank
    log = json.loads((tmp_path / "train_log.json").read_text())
    assert {"target", "classifier", "lite", "svd", "_machine"} <= set(log)
    assert log["target"]["steps"] == 3 and all("loss" in h for h in log["target"]["loss"])
    x, s = torch.randn(2, 3, 32, 32), torch.rand(2)
    labels = torch.tensor([[0, 1], [8, 6]])
    assert lite(x, s, labels, guidance=torch.full((2,), 3.0)).shape == x.shape


def test_target_resumes_from_its_checkpoint(tmp_path):
    out = str(tmp_path)
    train.main(["--stage", "target", "--target-steps", "2", "--out", out, *TOY])
    assert (tmp_path / "target.ckpt").exists()
    train.main(["--stage", "target", "--target-steps", "4", "--out", out, *TOY])
    hist = json.loads((tmp_path / "train_log.json").read_text())["target"]["loss"]
    assert {"resumed_at": 2} in hist and hist[-1]["step"] == 4


def test_warm_start_from_the_first_architecture(tmp_path):
    legacy = TinyDiT(TinyDiTConfig(dim=32, depth=2, heads=2, cond_tokens=False, out_conv=False))
    save_model(legacy, tmp_path / "old.safetensors", dtype=torch.float32)
    new = TinyDiT(TinyDiTConfig(dim=32, depth=2, heads=2))
    info = train.warm_start(new, str(tmp_path / "old.safetensors"))
    assert sorted(info["fresh_parameters"]) == ["color_tok.weight", "out_conv.bias", "out_conv.weight", "shape_tok.weight"]
    for k, v in legacy.state_dict().items():
        torch.testing.assert_close(new.state_dict()[k], v)
    wider = TinyDiT(TinyDiTConfig(dim=64, depth=2, heads=2))
    with pytest.raises(ValueError, match="do not fit"):
        train.warm_start(wider, str(tmp_path / "old.safetensors"))


def test_configs_written_before_the_new_fields_load_as_the_first_architecture():
    d = TinyDiTConfig(dim=32, depth=2, heads=2).to_dict()
    del d["cond_tokens"], d["out_conv"]
    cfg = TinyDiTConfig.from_dict(d)
    assert not cfg.cond_tokens and not cfg.out_conv
    assert TinyDiTConfig.from_dict(TinyDiTConfig().to_dict()) == TinyDiTConfig()


def test_output_conv_starts_as_identity():
    torch.manual_seed(0)
    with_conv = TinyDiT(TinyDiTConfig(dim=32, depth=2, heads=2, out_conv=True))
    without = TinyDiT(TinyDiTConfig(dim=32, depth=2, heads=2, out_conv=False))
    without.load_state_dict({k: v for k, v in with_conv.state_dict().items() if not k.startswith("out_conv.")})
    # make the output non-zero (patch_out starts at zero) so the comparison means something
    with torch.no_grad():
        for m in (with_conv, without):
            torch.manual_seed(1)
            m.patch_out.weight.normal_()
    x, s, labels = torch.randn(3, 3, 32, 32), torch.rand(3), torch.tensor([[0, 0], [1, 2], [8, 6]])
    out = without(x, s, labels)
    assert out.abs().max() > 0
    torch.testing.assert_close(with_conv(x, s, labels), out)


def test_shape_weights_cover_the_shape_and_a_band_around_it():
    _, _, _, mask = make_batch(8, torch.Generator().manual_seed(0), return_mask=True)
    w = train.shape_weights(mask)
    assert w.shape == mask.shape and w.min() == 1.0
    assert torch.all(w[mask > 0] > 1.0)
    band = (w > 1.0) & (mask == 0)
    assert band.any()  # the one-pixel band outside the shape counts too
    pred, want = torch.zeros(8, 3, 32, 32), torch.ones(8, 3, 32, 32)
    # a uniform error gives the same weighted and plain MSE: the weights only redistribute
    torch.testing.assert_close(train.weighted_mse(pred, want, w), torch.tensor(1.0))


def test_a_draft_continues_from_an_earlier_draft_of_the_same_architecture(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    train.main(["--stage", "target", "--target-steps", "2", "--out", str(first), *TOY])
    train.main(["--stage", "svd", "--distill-steps", "2", "--out", str(first), *TOY])
    earlier = load_model(first / "svd.safetensors")
    with torch.no_grad():  # make the earlier draft unmistakable
        for p in earlier.parameters():
            p.add_(0.1)
    save_model(earlier, first / "svd.safetensors")
    second.mkdir()
    (second / "target.safetensors").write_bytes((first / "target.safetensors").read_bytes())
    train.main(["--stage", "svd", "--distill-steps", "1", "--draft-init-from", str(first), "--out", str(second), *TOY])
    log = json.loads((second / "train_log.json").read_text())["svd"]
    assert log["warm_start"]["from"].endswith("svd.safetensors")
    # one distillation step moves each weight by about the learning rate: the result stays by
    # the earlier draft, far from the fresh truncated SVD of the target
    cont = load_model(second / "svd.safetensors")
    fresh = train.make_svd(load_model(first / "target.safetensors"))
    gap = lambda a, b: sum((a.state_dict()[k] - b.state_dict()[k]).abs().sum().item() for k in a.state_dict())
    assert gap(cont, earlier) < 0.1 * gap(fresh, earlier)


def test_a_draft_of_another_architecture_is_refused(tmp_path):
    train.main(["--stage", "target", "--target-steps", "1", "--out", str(tmp_path), *TOY])
    train.main(["--stage", "lite", "--distill-steps", "1", "--out", str(tmp_path), *TOY])
    (tmp_path / "svd.safetensors").write_bytes((tmp_path / "lite.safetensors").read_bytes())
    with pytest.raises(ValueError, match="draft-init-from"):
        train.main(["--stage", "svd", "--distill-steps", "1", "--draft-init-from", str(tmp_path), "--out", str(tmp_path), *TOY])
