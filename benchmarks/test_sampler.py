"""End to end: one image of the shipped tiny models per op backend (the sampler's arithmetic is
the only difference), batch 1, guidance 3, eager models so the numbers do not include a
one-time compile. The self-draft's error-controlled windows (the demo's best Euler row) and
SDSV with the trained ``lite`` draft (verification every window)."""

from __future__ import annotations

import pytest
import torch

import sdsv_kernels
from sdsv import AcceptanceTest, ErrorControlled, StagePlan

from test_ops import backends

CONFIGS = {
    "error-ctrl-self": dict(policy=ErrorControlled(50), draft="self"),
    "sdsv-lite": dict(policy=StagePlan.paper_default(50), draft="lite", accept=AcceptanceTest("x0_rms", 0.3)),
}


@pytest.fixture(scope="module")
def pipe():
    from sdsv.tiny.pipeline import TinyPipeline
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return TinyPipeline.from_pretrained(names=["target", "lite"])


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        pairs = [p for p in backends(metafunc.config.getoption("--bench-triton")) if p[1] == "cpu"]
        metafunc.parametrize("backend", pairs, ids=[b for b, _ in pairs])


@pytest.mark.parametrize("config", list(CONFIGS))
def test_one_image(benchmark, pipe, config, backend):
    name, _ = backend
    kw = CONFIGS[config]
    benchmark.group = f"sampler | tiny image, {config}"
    with sdsv_kernels.use_backend(name):
        pipe("a red circle", **kw)  # warm-up
        out = benchmark.pedantic(lambda: pipe("a red circle", **kw), rounds=3, iterations=1)
    st = out.stats
    benchmark.extra_info.update(backend=name, target_calls=st.target_calls, draft_evals=st.draft_evals,
                                sampler_share=round(st.sampler_s / st.wall_s, 4) if st.wall_s else None)
