"""Calls on an enabled pipeline: from several threads they run one after the other, each getting
exactly what it gets alone, and ``disable`` / ``enable`` from another thread wait for a running
call and leave the pipeline whole; what the pipeline alone refuses (embeddings in another dtype)
is refused, and bad arguments (head_blocks, NaN sigmas) are named."""

import threading

import torch

import sdsv
from sdsv.integrations.hf_diffusers.random_pipelines import flux_kwargs, flux_pipe


def _call(pipe, seed, steps=8):
    return pipe(**flux_kwargs(steps=steps), output_type="latent", generator=torch.Generator().manual_seed(seed)).images


def _in_threads(fns):
    out, errors = [None] * len(fns), []

    def run(i, fn):
        try:
            out[i] = fn()
        except Exception as e:  # noqa: BLE001 - collected and asserted on
            errors.append(e)
    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors
    return out


def test_concurrent_calls_each_get_their_sequential_result():
    pipe = flux_pipe()
    sdsv.enable(pipe)
    alone = [_call(pipe, s) for s in range(4)]
    for _ in range(3):
        got = _in_threads([lambda s=s: _call(pipe, s) for s in range(4)])
        for a, g in zip(alone, got):
            torch.testing.assert_close(g, a, rtol=0, atol=0)
    torch.testing.assert_close(_call(pipe, 0), alone[0], rtol=0, atol=0)  # and it still works afterwards
    plain = flux_pipe()
    sdsv.disable(pipe)
    torch.testing.assert_close(_call(pipe, 1), _call(plain, 1), rtol=0, atol=0)
    assert type(pipe) is type(plain) and "_sdsv_state" not in pipe.__dict__


def test_disable_and_enable_from_other_threads_wait_for_the_running_call():
    """(Two calls on a pipeline that is not enabled are diffusers' own business: plain diffusers is
    not safe under concurrent calls either, so each trial has at most one call that may run plain.)"""
    pipe, plain = flux_pipe(), flux_pipe()
    sdsv.enable(pipe)
    with_sdsv, without = _call(pipe, 3), _call(plain, 3)
    for _ in range(3):
        got = _in_threads([lambda: _call(pipe, 3), lambda: sdsv.disable(pipe)])
        assert torch.equal(got[0], with_sdsv) or torch.equal(got[0], without)  # ran whole, with sdsv or without
        torch.testing.assert_close(_call(pipe, 3), without, rtol=0, atol=0)  # disabled, and whole
        sdsv.enable(pipe)
        got = _in_threads([lambda: _call(pipe, 3), lambda: _call(pipe, 3), lambda: sdsv.enable(pipe)])
        for g in got[:2]:
            torch.testing.assert_close(g, with_sdsv, rtol=0, atol=0)
    sdsv.disable(pipe)
    torch.testing.assert_close(_call(pipe, 3), without, rtol=0, atol=0)


def test_head_blocks_must_be_a_whole_number():
    import pytest

    with pytest.raises(TypeError, match="head_blocks must be an int, got 1.5"):
        sdsv.enable(flux_pipe(), head_blocks=1.5)


def test_nan_in_custom_sigmas_is_named_as_such():
    import math

    import pytest

    pipe = flux_pipe()
    sdsv.enable(pipe)
    kw = dict(flux_kwargs(steps=4), output_type="latent")
    kw["sigmas"] = [1.0, 0.75, math.nan, 0.25]
    with pytest.raises(ValueError, match="sigmas contain NaN or inf"):
        pipe(**kw)


def test_embeddings_in_another_dtype_than_the_pipeline_are_refused_as_without_sdsv():
    import pytest

    pipe = flux_pipe().to(torch.float64)
    with pytest.raises(RuntimeError, match="same dtype"):
        pipe(**flux_kwargs(steps=3), output_type="latent")
    sdsv.enable(pipe)
    with pytest.raises(TypeError, match="hidden_states in torch.float32 to a torch.float64 transformer"):
        pipe(**flux_kwargs(steps=3), output_type="latent")
    kw = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in flux_kwargs(steps=3).items()}
    assert pipe(**kw, output_type="latent").images.dtype == torch.float64
