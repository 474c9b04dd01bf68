"""`sdsv demo` / `sdsv eval`: a bad value is argparse's one-line error (exit 2), before any model is
loaded; outputs go where the user can find them and never over the project's results."""

from __future__ import annotations

import pytest

import sdsv.evaluation.cli as eval_cli
import sdsv.tiny.video.demo  # noqa: F401 - imported here: imported under nothing_loads, it would keep the patched load_model
from sdsv.cli import main as cli_main
from sdsv.tiny import weights


@pytest.fixture(autouse=True)
def nothing_loads(monkeypatch):
    """A check that ran too late would load a model first: make that fail loudly."""
    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the arguments were checked")
    monkeypatch.setattr(weights, "load_model", refuse)
    monkeypatch.setattr("sdsv.tiny.pipeline.load_model", refuse)
    monkeypatch.setattr("sdsv.evaluation.runner.load_model", refuse)


def one_line_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("args, option, says", [
    (["--steps", "-5"], "--steps", ">= 2"),
    (["--steps", "1"], "--steps", ">= 2"),
    (["--steps", "ten"], "--steps", "whole number"),
    (["--prompts", "a purple elephant"], "--prompts", "'a <color> <shape>'"),
    (["--prompts", "a red circle", ""], "--prompts", "'a <color> <shape>'"),
    (["--tau", "-1"], "--tau", "outside the range of x0_rms"),
    (["--tau", "nan"], "--tau", "finite"),
    (["--metric", "cosine", "--tau", "2"], "--tau", "outside the range of cosine"),
    (["--guidance", "-3"], "--guidance", ">= 0"),
    (["--guidance", "inf"], "--guidance", "finite"),
    (["--weights", "/nonexistent"], "--weights", "not a folder"),
    (["--threads", "0"], "--threads", ">= 1"),
    (["--repeats", "0"], "--repeats", ">= 1"),
    (["--seed", "-1"], "--seed", ">= 0"),
    (["--plan", "turbo"], "--plan", "invalid choice"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_demo_bad_value_is_one_line_naming_the_option(capsys, args, option, says):
    line = one_line_error(capsys, ["demo", *args])
    assert line.startswith(f"sdsv demo: error: argument {option}"), line
    assert says in line, line


def test_demo_weights_folder_must_hold_every_model(capsys, tmp_path):
    (tmp_path / "target.safetensors").write_bytes(b"")
    line = one_line_error(capsys, ["demo", "--weights", str(tmp_path)])
    assert "argument --weights" in line and "lite.safetensors" in line and "target" not in line.split("has no")[1]


@pytest.mark.parametrize("args, option", [
    (["--images", "1"], "--images"),
    (["--images", "4", "--latency-images", "9"], "--latency-images"),
    (["--pareto-images", "5"], "--pareto-images"),
    (["--tau", "nan"], "--tau"),
    (["--taus", "0.1", "-2"], "--taus"),
    (["--k2", "0"], "--k2"),
    (["--steps", "0"], "--steps"),
    (["--batch", "0"], "--batch"),
    (["--threads", "0"], "--threads"),
    (["--guidance", "-1"], "--guidance"),
    (["--weights", "/nonexistent"], "--weights"),
    (["--experiment", "peers", "--out", "x", "--peers-shard", "2/2"], "--peers-shard"),
    (["--experiment", "peers", "--out", "x", "--peers-shard", "1"], "--peers-shard"),
    (["--experiment", "peers", "--peers-shard", "0/2"], "--peers-shard"),  # the shards need one --out
    (["--experiment", "tail", "--out", "x", "--peers-shard", "0/2"], "--peers-shard"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_eval_bad_value_is_one_line_naming_the_option(capsys, args, option):
    line = one_line_error(capsys, ["eval", *args])
    assert line.startswith(f"sdsv eval: error: argument {option}"), line


def test_eval_writes_to_a_fresh_folder_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first, second = eval_cli.fresh_folder(), eval_cli.fresh_folder()
    assert first != second and first.is_dir() and second.is_dir()
    assert first.parent == second.parent == eval_cli.Path(".")
    parser_help = eval_cli.argparse.ArgumentParser()
    eval_cli.add_arguments(parser_help)
    assert parser_help.parse_args([]).out is None  # None: main() makes a fresh folder


# ---- outputs are checked before anything is sampled (issue 33) ----------------------------------

@pytest.mark.parametrize("command", ["demo", "eval"])
def test_out_that_is_a_file_or_cannot_be_made_is_refused_before_sampling(capsys, tmp_path, command):
    file = tmp_path / "results.txt"
    file.write_text("keep me")
    line = one_line_error(capsys, [command, "--out", str(file)])
    assert line.startswith(f"sdsv {command}: error: argument --out") and "is a file, not a folder" in line, line
    line = one_line_error(capsys, [command, "--out", str(file / "sub" / "dir")])
    assert "argument --out: cannot create" in line and "is a file, not a folder" in line, line
    assert file.read_text() == "keep me"


def test_demo_json_that_is_a_folder_or_cannot_be_made_is_refused(capsys, tmp_path):
    line = one_line_error(capsys, ["demo", "--json", str(tmp_path)])
    assert "argument --json" in line and "is a folder, not a file" in line, line
    (tmp_path / "f").write_text("")
    line = one_line_error(capsys, ["demo", "--json", str(tmp_path / "f" / "table.json")])
    assert "argument --json: cannot create" in line, line


def test_outputs_that_can_be_made_pass_the_check(tmp_path):
    import argparse

    from sdsv.cli_args import check_output_file, check_output_folder

    parser = argparse.ArgumentParser()
    for text in (None, "", str(tmp_path), str(tmp_path / "new" / "deeper")):
        check_output_folder(parser, "--out", text)
    check_output_file(parser, "--json", str(tmp_path / "new" / "t.json"))
    assert not (tmp_path / "new").exists()  # checked, not made
    (tmp_path / "old.json").write_text("{}")
    check_output_file(parser, "--json", str(tmp_path / "old.json"))  # an earlier run's file is written over


# ---- sdsv demo --video: every option is used or refused (issue 33) -------------------------------

@pytest.mark.parametrize("args, option", [
    (["--drafts", "svd"], "--drafts"),
    (["--drafts", "lite", "svd"], "--drafts"),
    (["--plan", "fast"], "--plan"),
    (["--plan", "paper_default"], "--plan"),  # the image demo's default, given: still not used
    (["--tau", "0.2"], "--tau"),
    (["--metric", "cosine"], "--metric"),
    (["--verify", "full"], "--verify"),
    (["--repeats", "2"], "--repeats"),
    (["--compile"], "--compile"),
    (["--prompts", "a red circle"], "--prompts"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_video_demo_refuses_what_it_would_ignore(capsys, args, option):
    line = one_line_error(capsys, ["demo", "--video", *args])
    assert line.startswith(f"sdsv demo: error: argument {option}"), line


def test_video_demo_uses_drafts_and_the_image_demo_keeps_its_defaults(monkeypatch):
    import argparse

    from sdsv import demo
    from sdsv.tiny.video.demo import methods

    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    args = parser.parse_args(["--video", "--drafts", "self", "--no-compile"])
    demo.check_arguments(parser, args)
    assert args.drafts == ["self"] and args.compile is False
    rows = methods(10, args.drafts)
    assert {m.draft for m in rows} == {None, "self"} and len(rows) < len(methods(10))
    args = parser.parse_args(["--video"])
    demo.check_arguments(parser, args)
    assert args.drafts == ["lite", "self"] and {m.draft for m in methods(10, args.drafts)} == {None, "lite", "self"}
    args = parser.parse_args(["--out", ""])
    demo.check_arguments(parser, args)
    assert (args.plan, args.verify, args.metric, args.tau, args.repeats, args.compile) == (
        "paper_default", "endpoints", demo.DEFAULT_METRIC, demo.DEFAULT_TAU, 3, True)
    assert args.drafts == ["lite", "svd", "self"]
