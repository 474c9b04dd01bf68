"""``sdsv eval --experiment peers``: every peer runs through its own API on the trained tiny
FluxPipeline, the deep work is counted from what actually ran, and the summary's dominance is
right."""

import math

import pytest
import torch

from sdsv.evaluation import peers as P

pytest.importorskip("diffusers")
STEPS = 6


@pytest.fixture(scope="module")
def pipes():
    from sdsv.tiny.flux import load_pipeline

    out = {name: load_pipeline() for name in ("main", "cache-dit")}
    for p in out.values():
        p.set_progress_bar_config(disable=True)
    return out


def _one_per_family(rows):
    seen, out = set(), []
    for r in rows:
        if r.family not in seen:
            seen.add(r.family)
            out.append(r)
    return out


def test_one_setting_of_every_peer_runs_on_the_trained_pipeline(pipes):
    pytest.importorskip("cache_dit")
    pipe = pipes["main"]
    mag = P.calibrate_mag_ratios(pipe, ["a red circle", "a blue ring"], [7, 8], 2, STEPS)
    assert len(mag) == STEPS and all(math.isfinite(v) and v > 0 for v in mag)
    rows = _one_per_family([*P.pipeline_rows(STEPS), *P.sdsv_rows(None, STEPS), *P.sdsv_cache_rows(STEPS),
                            *P.diffusers_rows(mag, STEPS), *P.cache_dit_rows(12, STEPS)])
    assert {r.family for r in rows} >= {"sdsv", "sdsv cache", "diffusers FirstBlockCache", "diffusers TaylorSeerCache", "diffusers TaylorSeerCache (lite)", "diffusers MagCache",
                                        "diffusers SeaCache", "diffusers PyramidAttentionBroadcast", "diffusers FasterCache",
                                        "cache-dit none", "cache-dit TaylorSeer", "cache-dit FoCa", "cache-dit DMD"}
    runs = P.run_rows(pipes, rows, ["a red circle", "a green cross"], [1, 2], 2, "test", progress=False)
    macs_one = P.macs_per_evaluation(pipe)
    for r in rows:
        run = runs[r.name]
        if r.family == "diffusers SeaCache":  # FluxPipeline's loop gives it no step metadata: it fails open
            assert "fail-open" in run.error and not run.images, run.error
            continue
        assert run.error is None, (r.name, run.error)
        img = torch.cat(run.images)
        assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all()
        assert 0 < run.macs / (2 * macs_one) <= STEPS + 1e-9, r.name
    assert runs[rows[0].name].macs == 2 * STEPS * macs_one  # the pipeline alone: exactly one evaluation per step
    assert runs["sdsv faithful"].macs < runs[rows[0].name].macs
    # every method took itself off again: the pipeline draws what it drew before
    again = P.run_rows(pipes, rows[:1], ["a red circle", "a green cross"], [1, 2], 2, "test", progress=False)
    torch.testing.assert_close(again[rows[0].name].images[0], runs[rows[0].name].images[0], rtol=0, atol=0)


def test_a_cache_that_fails_open_is_reported_not_run_on_every_batch(pipes):
    sea = [r for r in P.diffusers_rows(None, STEPS) if r.family == "diffusers SeaCache"]
    assert len(sea) == 3
    runs = P.run_rows(pipes, sea[:1], ["a red circle", "a green cross"], [1, 2], 1, "test", progress=False)
    run = runs[sea[0].name]
    assert "fail-open" in run.error and "cache_context" in run.error and not run.images
    # after the error, the watch is clear: a cache that does run is not blamed
    fbc = P._diffusers("FBC", "diffusers FirstBlockCache", lambda p: __import__("diffusers").hooks.FirstBlockCacheConfig(
        threshold=0.05), STEPS, verify=sea[0].verify)
    assert P.run_rows(pipes, [fbc], ["a red circle"], [3], 1, "test", progress=False)["FBC"].error is None


def test_a_cache_that_skips_blocks_counts_less_deep_work(pipes):
    from diffusers import hooks as H

    skip_all = P._diffusers("FBC never recomputes", "diffusers FirstBlockCache",
                            lambda p: H.FirstBlockCacheConfig(threshold=1e9), STEPS)
    runs = P.run_rows(pipes, [P.pipeline_rows(STEPS)[0], skip_all], ["a red circle"], [3], 1, "test", progress=False)
    full, skipped = runs["pipeline, 6 steps"].macs, runs["FBC never recomputes"].macs
    assert skipped < 0.6 * full  # after its first step only the first block (and the embedders) run


def test_summary_tail_and_dominance():
    rows = [P.Row("ref", "pipeline"), P.Row("conv", "reference"), P.Row("fast good", "sdsv"), P.Row("slow bad", "x")]
    img = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    noise = lambda s: torch.randn(img.shape, generator=torch.Generator().manual_seed(s))  # noqa: E731
    runs = {"ref": P.RowRun([img], 10.0, 40), "conv": P.RowRun([img + 0.01 * noise(1)], 20.0, 80),
            "fast good": P.RowRun([img + 0.01 * noise(2)], 2.0, 10), "slow bad": P.RowRun([img + 0.1 * noise(3)], 5.0, 20)}
    out = {d["method"]: d for d in P.summarise(rows, runs, "ref", "conv", macs_one=10)}
    assert out["fast good"]["speedup"] == 5.0 and out["fast good"]["deep_evals"] == 0.25
    assert out["slow bad"]["fid_dominated_by"] == ["fast good"] and out["fast good"]["fid_dominated_by"] == []
    assert out["fast good"]["fid_p5"] <= out["fast good"]["fid_mean"] and "fid_p5" not in out["ref"]
    assert "acc_p5" in out["ref"] and "acc_p5" not in out["conv"]


def test_a_row_that_cannot_run_is_reported_not_fatal(pipes):
    def boom(p):
        raise RuntimeError("not on this pipeline")
    runs = P.run_rows(pipes, [P.Row("broken", "x", STEPS, attach=boom)], ["a red circle"], [0], 1, "test", progress=False)
    assert runs["broken"].error == "RuntimeError: not on this pipeline"


def test_an_interrupted_run_picks_up_its_finished_batches(pipes, tmp_path):
    rows = P.pipeline_rows(STEPS)[:2]
    first = P.run_rows(pipes, rows, ["a red circle", "a green cross"], [1, 2], 1, "test", progress=False, cache=tmp_path)
    assert len(list(tmp_path.glob("batch1_*.pt"))) == 2

    def boom(p):
        raise RuntimeError("recomputed")
    again = [P.Row(r.name, r.family, r.steps, attach=boom) for r in rows]
    second = P.run_rows(pipes, again, ["a red circle", "a green cross"], [1, 2], 1, "test", progress=False, cache=tmp_path)
    for r in rows:
        assert second[r.name].error is None and second[r.name].macs == first[r.name].macs
        torch.testing.assert_close(torch.cat(second[r.name].images), torch.cat(first[r.name].images), rtol=0, atol=0)
    other_seeds = P.run_rows(pipes, again, ["a red circle", "a green cross"], [5, 6], 1, "test", progress=False, cache=tmp_path)
    assert other_seeds[rows[0].name].error == "RuntimeError: recomputed"
    # the same name with another key (an intent whose default changed) is sampled again
    changed = [P.Row(r.name, r.family, r.steps, attach=boom, key="other windows") for r in rows]
    third = P.run_rows(pipes, changed, ["a red circle", "a green cross"], [1, 2], 1, "test", progress=False, cache=tmp_path)
    assert all(third[r.name].error == "RuntimeError: recomputed" for r in rows)


def test_an_intents_rows_are_keyed_by_what_the_intent_runs():
    from sdsv.intents import INTENTS

    faithful, accurate = P.sdsv_rows(None, STEPS)[:2]
    assert faithful.key == P.intent_key("faithful", STEPS) and INTENTS["faithful"].windows(STEPS).describe() in faithful.key
    assert accurate.cache_key.startswith(accurate.name) and "accurate" in accurate.key and faithful.key != accurate.key


def test_a_resumed_run_samples_only_the_rows_a_batch_lacks_and_keeps_why_a_row_failed(pipes, tmp_path):
    rows = P.pipeline_rows(STEPS)[:2]

    def boom(p):
        raise RuntimeError("not here")
    broken = P.Row("broken", "x", STEPS, attach=boom)
    prompts, seeds = ["a red circle", "a green cross"], [1, 2]
    first = P.run_rows(pipes, [rows[0], broken], prompts, seeds, 1, "test", progress=False, cache=tmp_path)
    for f in tmp_path.glob("batch1_*.pt"):  # the failure is on record in every batch, not only the first
        assert torch.load(f)["rows"]["broken"] == "RuntimeError: not here"

    def recomputed(p):
        raise RuntimeError("recomputed")
    again = [P.Row(rows[0].name, rows[0].family, rows[0].steps, attach=recomputed), rows[1],
             P.Row("broken", "x", STEPS, attach=recomputed)]
    second = P.run_rows(pipes, again, prompts, seeds, 1, "test", progress=False, cache=tmp_path)
    assert second[rows[0].name].error is None  # read back, not sampled again
    torch.testing.assert_close(torch.cat(second[rows[0].name].images), torch.cat(first[rows[0].name].images),
                               rtol=0, atol=0)
    assert second["broken"].error == "RuntimeError: not here"  # its reason read back, not tried again
    alone = P.run_rows(pipes, rows[1:], prompts, seeds, 1, "test", progress=False)
    torch.testing.assert_close(torch.cat(second[rows[1].name].images), torch.cat(alone[rows[1].name].images),
                               rtol=0, atol=0)  # the row the files lacked: sampled and added
    assert all(rows[1].name in torch.load(f)["rows"] for f in tmp_path.glob("batch1_*.pt"))

def test_a_trained_draft_row_counts_the_drafts_work_too(pipes):
    from sdsv.tiny.flux.train import make_lite

    draft = make_lite(pipes["main"].transformer).eval()
    row = P.sdsv_rows(None, STEPS, draft)[-1]
    assert row.counted == (draft,)
    runs = P.run_rows(pipes, [row], ["a red circle"], [4], 1, "test", progress=False)
    assert runs[row.name].error is None
    only_target = P.LinearWork(pipes["main"].transformer)
    try:
        P.run_rows(pipes, [P.Row("again", "sdsv", STEPS, attach=row.attach, detach=row.detach)], ["a red circle"], [4], 1,
                   "test", progress=False)
    finally:
        only_target.remove()
    assert runs[row.name].macs > only_target.macs > 0  # the draft's calls are counted on top


def test_shards_fill_one_cache_that_an_unsharded_run_reads(pipes, tmp_path):
    rows = P.pipeline_rows(STEPS)[:2]
    prompts, seeds = ["a red circle", "a green cross", "a blue ring"], [1, 2, 3]
    first = P.run_rows(pipes, rows, prompts, seeds, 1, "test", progress=False, cache=tmp_path, shard=(0, 2))
    assert first.skipped_batches == 1 and sorted(p.name for p in tmp_path.glob("batch1_*.pt")) == \
        ["batch1_000000.pt", "batch1_000002.pt"]  # batches 0 and 2 of 3
    assert len(first[rows[0].name].images) == 2 and first.compute_seconds > 0
    second = P.run_rows(pipes, rows, prompts, seeds, 1, "test", progress=False, cache=tmp_path, shard=(1, 2))
    assert second.skipped_batches == 0 and len(list(tmp_path.glob("batch1_*.pt"))) == 3  # read 2, sampled 1

    def boom(p):
        raise RuntimeError("recomputed")
    whole = P.run_rows(pipes, [P.Row(r.name, r.family, r.steps, attach=boom) for r in rows], prompts, seeds, 1, "test",
                       progress=False, cache=tmp_path)
    alone = P.run_rows(pipes, rows, prompts, seeds, 1, "test", progress=False)
    for r in rows:  # every batch read back, none recomputed, the same images as one unsharded run
        assert whole[r.name].error is None
        torch.testing.assert_close(torch.cat(whole[r.name].images), torch.cat(alone[r.name].images), rtol=0, atol=0)
    assert whole.compute_seconds == pytest.approx(second.compute_seconds)  # the batches' own time, read back


def test_a_calibration_that_finds_nothing_is_the_rows_reason_not_a_crash(pipes):
    import sdsv

    failed = sdsv.CalibrationError("no tolerance reaches p5 >= 32 dB")
    row = next(r for r in P.sdsv_rows(failed, STEPS) if r.name == "sdsv calibrated")
    runs = P.run_rows(pipes, [row], ["a red circle"], [0], 1, "test", progress=False)
    assert runs[row.name].error == "CalibrationError: no tolerance reaches p5 >= 32 dB" and not runs[row.name].images


@pytest.mark.parametrize("every", [5, 3, 2])
def test_the_cache_at_taylorseers_steps_computes_what_its_hook_computes(every):
    """TaylorSeerCacheHook computes step s when s < 3 or (s - 3 - 1) % interval == 0; the sdsv
    cache row at its steps takes the target there and forecasts between (the last step, which a
    window must end with, aside)."""
    policy = P.TaylorSeerSteps(50, every=every, warmup=3)
    target, step = [], 0
    while step < 50:
        kind, k = policy.window_at(step)
        step += 0 if kind == "target" else k
        target.append(step)
        step += 1
    hook = [s for s in range(50) if s < 3 or (s - 4) % every == 0]
    assert sorted(set(target) - {49}) == sorted(set(hook) - {49}) and 49 in target


def test_the_experiment_end_to_end_with_batch_1_left_out(tmp_path):
    """``peers(..., batch1_images=0)``: one table, its plot, the worst-image grid and the markdown;
    the batch-8 batches it sampled are kept for a later run that adds batch 1."""
    pytest.importorskip("cache_dit")
    md, tables, files = P.peers(tmp_path, images=2, batch1_images=0, calibration_images=0, batch=2, steps=3,
                                progress=False)
    assert list(tables) == ["batch 2"] and "batch 1 not run" in md and "### batch 1" not in md
    assert {f.name for f in files} == {"peers.json", "peers.png", "peers_worst.png", "peers.md"}
    assert all(f.stat().st_size > 0 for f in files)
    assert sorted(p.name for p in (tmp_path / "cache").glob("*.pt")) == ["batch2_000000.pt"]
    rows = {d["method"]: d for d in tables["batch 2"]}
    assert "sdsv faithful" in rows and "sdsv calibrated" not in rows  # no calibration images: no calibrated rows
