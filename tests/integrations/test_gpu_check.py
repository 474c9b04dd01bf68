"""The prepared GPU check (``benchmarks/gpu/e2e_check.py``, ``op_bandwidth.py``, ``summarize.py``)
runs end to end on tiny configurations on a CPU, so it cannot rot between the runs on a GPU."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers")

GPU_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu"
sys.path.insert(0, str(GPU_DIR))

import e2e_check  # noqa: E402
import op_bandwidth  # noqa: E402
import summarize  # noqa: E402


def test_e2e_check_tiny(tmp_path, capsys):
    sections = "rcurve/flux-tiny,e2e/flux-tiny-6,decode/flux-tiny,compile/flux-tiny"
    assert e2e_check.main(["--tiny", "--out", str(tmp_path), "--sections", sections, "--compile-modes", "eager",
                           "--budget-s", "60", "--reps-max", "2"]) == 0
    data = json.load(open(tmp_path / "e2e_check.json"))
    assert data["env"]["tiny"] is True and data["env"]["torch"]
    secs = data["sections"]
    assert set(secs) == set(sections.split(","))
    assert all(s["status"] == "done" for s in secs.values()), {k: s.get("error") for k, s in secs.items()}

    curve = {r["R"]: r for r in secs["rcurve/flux-tiny"]["rows"]}
    assert set(curve) == {1, 2, 3, 4} and curve[1]["ratio_to_R_singles"] == pytest.approx(1.0)

    runs = secs["e2e/flux-tiny-6"]["variants"]
    assert set(runs) == {"plain", "default", "sdsv", "sdsv_all", "sdsv_full", "cache"}
    assert all("error" not in r for r in runs.values()), {k: r.get("error") for k, r in runs.items()}
    assert runs["plain"]["target_calls"] == 6 and runs["plain"]["rel_l2_vs_plain"] == 0
    for name in ("default", "sdsv", "cache"):
        assert runs[name]["target_calls"] < 6 and runs[name]["draft_calls"] > 0
        assert runs[name]["speedup"] > 0 and runs[name]["finite"]
    assert runs["sdsv_full"]["verify"] == "full" and runs["sdsv"]["verify"] == "endpoints"
    assert secs["decode/flux-tiny"]["decode_s"] > 0

    # the self-draft's hooks and gather_combine trace into one graph each: no graph break
    explain = secs["compile/flux-tiny"]["explain"]
    for call in ("target_call_recording_residual", "draft_call_with_forecast", "plain_forward"):
        assert explain[call]["graph_break_count"] == 0, explain[call]
    assert "wall_s" in secs["compile/flux-tiny"]["runs"]["eager/default"]

    capsys.readouterr()
    summarize.main(str(tmp_path))
    md = capsys.readouterr().out
    assert "### End to end" in md and "### Batch cost" in md and "### torch.compile" in md
    assert "| flux-tiny-6 | sdsv |" in md


def test_e2e_check_budget_skips_and_records(tmp_path):
    """A section that cannot fit is recorded as skipped, never silently dropped."""
    assert e2e_check.main(["--tiny", "--out", str(tmp_path), "--sections", "decode/flux-tiny,decode/wan-tiny",
                           "--total-s", "0"]) == 0
    secs = json.load(open(tmp_path / "e2e_check.json"))["sections"]
    assert [s["status"] for s in secs.values()] == ["skipped", "skipped"]


def test_op_bandwidth_smoke(tmp_path, monkeypatch):
    monkeypatch.setattr(op_bandwidth, "SMOKE_ROWS", {"tiny latent": (64, 16)})
    assert op_bandwidth.main(["--smoke", "--out", str(tmp_path)]) == 0
    data = json.load(open(tmp_path / "op_bandwidth.json"))
    ok = [c for c in data["cases"] if "us" in c]
    assert {c["op"] for c in ok} == {"gather_combine", "rollout_step", "pair_stats"}
    assert all(c["frac_copy_same_bytes"] > 0 for c in ok)
    assert all(c["profile"]["host_us_per_call"] > 0 for c in ok if c["backend"] != "reference")
    assert os.path.getsize(tmp_path / "op_profile.txt") > 0


def test_peers_overhead_tiny(tmp_path):
    """The GPU peers script runs every method, eager, on the tiny Flux config; the pipeline alone is
    the unit of work and the methods that skip blocks count less."""
    pytest.importorskip("cache_dit")
    import peers_overhead

    for steps, computed in ((10, 4), (28, 8), (50, 15), (8, 1)):
        mask = peers_overhead.compute_mask(steps, computed, warmup=8)
        assert len(mask) == steps and sum(mask) == computed and mask[0] == 1 and (computed == 1 or mask[-1] == 1)
    assert peers_overhead.main(["--tiny", "--out", str(tmp_path), "--sections", "flux-tiny-8", "--modes", "eager",
                                "--deep-fraction", "0.4"]) == 0
    data = json.load(open(tmp_path / "peers_overhead.json"))
    rows = data["sections"]["flux-tiny-8"]["modes"]["eager"]
    assert set(rows) == set(peers_overhead.METHODS)
    assert all("error" not in r for r in rows.values()), {k: r.get("error") for k, r in rows.items()}
    assert rows["plain"]["work_fraction"] == 1.0 and rows["plain"]["module_calls"] == 8
    assert rows["cachedit"]["work_fraction"] < 1.0 and rows["sdsv"]["work_fraction"] < 1.0
    assert data["env"]["deep_fraction"] == 0.4
