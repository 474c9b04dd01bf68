"""Sharded model rows over torch.distributed (gloo, CPU): 2 and 3 spawned processes run the same
sampling calls with their models wrapped; every rank's result must equal the single-process
run and be identical across ranks. Plus the error cases: no process group, ranks that
disagree on the inputs, a rank that fails mid-run (an error on the others, not a hang)."""

from __future__ import annotations

import multiprocessing as mp
import os
import traceback
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from sdsv import AcceptanceTest, ClassifierFreeGuidance, ErrorControlled, SelfDraft, StagePlan, flow_match_sigmas, sample
from sdsv.distributed import ShardedDenoiser, ShardedSplit, share_bounds

from toy_models import RowwiseDenoiser, RowwiseSplit

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo backend")


def labels_for(b):
    return torch.tensor([[i % 8, i % 6] for i in range(b)])


def run_case(name: str, sharded: bool, seen: list | None = None) -> torch.Tensor:
    """One sampling call; ``sharded`` wraps the models (inside an initialised process group);
    ``seen`` receives the row count of every call the target model itself made."""
    wrap = ShardedDenoiser if sharded else (lambda f: f)
    g = torch.Generator().manual_seed(7)
    target, draft = RowwiseDenoiser(), RowwiseDenoiser(bias=0.02, bad_below=0.4)
    if seen is not None:
        target.calls = seen
    mixed = AcceptanceTest("rel_l2", 0.01)  # rejects some windows, accepts others
    if name in ("endpoints-b1", "full-b3"):
        batch, verify = (1, "endpoints") if name == "endpoints-b1" else (3, "full")
        noise = torch.randn((batch, 3, 5), generator=g)
        return sample(wrap(target), wrap(draft), noise, flow_match_sigmas(24), StagePlan(24, 2, 8, 2, 4),
                      verify=verify, accept=mixed, labels=labels_for(batch)).latents
    if name == "cfg-b1":  # the guidance rows sharded: cond on one rank, uncond on the other
        noise = torch.randn((1, 4, 3), generator=g)
        cfg = lambda f: ClassifierFreeGuidance(wrap(f), 2.5, {"labels": torch.tensor([0, 0])})  # noqa: E731
        return sample(cfg(target), cfg(draft), noise, flow_match_sigmas(20), StagePlan.paper_default(20),
                      accept=mixed, labels=labels_for(1)).latents
    if name in ("self-draft-b3", "self-draft-cfg-b1"):
        split = RowwiseSplit()
        sd = SelfDraft(ShardedSplit(split) if sharded else split)
        batch = 3 if name == "self-draft-b3" else 1
        noise = torch.randn((batch, 6), generator=g)
        if name == "self-draft-b3":
            return sample(None, None, noise, flow_match_sigmas(30, shift=2.0), ErrorControlled(30, k_min=1, k_init=1),
                          self_draft=sd, labels=labels_for(batch)).latents
        null = {"labels": torch.tensor([0, 0])}
        return sample(ClassifierFreeGuidance(sd.target, 3.0, null), ClassifierFreeGuidance(sd.draft, 3.0, null), noise,
                      flow_match_sigmas(30), StagePlan.slow(30), accept=AcceptanceTest("x0_rms", 0.05),
                      self_draft=sd, labels=labels_for(batch)).latents
    raise ValueError(name)


CASES = ["endpoints-b1", "full-b3", "cfg-b1", "self-draft-b3", "self-draft-cfg-b1"]


def run_flux(shard: bool) -> torch.Tensor:
    """The tiny random-weight FluxPipeline, batch 2 with true CFG, the self-draft's verified windows."""
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "integrations"))
    import sdsv
    from tiny_pipelines import CASES as PIPES
    c = PIPES["flux"]
    pipe = c.build()
    sdsv.enable(pipe, policy=StagePlan(6, 1, 3, 1, 2), accept=AcceptanceTest("x0_rms", 0.3), shard=shard)
    try:
        out = pipe(**c.kwargs(batch=2, cfg=True, steps=6), output_type="latent", generator=torch.Generator().manual_seed(0))
    finally:
        sdsv.disable(pipe)
    return out.images


def _worker(rank, world, init_file, out_dir, job, timeout_s):
    torch.set_num_threads(1)
    outcome = {}
    try:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                                timeout=timedelta(seconds=timeout_s))
        if job == "cases":
            outcome = {name: run_case(name, sharded=True) for name in CASES}
            outcome["full-b3 target rows"] = []
            run_case("full-b3", sharded=True, seen=outcome["full-b3 target rows"])
        elif job == "diffusers":
            outcome = {"flux": run_flux(shard=True)}
        elif job == "disagree":
            noise = torch.randn(2, 4) + rank  # rank 1 samples other noise
            sample(ShardedDenoiser(RowwiseDenoiser()), None, noise, flow_match_sigmas(5), StagePlan.target_only(5))
        elif job == "rank-fails":
            if rank == 1:
                raise RuntimeError("simulated failure of rank 1")
            sample(ShardedDenoiser(RowwiseDenoiser()), None, torch.randn(2, 4), flow_match_sigmas(5),
                   StagePlan.target_only(5))
    except Exception as e:  # recorded for the parent: the point is what each rank saw
        outcome = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
    torch.save(outcome, os.path.join(out_dir, f"rank{rank}.pt"))


def _spawn(world: int, job: str, tmp_path, timeout_s: float = 60.0) -> list[dict]:
    ctx = mp.get_context("spawn")
    init = tmp_path / f"init-{job}-{world}"
    procs = [ctx.Process(target=_worker, args=(r, world, str(init), str(tmp_path), job, timeout_s)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert not hung, f"ranks {hung} hung"
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]


def test_share_bounds_are_contiguous_and_balanced():
    assert share_bounds(5, 2) == [(0, 3), (3, 5)]
    assert share_bounds(2, 3) == [(0, 1), (1, 2), (2, 2)]  # a rank with no rows
    assert share_bounds(0, 2) == [(0, 0), (0, 0)]


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_runs_equal_the_single_process_run(world, tmp_path):
    ref = {name: run_case(name, sharded=False) for name in CASES}
    ranks = _spawn(world, "cases", tmp_path)
    for r, out in enumerate(ranks):
        assert "error" not in out, out.get("trace")
    # the work really is split: no rank evaluated more than its share of any target call
    whole = []
    run_case("full-b3", sharded=False, seen=whole)
    for out in ranks:
        assert len(out["full-b3 target rows"]) == len(whole)
        assert all(n <= -(-w // world) for n, w in zip(out["full-b3 target rows"], whole))
    assert sum(sum(out["full-b3 target rows"]) for out in ranks) == sum(whole)
    for name in CASES:
        for r, out in enumerate(ranks):
            torch.testing.assert_close(out[name], ref[name], atol=1e-6, rtol=1e-6, msg=lambda m: f"{name} rank {r}: {m}")
            assert torch.equal(out[name], ranks[0][name]), f"{name}: rank {r} differs from rank 0"


def test_diffusers_pipeline_with_shard_true(tmp_path):
    pytest.importorskip("diffusers")
    ref = run_flux(shard=False)
    ranks = _spawn(2, "diffusers", tmp_path)
    for out in ranks:
        assert "error" not in out, out.get("trace")
        torch.testing.assert_close(out["flux"], ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(ranks[0]["flux"], ranks[1]["flux"])


def test_no_process_group_is_a_clear_error():
    if dist.is_initialized():
        pytest.skip("a process group exists in this process")
    with pytest.raises(RuntimeError, match="needs an initialised process group"):
        ShardedDenoiser(RowwiseDenoiser())
    with pytest.raises(RuntimeError, match="needs an initialised process group"):
        ShardedSplit(RowwiseSplit())


def test_enable_with_shard_needs_a_process_group():
    pytest.importorskip("diffusers")
    if dist.is_initialized():
        pytest.skip("a process group exists in this process")
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "integrations"))
    import sdsv
    from tiny_pipelines import CASES as PIPES
    with pytest.raises(RuntimeError, match="needs an initialised process group"):
        sdsv.enable(PIPES["sd3"].build(), shard=True)


def test_ranks_that_disagree_on_the_inputs_fail_on_every_rank(tmp_path):
    ranks = _spawn(2, "disagree", tmp_path)
    assert all("different rows" in out.get("error", "") for out in ranks), ranks


def test_a_failed_rank_is_an_error_on_the_others_not_a_hang(tmp_path):
    ranks = _spawn(2, "rank-fails", tmp_path, timeout_s=5.0)
    assert "simulated failure" in ranks[1]["error"]
    assert "error" in ranks[0], "rank 0 finished although rank 1 never took part"
