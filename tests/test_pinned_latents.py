"""Latents of a few `sdsv demo` rows, pinned bit for bit.

The sampler's structure may change; its numbers may not. Each row samples with the shipped tiny
models (eager, no torch.compile) and compares a SHA-256 of the latents' bytes, and a few values,
with ``tests/data/pinned_latents.json``. The bits depend on the CPU's vector instructions (PyTorch
picks AVX2 or AVX-512 kernels, whose sums round differently), so the file holds one set per
capability and CPU model (:func:`capability`): on a pinned one every bit is compared, on another
the values must agree with every pinned set to 1e-4 (rounding, not a changed computation).
Regenerate the current capability's set only for a change that is meant to move numbers, or to
pin a new capability: ``python tests/test_pinned_latents.py --write``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

from sdsv import ErrorControlled, FixedInterval, StagePlan
from sdsv.evaluation.methods import SELF_SDSV_ACCEPT, Method
from sdsv.policies.error_controlled import SHORT_WINDOWS
from sdsv.tiny.pipeline import TinyPipeline

DATA = Path(__file__).parent / "data" / "pinned_latents.json"
PROMPTS = {1: ["a red circle"], 2: ["a blue triangle", "a yellow ring"]}
N = 12  # steps of the Euler rows; the DPM-Solver++(2M) rows take half, as the demo's do

ROWS = {
    "target-only euler b2": (Method("t", StagePlan.target_only(N)), 2),
    "target-only dpm++2m b2": (Method("t", StagePlan.target_only(N // 2 + 4), solver="dpm++2m"), 2),
    "target-only dpm++2m b1": (Method("t", StagePlan.target_only(N // 2 + 4), solver="dpm++2m"), 1),
    "target-only unipc b1": (Method("t", StagePlan.target_only(N // 2), solver="unipc"), 1),
    "draft-only lite b1": (Method("d", StagePlan.draft_only(N), "lite"), 1),
    "improved-draft svd b2": (Method("d", StagePlan.improved_draft(N), "svd"), 2),
    "sdsv lite endpoints b1": (Method("s", StagePlan.paper_default(N), "lite"), 1),
    "sdsv lite full b2": (Method("s", StagePlan.paper_default(N), "lite", "full"), 2),
    "sdsv self endpoints b2": (Method("s", StagePlan.slow(N), "self", accept=SELF_SDSV_ACCEPT), 2),
    "sdsv self full dpm++2m b2": (Method("s", StagePlan.slow(N), "self", "full", SELF_SDSV_ACCEPT, "dpm++2m"), 2),
    "cache every 3 b1": (Method("c", FixedInterval(N, every=3), "self"), 1),
    "cache on dpm++2m b2": (Method("c", FixedInterval(N // 2, every=2), "self", solver="dpm++2m"), 2),
    "error-ctrl self b2": (Method("e", ErrorControlled(N, tol=0.3), "self"), 2),
    "error-ctrl self reject b1": (Method("e", ErrorControlled(N, tol=0.3, reject_above=0.05), "self"), 1),
    "error-ctrl on dpm++2m b2": (Method("e", ErrorControlled(N // 2, **SHORT_WINDOWS), "self",
                                        solver="dpm++2m"), 2),
    "error-ctrl self unipc b1": (Method("e", ErrorControlled(N, tol=0.3), "self", solver="unipc"), 1),
}


def fingerprint(latents: torch.Tensor) -> dict:
    flat = latents.detach().contiguous().reshape(-1)
    return {"sha256": hashlib.sha256(flat.numpy().tobytes()).hexdigest(), "shape": list(latents.shape),
            "values": [float(v).hex() for v in flat[:: max(1, flat.numel() // 4)][:4]]}


@pytest.fixture(scope="module")
def pipe():
    return TinyPipeline.from_pretrained()


def run_row(pipe, name: str) -> torch.Tensor:
    method, batch = ROWS[name]
    return pipe(PROMPTS[batch], seed=3, **method.pipeline_kwargs()).latents


def capability() -> str:
    """The CPU's vector capability as PyTorch uses it, and the CPU's model name: the kernels'
    rounding can differ between vendors at one capability too."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{torch.backends.cpu.get_cpu_capability()}, {model}"


@pytest.mark.parametrize("name", list(ROWS))
def test_demo_rows_are_bit_identical_to_the_pinned_latents(pipe, name):
    sets = json.loads(DATA.read_text())
    got = fingerprint(run_row(pipe, name))
    if capability() in sets:
        pinned = sets[capability()][name]
        assert got["values"] == pinned["values"], f"{name}: first values {got['values']} != pinned {pinned['values']}"
        assert got == pinned
        return
    values = [float.fromhex(v) for v in got["values"]]
    for cap, rows in sets.items():
        want = [float.fromhex(v) for v in rows[name]["values"]]
        assert got["shape"] == rows[name]["shape"]
        assert values == pytest.approx(want, abs=1e-4), f"{name}: {values} vs the {cap} pin {want}"


def test_the_pinned_sets_agree_across_capabilities():
    """What differs between the capabilities' pins is rounding, not a computation."""
    sets = json.loads(DATA.read_text())
    assert sets and all(set(rows) == set(ROWS) for rows in sets.values())
    first = next(iter(sets.values()))
    for rows in sets.values():
        for name in ROWS:
            a = [float.fromhex(v) for v in rows[name]["values"]]
            b = [float.fromhex(v) for v in first[name]["values"]]
            assert a == pytest.approx(b, abs=1e-4), name


if __name__ == "__main__" and "--write" in sys.argv:
    torch.set_num_threads(1)
    p = TinyPipeline.from_pretrained()
    sets = json.loads(DATA.read_text()) if DATA.exists() else {}
    sets[capability()] = {name: fingerprint(run_row(p, name)) for name in ROWS}
    DATA.write_text(json.dumps(sets, indent=1) + "\n")
    print(f"wrote the {capability()} set of {DATA}")
