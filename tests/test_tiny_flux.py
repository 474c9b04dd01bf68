"""The tiny Flux: its parts are the real diffusers / transformers classes, its training script runs
every stage, resumes, and writes a folder ``FluxPipeline.from_pretrained`` loads offline."""

import json

import pytest
import torch

from sdsv.tiny.flux import components as C
from sdsv.tiny.flux import train

pytest.importorskip("diffusers")


def test_tokenizers_read_the_prompt_words_at_the_trained_length():
    clip, t5 = C.build_tokenizer(with_bos=True), C.build_tokenizer(with_bos=False)
    v = {w: i for i, w in enumerate(C.VOCABULARY)}
    ids = clip(["A Red  circle", ""], padding="max_length", max_length=C.TEXT_LEN).input_ids
    assert ids[0] == [v["<s>"], v["a"], v["red"], v["circle"], v["</s>"]] + [v["<pad>"]] * 3
    assert ids[1][:2] == [v["<s>"], v["</s>"]]
    assert t5(["an orange blob"]).input_ids[0] == [v["an"], v["orange"], v["<unk>"], v["</s>"]]
    assert clip.model_max_length == t5.model_max_length == C.TEXT_LEN


def test_the_text_encoders_tell_the_prompts_apart():
    clip, t5 = C.build_text_encoders()
    tok = C.build_tokenizer(with_bos=False)
    ids = tok(["a red circle", "a red square", "a blue circle"], padding="max_length", max_length=C.TEXT_LEN,
              return_tensors="pt").input_ids
    with torch.no_grad():
        h = t5(ids)[0]
    assert h.shape == (3, C.TEXT_LEN, C.TEXT_DIM)
    assert (h[0] - h[1]).abs().max() > 1e-2 and (h[0] - h[2]).abs().max() > 1e-2


def test_every_stage_runs_resumes_and_writes_a_loadable_pipeline(tmp_path):
    out, work = tmp_path / "pipe", tmp_path / "work"
    common = ["--out", str(out), "--work", str(work), "--batch", "2", "--threads", "1"]
    train.main(["--stage", "vae", "--vae-steps", "2", *common])
    vae = json.loads((out / "vae" / "config.json").read_text())
    assert vae["sample_size"] == 32 and vae["scaling_factor"] > 0
    train.main(["--stage", "transformer", "--transformer-steps", "2", *common])
    assert (work / "transformer.ckpt").exists()
    train.main(["--stage", "transformer", "--transformer-steps", "3", *common])
    train.main(["--stage", "guidance", "--distill-steps", "1", *common])
    train.main(["--stage", "draft", "--distill-steps", "1", *common])
    log = json.loads((out / "train_log.json").read_text())
    assert {"resumed_at": 2} in log["transformer"]["loss"] and log["transformer"]["loss"][-1]["step"] == 3
    assert {"vae", "transformer", "guidance", "draft"} <= set(log) and (out / "train_log.md").exists()

    pipe = C.load_pipeline(out)
    assert type(pipe).__name__ == "FluxPipeline" and pipe.transformer.dtype == torch.float32
    assert pipe.tokenizer_2.model_max_length == C.TEXT_LEN
    pipe.set_progress_bar_config(disable=True)
    img = pipe("a red circle", generator=torch.Generator().manual_seed(0), output_type="pt",
               **C.call_kwargs(steps=2)).images
    assert img.shape == (1, 3, 32, 32) and torch.isfinite(img).all()
    lite = json.loads((out / "draft_lite" / "config.json").read_text())
    assert (lite["num_layers"], lite["num_single_layers"]) == (1, 5)
    for part in ("transformer", "draft_lite", "vae"):  # no path of the training machine in what ships
        assert "_name_or_path" not in json.loads((out / part / "config.json").read_text()), part


def test_the_lite_draft_keeps_every_other_block_of_the_target():
    target = C.build_transformer(seed=3)
    lite = train.make_lite(target)
    torch.testing.assert_close(lite.single_transformer_blocks[2].proj_out.weight,
                               target.single_transformer_blocks[4].proj_out.weight)
    torch.testing.assert_close(lite.transformer_blocks[0].ff.net[2].weight, target.transformer_blocks[0].ff.net[2].weight)
    torch.testing.assert_close(lite.proj_out.weight, target.proj_out.weight)


def test_a_missing_folder_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="sdsv.tiny.flux.train"):
        C.load_pipeline(tmp_path)


def test_the_shipped_folder_loads_offline_at_its_trained_size(monkeypatch):
    from diffusers import FluxPipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for config in C.PIPELINE_DIR.glob("*/*config*.json"):  # nothing points back at the training machine
        assert "_name_or_path" not in json.loads(config.read_text()), config
    pipe = FluxPipeline.from_pretrained(str(C.PIPELINE_DIR))
    assert pipe.vae.config.sample_size == 32 and pipe.tokenizer_2.model_max_length == C.TEXT_LEN
    assert pipe.transformer.dtype == torch.float32  # stored in fp16, used in fp32
    pipe.set_progress_bar_config(disable=True)
    img = pipe(["a red circle", "a blue ring"], generator=[torch.Generator().manual_seed(s) for s in (0, 1)],
               output_type="pt", **C.call_kwargs(steps=3)).images
    assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all() and 0 <= img.min() and img.max() <= 1


def test_the_shipped_pipeline_draws_its_prompts():
    """48 prompts x 4 seeds nothing was chosen on, 50 steps, guidance 3, through FluxPipeline
    itself: the project's classifier reads the prompt's colour and shape in >= 85% of them."""
    from diffusers import FluxPipeline

    from sdsv.tiny.flux import report

    pipe = FluxPipeline.from_pretrained(str(C.PIPELINE_DIR))
    pipe.set_progress_bar_config(disable=True)
    prompts = report.all_prompts() * 4  # the training report's images
    seeds = [report.REPORT_SEEDS + i for i in range(len(prompts))]
    assert len(set(prompts)) == 48 and len(prompts) == 192
    images = report.draw(pipe, prompts, seeds, steps=50)
    assert report.alignment(images, prompts) >= 0.85


def test_a_resumed_stage_counts_the_time_of_every_run():
    record = {"loss": [{"step": 100, "loss": 1.0, "elapsed_s": 50.0}, {"step": 200, "loss": 0.9, "elapsed_s": 90.0},
                       {"resumed_at": 200}, {"step": 300, "loss": 0.8, "elapsed_s": 40.0}], "seconds": 41.0}
    assert train.stage_seconds(record) == 90.0 + 41.0
    assert train.stage_seconds({"loss": [{"step": 100, "loss": 1.0, "elapsed_s": 7.0}], "seconds": 7.5}) == 7.5
