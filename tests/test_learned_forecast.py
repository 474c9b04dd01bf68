"""benchmarks/learned_forecast.py: the learned forecaster's features and its split inside the
sampler are right where the answer is known, so its measured loss is the forecast's, not a bug."""

import importlib.util
from pathlib import Path

import torch

_spec = importlib.util.spec_from_file_location("learned_forecast",
                                               Path(__file__).parents[1] / "benchmarks" / "learned_forecast.py")
lf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lf)


def test_an_untrained_forecaster_is_the_line_inside_the_sampler():
    """Its last layer starts at zero: the draft then forecasts the line through the newest two
    anchors, as the library's self-draft with ``LINE`` does (same windows, same images)."""
    from sdsv import ErrorControlled
    from sdsv.forecast import LINE
    from sdsv.tiny.pipeline import TinyPipeline

    pipe = TinyPipeline.from_pretrained(names=("target",))
    run = lambda: pipe(["a red circle", "a blue ring"], policy=ErrorControlled(20, tol=0.3), draft="self",  # noqa: E731
                       solver="euler", seed=[1, 2], forecast=LINE)
    with torch.inference_mode():
        pipe.self_draft = lf.learned_self_draft(pipe, lf.make_net(pipe.target.cfg.dim))
        try:
            learned = run()
        finally:
            del pipe.self_draft
        line = run()
    assert learned.stats.draft_calls > 0 and learned.stats.target_evals == line.stats.target_evals
    torch.testing.assert_close(learned.images, line.images, rtol=0, atol=1e-4)


def test_the_features_see_the_spacing_and_the_line_is_in_sigma():
    g = torch.Generator().manual_seed(0)
    r = [torch.randn(3, 5, 4, generator=g) for _ in range(3)]
    h = [torch.randn(3, 5, 4, generator=g) for _ in range(3)]
    s = lambda v: torch.full((3,), v)  # noqa: E731
    f, line, scale = lf.features(r[0], r[1], r[2], h[0], h[1], h[2], s(0.6), s(0.7), s(0.9), s(0.45))
    torch.testing.assert_close(line, r[0] + 1.5 * (r[0] - r[1]))  # x = (0.45 - 0.6) / (0.6 - 0.7)
    assert f.shape == (3, 5, 5 * 4 + 5)
    torch.testing.assert_close(f[0, 0, -5:], torch.tensor([1.5, 2.25, 2.0, 0.6, -5.0]))  # x, x², spacing ratio, s_a, -steps
    g_in, _, _ = lf.features(r[0], r[1], r[2], h[0], h[1], h[2], s(0.6), s(0.7), s(0.9), s(0.45), use_input=False)
    h_line = h[0] + 1.5 * (h[0] - h[1])
    assert torch.count_nonzero(g_in[..., 12:16]) == 0  # without the input: h - h_line is zero
    torch.testing.assert_close(g_in[..., 16:20], (h_line - h[0]) / scale)
