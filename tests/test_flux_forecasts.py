"""benchmarks/flux_forecasts.py: the self-draft forecasting the model's output, through
``sdsv.enable`` on the trained tiny Flux, is diffusers' TaylorSeer in lite mode where both take the
target at the same steps — so the measured gap between sdsv's cache and TaylorSeer lite is the
forecast quantity's and nothing else's."""

import importlib.util
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
_spec = importlib.util.spec_from_file_location("flux_forecasts",
                                               Path(__file__).parents[1] / "benchmarks" / "flux_forecasts.py")
ff = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ff)

STEPS = 10  # warm-up 3, then the target every 5: (10 - 2 - 3) % 5 == 0, so the last steps agree too


@pytest.fixture(scope="module")
def pipe():
    from sdsv.tiny.flux import load_pipeline

    p = load_pipeline()
    p.set_progress_bar_config(disable=True)
    return p


def test_the_output_forecast_at_taylorseers_steps_draws_what_taylorseer_lite_draws(pipe):
    from sdsv.evaluation import peers as P
    from sdsv.integrations.hf_diffusers import hook

    own = hook.SDSVCall.self_draft_split
    rows = {r.name: r for r in ff.rows_for(pipe, STEPS)}
    lite, output = rows["TaylorSeerCache interval=5, lite mode"], rows["sdsv cache every 5 at TaylorSeer's steps (line): output"]
    residual = rows["sdsv cache every 5 at TaylorSeer's steps (line): residual"]
    runs = P.run_rows({"main": pipe}, [lite, output, residual], ["a red circle", "a blue ring"], [3, 4], 2,
                      "test", progress=False)
    assert all(r.error is None for r in runs.values()), {k: r.error for k, r in runs.items()}
    macs_one = P.macs_per_evaluation(pipe)
    # the same deep work: 5 evaluations per image (TaylorSeer's predicted steps still run the
    # embeddings' few Linear layers, the output forecast nothing)
    assert runs[output.name].macs == 2 * 5 * macs_one
    assert 0 <= runs[lite.name].macs - runs[output.name].macs < 0.01 * runs[output.name].macs
    torch.testing.assert_close(runs[output.name].images[0], runs[lite.name].images[0], rtol=0, atol=1e-5)
    assert (runs[residual.name].images[0] - runs[lite.name].images[0]).abs().max() > 1e-3  # the quantity matters
    assert hook.SDSVCall.self_draft_split is own  # the lab split is taken off with the row


def test_the_output_forecast_runs_nothing_of_the_model_in_a_draft_call(pipe):
    import sdsv
    from sdsv.tiny.flux.components import call_kwargs

    calls = []
    handle = pipe.transformer.proj_out.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        with ff.output_forecast():
            sdsv.enable(pipe)
            try:
                pipe(["a red circle"], generator=[torch.Generator().manual_seed(0)], output_type="pt",
                     **call_kwargs(steps=STEPS))
                stats = pipe.sdsv_stats
            finally:
                sdsv.disable(pipe)
    finally:
        handle.remove()
    assert stats.draft_calls > 0 and len(calls) == stats.target_calls
