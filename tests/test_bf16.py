"""--bf16: bfloat16 hidden layers, fp32 outputs, in all four scripts."""

import importlib

import numpy as np
import pytest
import torch
from conftest import TINY, flags, read_csv, run_dir_of, run_script

SCRIPTS = ["td3bc_pretrain", "edac_pretrain", "td3bc_cql_pretrain", "edac_bc_pretrain"]
MODULES = {name: importlib.import_module(name) for name in SCRIPTS}


def pair(cls, *args):
    """The same network twice, fp32 and --bf16, with equal weights."""
    torch.manual_seed(0)
    fp32 = cls(*args)
    bf16 = cls(*args, bf16=True)
    bf16.load_state_dict(fp32.state_dict())
    return fp32, bf16


@pytest.mark.parametrize("script", SCRIPTS)
def test_bf16_critic_outputs_fp32_values_close_to_fp32(script):
    module = MODULES[script]
    fp32, bf16 = pair(module.Critic, 5, 2, (64, 64), True, 3)
    obs, act = torch.randn(32, 5), torch.rand(32, 2) * 2 - 1
    q32, q16 = fp32(obs, act), bf16(obs, act)
    assert q16.dtype == torch.float32 and q16.shape == q32.shape == (3, 32)
    assert not torch.equal(q16, q32)  # the hidden layers did run in bfloat16
    torch.testing.assert_close(q16, q32, atol=0.02, rtol=0.02)
    q16.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in bf16.parameters())


@pytest.mark.parametrize("script", SCRIPTS)
def test_bf16_actor_outputs_fp32_actions(script):
    module = MODULES[script]
    low, high = -np.ones(2, np.float32), np.ones(2, np.float32)
    fp32, bf16 = pair(module.Actor, 5, 2, (64, 64), True, low, high)
    obs = torch.randn(16, 5)
    if "edac" in script:
        (a32, lp32), (a16, lp16) = fp32(obs, deterministic=True), bf16(obs, deterministic=True)
        assert lp16.dtype == torch.float32
        torch.testing.assert_close(lp16, lp32, atol=0.05, rtol=0.02)
    else:
        a32, a16 = fp32(obs), bf16(obs)
    assert a16.dtype == torch.float32
    torch.testing.assert_close(a16, a32, atol=0.02, rtol=0.02)


@pytest.mark.parametrize("script", ["edac_pretrain", "td3bc_cql_pretrain", "edac_bc_pretrain"])
def test_bf16_runs_end_to_end(script, minari_root, tmp_path):
    extra = ["--num-critics", "3"] if "edac" in script else []
    res = run_script(
        TINY
        + extra
        + flags(
            bf16=True, total_timesteps=150, pretrain_steps=100, eval_freq=50, runs_dir=tmp_path
        ),
        script=f"{script}.py",
    )
    assert res.returncode == 0, res.stderr
    rows = read_csv(run_dir_of(res.stdout))
    assert [r["phase"] for r in rows] == ["pretrain", "pretrain", "finetune"]
    assert all(np.isfinite(float(r["return_mean"])) for r in rows)


@pytest.mark.parametrize("script", ["edac_pretrain", "edac_bc_pretrain"])
def test_bf16_action_gradient_is_fp32_and_close(script):
    """EDAC's hand-written dQ/da under --bf16: fp32 values, close to the fp32 network's."""
    module = MODULES[script]
    fp32, bf16 = pair(module.Critic, 5, 2, (64, 64), True, 3)
    x = torch.cat([torch.randn(32, 5), torch.rand(32, 2) * 2 - 1], -1).expand(3, -1, -1)
    (q32, g32), (q16, g16) = fp32.members(x, 2), bf16.members(x, 2)
    assert q16.dtype == g16.dtype == torch.float32 and g16.shape == g32.shape == (3, 32, 2)
    assert not torch.equal(g16, g32)
    torch.testing.assert_close(g16, g32, atol=0.02, rtol=0.05)
    torch.testing.assert_close(q16, q32, atol=0.02, rtol=0.02)
