"""The paper's recipe as the defaults (issue 27): widths, LayerNorm without learnable scale and shift,
critic-pretraining MSE averaged over members, update order alpha -> actor -> critic, log alpha in
[-10, 10]; and the opt-in CQL remedy for EDAC, weighted by eq. 21 with its cap."""

import csv
import importlib
import json
import os
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import run_dir_of
from test_edac import TINY_EDAC, run_edac

SCRIPTS = ["td3bc_pretrain", "edac_pretrain", "td3bc_cql_pretrain", "edac_bc_pretrain"]
MODULES = {name: importlib.import_module(name) for name in SCRIPTS}
EDAC_MODULES = [MODULES["edac_pretrain"], MODULES["edac_bc_pretrain"]]
LOW, HIGH = -np.ones(1, np.float32), np.ones(1, np.float32)


def run_main(module, tmp_path, **overrides):
    args = module.Args(
        env_id="hopper-random", compile=False, final_episodes=0, runs_dir=str(tmp_path), eval_episodes=1, batch_size=32
    )
    if module in EDAC_MODULES:
        args = replace(args, num_critics=3)
    return module.main(replace(args, **overrides))


@pytest.mark.parametrize("script", SCRIPTS)
def test_hidden_dims_build_the_networks_they_name(script, minari_root, tmp_path):
    module = MODULES[script]
    run_dir = run_main(
        module, tmp_path, hidden_dims=(16, 24, 8), total_timesteps=20, pretrain_steps=10, eval_freq=20, save_model=True
    )
    ckpt = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=False)
    actor_widths = [w.shape[0] for k, w in ckpt["actor"].items() if k.endswith("weight") and w.dim() == 2]
    critic_widths = [w.shape[-1] for k, w in ckpt["critic"].items() if k.startswith("linears") and k.endswith("weight")]
    assert actor_widths[:-1] == [16, 24, 8]  # the last Linear is the output layer
    assert critic_widths == [16, 24, 8, 1]


@pytest.mark.parametrize("script", SCRIPTS)
def test_layernorm_has_no_learnable_scale_or_shift(script):
    """The paper's code: nn.LayerNorm(elementwise_affine=False); the only parameters are the Linear layers'."""
    module = MODULES[script]
    actor = module.Actor(3, 2, (8, 8), True, -np.ones(2, np.float32), np.ones(2, np.float32))
    critic = module.Critic(3, 2, (8, 8), True, num_critics=4)
    out = 4 if script.startswith("edac") else 2
    assert sum(p.numel() for p in actor.parameters()) == (3 * 8 + 8) + (8 * 8 + 8) + (8 * out + out)
    assert sum(p.numel() for p in critic.parameters()) == 4 * ((5 * 8 + 8) + (8 * 8 + 8) + (8 + 1))
    if script.startswith("edac"):
        x = torch.randn(4, 6, 8) * 3 + 1
        assert torch.allclose(module.layer_norm(x)[0], torch.nn.functional.layer_norm(x, (8,)), atol=1e-5)


@pytest.mark.parametrize("module", EDAC_MODULES)
def test_pretrain_mse_is_the_mean_over_members(module):
    """Members that predict constants c_i: the loss is mean_i mean_b (c_i - R_b)^2 (the paper's code)."""
    critic = module.Critic(2, 1, (4,), False, num_critics=3)
    with torch.no_grad():
        critic.linears[-1].weight.zero_()
        critic.linears[-1].bias.copy_(torch.tensor([1.0, 2.0, 4.0]).view(3, 1, 1))
    batch = {"obs": torch.randn(2, 2), "act": torch.zeros(2, 1), "soft_return": torch.tensor([0.0, 2.0])}
    by_hand = (((1 - 0) ** 2 + (1 - 2) ** 2) / 2 + ((2 - 0) ** 2 + 0) / 2 + ((4 - 0) ** 2 + (4 - 2) ** 2) / 2) / 3
    loss, info = module.pretrain_critic_loss(critic, None, None, batch, 0.1, 0.0, 0.99, 0.0, 0.0)
    assert info["losses/critic_mc"].item() == pytest.approx(by_hand)
    assert loss.item() == pytest.approx(by_hand)  # eta 0: the MSE alone


@pytest.mark.parametrize("module", EDAC_MODULES)
def test_update_order_alpha_actor_critic(module, minari_root, tmp_path, monkeypatch):
    """Soft BC: alpha, then the actor; EDAC: alpha -> actor -> critic, as the paper's code."""
    calls = []
    step = module.gradient_step

    def recording_step(optimizer, loss):
        first = optimizer.param_groups[0]["params"][0]
        calls.append({0: "alpha", 2: "actor", 3: "critic"}[first.dim()])
        step(optimizer, loss)

    monkeypatch.setattr(module, "gradient_step", recording_step)
    run_main(module, tmp_path, total_timesteps=4, pretrain_steps=2, eval_freq=4, actor_pretrain_fraction=0.5)
    assert calls == ["alpha", "actor", "critic", "alpha", "actor", "critic", "alpha", "actor", "critic"]


@pytest.mark.parametrize("module", EDAC_MODULES)
def test_log_alpha_is_kept_in_plus_minus_ten(module):
    actor = module.Actor(2, 1, (8,), False, LOW, HIGH)
    log_alpha = torch.tensor(0.0, requires_grad=True)
    optimizer = torch.optim.SGD([log_alpha], lr=1e6)
    alpha, info = module.temperature_step(actor, torch.randn(8, 2), log_alpha, optimizer, 1e3)  # entropy far below
    assert log_alpha.item() == 10.0 and alpha.item() == pytest.approx(np.exp(10.0))
    module.temperature_step(actor, torch.randn(8, 2), log_alpha, optimizer, -1e3)
    assert log_alpha.item() == -10.0


def test_defaults_are_the_papers_edac_on_every_task():
    """No CQL term, no anchor: `edac_pretrain.py` with no flags is Algorithm 2 followed by EDAC everywhere."""
    for module in EDAC_MODULES:
        for env in ("hopper-medium", "halfcheetah-medium", "walker2d-medium", "pen-human"):
            args = module.resolve_defaults(module.Args(env_id=env))
            assert args.pretrain_cql_weight == args.cql_weight == 0.0, (module.__name__, env)
    assert MODULES["edac_bc_pretrain"].Args().bc_weight == 1.0


def test_pretrain_cql_lowers_q_off_the_data():
    """--pretrain-cql-weight: training on the term makes the ensemble lower off the data than on it."""
    module = MODULES["edac_pretrain"]
    torch.manual_seed(0)
    actor = module.Actor(2, 1, (8,), False, LOW, HIGH)
    critic = module.Critic(2, 1, (32, 32), True, num_critics=3)
    obs, act = torch.randn(256, 2), torch.full((256, 1), 0.5)
    batch = {"obs": obs, "act": act, "soft_return": torch.ones(256)}
    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-3)
    for _ in range(300):
        loss, info = module.pretrain_critic_loss(critic, actor, None, batch, 0.1, 0.0, 0.99, 0.0, 1.0)
        module.gradient_step(optimizer, loss)
    assert "losses/critic_cql" in info
    with torch.no_grad():
        off_data = critic(obs, torch.full((256, 1), -0.9)).min(0).values.mean()
        on_data = critic(obs, act).min(0).values.mean()
    assert on_data.item() == pytest.approx(1.0, abs=0.2)
    assert off_data.item() < on_data.item() - 0.5


@pytest.mark.parametrize("module", EDAC_MODULES)
def test_cql_factor_is_eq21_capped(module):
    """A critic that outputs 0 with soft returns 3, 4 over 2 members: MSE (mean) 12.5, rms 3.54, CQL gap log 4 per
    member (all Q equal). eq. 21's factor |loss| / |CQL| = 12.5 / 2.77 = 4.5; the cap 2 |loss| / (N rms) = 3.54
    binds. With returns near 0 the loss is far below the cap, and the factor is eq. 21's."""
    actor = module.Actor(2, 1, (8,), False, LOW, HIGH)
    critic = module.Critic(2, 1, (4,), True, num_critics=2)
    for p in critic.parameters():
        torch.nn.init.zeros_(p)
    batch = {"obs": torch.randn(2, 2), "act": torch.zeros(2, 1), "soft_return": torch.tensor([3.0, 4.0])}
    _, info = module.pretrain_critic_loss(critic, actor, None, batch, 0.1, 0.0, 0.99, 0.0, 1.0)
    assert info["losses/critic_cql"].item() == pytest.approx(2 * np.log(4), rel=1e-5)
    assert info["losses/critic_cql_factor"].item() == pytest.approx(2 * 12.5 / (2 * 12.5**0.5), rel=1e-4)
    batch["soft_return"] = torch.tensor([0.01, -0.01])
    _, info = module.pretrain_critic_loss(critic, actor, None, batch, 0.1, 0.0, 0.99, 0.0, 1.0)
    assert info["losses/critic_cql_factor"].item() == pytest.approx(1e-4 / (2 * np.log(4)), rel=1e-3)


@pytest.mark.parametrize("module", EDAC_MODULES)
def test_finetune_cql_keeps_q_low_off_the_data(module):
    """--cql-weight: on terminal transitions (target = reward) the critics fitted without the term are as high off
    the data as on it; with it they are lower off the data."""
    obs, act = torch.randn(256, 2, generator=torch.Generator().manual_seed(1)), torch.full((256, 1), 0.5)
    batch = {"obs": obs, "act": act, "rew": torch.ones(256), "next_obs": obs, "term": torch.ones(256)}
    gaps = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        actor = module.Actor(2, 1, (8,), False, LOW, HIGH)
        critic = module.Critic(2, 1, (32, 32), True, num_critics=3)
        optimizer = torch.optim.Adam(critic.parameters(), lr=1e-3)
        for _ in range(300):
            loss, info = module.critic_loss(critic, actor, critic, batch, 0.1, 0.0, 0.99, weight)
            module.gradient_step(optimizer, loss)
        assert ("losses/critic_cql" in info) == (weight > 0)
        with torch.no_grad():
            on_data = critic(obs, act).min(0).values.mean().item()
            gaps[weight] = on_data - critic(obs, torch.full((256, 1), -0.9)).min(0).values.mean().item()
        assert on_data == pytest.approx(1.0, abs=0.2)
    assert abs(gaps[0.0]) < 0.3 and gaps[1.0] > 0.5, gaps


def test_cql_end_to_end_the_factor_never_exceeds_eq21_and_errors(minari_root, tmp_path):
    res = run_edac(TINY_EDAC + ["--total-timesteps", "40", "--pretrain-steps", "30", "--eval-freq", "40",
                                "--log-freq", "1", "--pretrain-cql-weight", "1", "--cql-weight", "0.5",
                                "--runs-dir", str(tmp_path)])  # fmt: skip
    assert res.returncode == 0, res.stderr
    run_dir = run_dir_of(res.stdout)
    assert json.load(open(os.path.join(run_dir, "config.json")))["cql_weight"] == 0.5
    values = {}
    for r in csv.DictReader(open(os.path.join(run_dir, "losses.csv"))):
        values.setdefault((int(r["update"]), r["phase"]), {})[r["name"]] = float(r["value"])
    pairs = [(v["losses/critic_cql_factor"], abs(v.get("losses/critic_mc", v.get("losses/critic_td"))) / abs(v["losses/critic_cql"]))
             for v in values.values() if "losses/critic_cql_factor" in v]  # fmt: skip
    assert len(pairs) == 25  # 15 critic-pretraining updates, 10 EDAC
    assert all(f <= eq21 * (1 + 1e-3) for f, eq21 in pairs)
    assert pairs[0][0] < 0.5 * pairs[0][1]  # at the start the cap binds
    res = run_edac(TINY_EDAC + ["--cql-weight", "-1"])
    assert res.returncode == 1 and "--cql-weight must be >= 0 (got -1.0)" in res.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_run_from_an_older_version_is_refused_with_the_fix(script, minari_root, tmp_path):
    module = MODULES[script]
    run_dir = run_main(
        module, tmp_path, hidden_dims=(8, 8), total_timesteps=20, pretrain_steps=10, eval_freq=20, save_model=True
    )
    path = os.path.join(run_dir, "config.json")
    config = json.load(open(path))
    del config["hidden_dims"]
    json.dump(config, open(path, "w"))
    with pytest.raises(
        ValueError, match=f"its config.json lacks hidden_dims: an older version of {script}.py wrote it"
    ):
        module.main(module.Args(resume=run_dir))
