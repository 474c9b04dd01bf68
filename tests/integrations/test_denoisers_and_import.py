"""The denoiser adapters on their own, ``import sdsv`` without diffusers, and the sampler's
progress options as a pipeline passes them."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

import sdsv
from sdsv import StagePlan

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_sdsv_imports_without_diffusers():
    code = (
        "import sys; sys.modules['diffusers'] = None\n"  # makes `import diffusers` fail
        "import sdsv\n"
        "assert callable(sdsv.enable) and callable(sdsv.disable)\n"
        "assert 'diffusers' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "try:\n    sdsv.enable(object())\nexcept ImportError:\n    print('ok')\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "python"), ROOT]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_sampler_progress_accepts_a_pipeline_config(capsys):
    """A tqdm option dict holding "disable" (what diffusers' set_progress_bar_config stores)."""
    v = lambda x, s: -x  # noqa: E731
    noise = torch.randn(2, 3)
    sig = sdsv.flow_match_sigmas(4)
    sdsv.sample(v, None, noise, sig, StagePlan.target_only(4), progress={"disable": True, "desc": "quiet"})
    assert "quiet" not in capsys.readouterr().err
    sdsv.sample(v, None, noise, sig, StagePlan.target_only(4), progress={"desc": "loud", "total": 99})
    err = capsys.readouterr().err
    assert "loud" in err and "8/8" in err
    sdsv.sample(v, None, noise, sig, StagePlan.target_only(4), progress={})
    assert "sdsv" in capsys.readouterr().err  # an empty option dict still shows the bar


def test_flux_denoiser_negative_prompt_of_other_length_uses_two_calls():
    """Negative and positive prompts of different token lengths cannot share one forward call
    (the pipelines pad both to max_sequence_length, but a direct user may not): the adapter
    falls back to two calls, each with its own text position ids."""
    from sdsv.integrations.hf_diffusers import flux_denoiser

    calls = []

    class Model(torch.nn.Module):
        dtype = torch.float32

        def forward(self, hidden_states, timestep, guidance, pooled_projections, encoder_hidden_states, txt_ids,
                    img_ids, joint_attention_kwargs=None, return_dict=True):
            assert txt_ids.shape[0] == encoder_hidden_states.shape[1]
            calls.append((hidden_states.shape[0], encoder_hidden_states.shape[1]))
            w = encoder_hidden_states.mean((1, 2)) + pooled_projections.mean(1) + guidance
            return (hidden_states * w.view(-1, 1, 1) + timestep.view(-1, 1, 1),)

    den = flux_denoiser(Model(), txt_ids=torch.zeros(8, 3), img_ids=torch.zeros(4, 3), true_cfg_scale=2.0,
                        negative_txt_ids=torch.zeros(5, 3))
    x, sigma = torch.randn(2, 4, 3), torch.tensor([0.7, 0.3])
    cond = dict(encoder_hidden_states=torch.randn(2, 8, 6), pooled_projections=torch.randn(2, 6),
                guidance=torch.full((2,), 3.5))
    neg = dict(negative_encoder_hidden_states=torch.randn(2, 5, 6), negative_pooled_projections=torch.randn(2, 6))
    v = den(x, sigma, **cond, **neg)
    assert calls == [(2, 8), (2, 5)]
    t = sigma / 1  # Flux: the model gets sigma*1000/1000
    vc = x * (cond["encoder_hidden_states"].mean((1, 2)) + cond["pooled_projections"].mean(1) + 3.5).view(-1, 1, 1)
    vu = x * (neg["negative_encoder_hidden_states"].mean((1, 2)) + neg["negative_pooled_projections"].mean(1) + 3.5
              ).view(-1, 1, 1)
    vc, vu = vc + t.view(-1, 1, 1), vu + t.view(-1, 1, 1)
    torch.testing.assert_close(v, vu + 2.0 * (vc - vu))
    calls.clear()
    den_same = flux_denoiser(Model(), txt_ids=torch.zeros(8, 3), img_ids=torch.zeros(4, 3), true_cfg_scale=2.0,
                             negative_txt_ids=torch.zeros(8, 3))
    neg8 = dict(negative_encoder_hidden_states=torch.randn(2, 8, 6), negative_pooled_projections=torch.randn(2, 6))
    den_same(x, sigma, **cond, **neg8)
    assert calls == [(4, 8)]  # same length: cond and uncond rows in one call


def test_guided_denoiser_batches_cond_and_uncond_in_one_call():
    from sdsv.integrations.hf_diffusers import wan_denoiser

    calls = []

    class Model(torch.nn.Module):
        dtype = torch.float32

        def forward(self, hidden_states, timestep, encoder_hidden_states, attention_kwargs=None, return_dict=True):
            calls.append(hidden_states.shape[0])
            out = hidden_states * encoder_hidden_states.mean((1, 2)).view(-1, 1) + timestep.view(-1, 1)
            return (out,)

    m = Model()
    den = wan_denoiser(m, guidance_scale=3.0)
    x = torch.randn(3, 4)
    sigma = torch.tensor([0.9, 0.5, 0.2])
    c, u = torch.randn(3, 2, 5), torch.randn(3, 2, 5)
    v = den(x, sigma, encoder_hidden_states=c, negative_encoder_hidden_states=u)
    assert calls == [6]  # 3 rows, cond + uncond, one forward
    t = sigma * 1000
    vc = x * c.mean((1, 2)).view(-1, 1) + t.view(-1, 1)
    vu = x * u.mean((1, 2)).view(-1, 1) + t.view(-1, 1)
    torch.testing.assert_close(v, vu + 3.0 * (vc - vu))
    v1 = den(x, sigma, encoder_hidden_states=c)  # no negative: unguided, one forward of 3 rows
    assert calls[-1] == 3
    torch.testing.assert_close(v1, vc)
