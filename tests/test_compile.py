"""TinyPipeline.compile(): same numbers as eager, a clear error and an eager fallback where it cannot build."""

import shutil

import pytest
import torch

from sdsv import AcceptanceTest, StagePlan
from sdsv.cli import main as cli_main
from sdsv.tiny.model import TinyDiT, TinyDiTConfig
from sdsv.tiny.pipeline import CompileUnavailable, TinyPipeline


def small_pipeline() -> TinyPipeline:
    torch.manual_seed(0)
    target = TinyDiT(TinyDiTConfig(dim=32, depth=2, heads=2))
    draft = TinyDiT(TinyDiTConfig(dim=32, depth=1, heads=2, guidance_embed=True, low_rank={"attn": 8, "mlp": 8}))
    for m in (target, draft):
        # adaLN-Zero starts every block and the output at zero: randomise so the test sees real values
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.1)
        m.eval().requires_grad_(False)
    return TinyPipeline({"target": target, "svd": draft})


def unavailable(self, **kw):
    """Stands in for TinyPipeline.compile on a machine where inductor cannot build."""
    raise CompileUnavailable("torch.compile failed, models stay eager: test")


def failing_backend(gm, example_inputs):
    raise RuntimeError("no C++ compiler on this machine")


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="inductor needs a C++ compiler")
def test_compiled_models_give_the_eager_numbers():
    eager = small_pipeline()
    compiled = small_pipeline().compile()
    assert set(compiled.compiled) == {"target", "svd"}
    labels = eager.encode(["a red circle", "a blue square", "a green ring"])
    g = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        # batch 1 was compiled by compile(); batch 3 recompiles with a dynamic batch dimension
        for b in (1, 3):
            x = torch.randn(b, 3, 32, 32, generator=g)
            sigma = torch.rand(b, generator=g)
            for name in ("target", "svd"):
                want = eager.denoiser(name)(x, sigma, labels=labels[:b])
                got = compiled.denoiser(name)(x, sigma, labels=labels[:b])
                torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        # and a whole SDSV run: same windows, same accept decisions, same image
        kw = dict(num_steps=10, policy=StagePlan.paper_default(10), accept=AcceptanceTest("x0_rms", 0.3), seed=0)
        a, b = eager("a red circle", **kw), compiled("a red circle", **kw)
    assert [w.accepted for w in a.stats.windows] == [w.accepted for w in b.stats.windows]
    torch.testing.assert_close(b.latents, a.latents, atol=1e-3, rtol=1e-3)


def test_compile_failure_is_reported_and_leaves_the_models_eager():
    pipe = small_pipeline()
    with pytest.raises(CompileUnavailable, match="models stay eager.*no C\\+\\+ compiler"):
        pipe.compile(backend=failing_backend)
    assert pipe.compiled == {}
    with torch.inference_mode():
        v = pipe.denoiser("target")(torch.zeros(1, 3, 32, 32), torch.full((1,), 0.5), labels=pipe.encode(["a red circle"]))
    assert torch.isfinite(v).all()


@pytest.mark.slow
def test_demo_falls_back_to_eager_when_compile_is_unavailable(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(TinyPipeline, "compile", unavailable)
    rc = cli_main(["demo", "--steps", "4", "--prompts", "a red circle", "--drafts", "svd", "--out", "", "--threads", "1",
                   "--repeats", "2"])
    assert rc == 0
    out, err = capsys.readouterr()
    assert "warning: torch.compile failed" in err
    assert "models eager (torch.compile unavailable)" in out
    assert "mean of 2" in out
    per_round = out.split("speedup over target-only in each round:")[1].split("\n")
    assert per_round[1].split()[:2] == ["draft-only", "(svd)"] and per_round[1].count("x") == 2


@pytest.mark.slow
def test_demo_rejects_zero_repeats(capsys):
    with pytest.raises(SystemExit):
        cli_main(["demo", "--repeats", "0"])
    assert "must be >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_runner_says_how_its_models_run(monkeypatch, capsys):
    from sdsv.evaluation.runner import Runner

    monkeypatch.setattr(TinyPipeline, "compile", unavailable)
    kw = dict(images=2, steps=2, batch=2, latency_images=1, progress=False)
    assert Runner(**kw).backend == "eager"
    assert Runner(**kw, compile=True).backend == "eager (torch.compile unavailable)"
    assert "warning: torch.compile failed" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="inductor needs a C++ compiler")
def test_compiled_self_draft_gives_the_eager_numbers():
    """The self-draft's two graphs (target with residual, draft with forecast) are compiled too."""
    from sdsv import ErrorControlled

    eager = small_pipeline()
    compiled = small_pipeline().compile()
    assert compiled.compiled_split is not None
    for plan in (ErrorControlled(12, tol=0.05, k_max=3), StagePlan.slow(12)):
        kw = dict(policy=plan, draft="self", seed=0)
        if plan.verifies:
            kw["accept"] = AcceptanceTest("x0_rms", 0.3)
        a, b = eager(["a red circle", "a blue square"], **kw), compiled(["a red circle", "a blue square"], **kw)
        assert [(w.start, w.k, w.accepted) for w in a.stats.windows] == [(w.start, w.k, w.accepted) for w in b.stats.windows]
        torch.testing.assert_close(b.latents, a.latents, atol=1e-3, rtol=1e-3)
