"""Issue 15's flags: the paper-code recipe one flag away (widths, LayerNorm affine, pretraining MSE
weighting, update order, log-alpha clip) and the decaying actor anchor after the switch."""

import csv
import importlib
import json
import os
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import run_dir_of
from test_edac import TINY_EDAC, run_edac

SCRIPTS = ["td3bc_pretrain", "edac_pretrain", "td3bc_cql_pretrain", "edac_bc_pretrain"]
MODULES = {name: importlib.import_module(name) for name in SCRIPTS}
EDAC_MODULES = [MODULES["edac_pretrain"], MODULES["edac_bc_pretrain"]]


def run_main(module, tmp_path, **overrides):
    args = module.Args(env_id="hopper-random", compile=False, cuda=False, runs_dir=str(tmp_path), eval_episodes=1, batch_size=32)
    if module in EDAC_MODULES:
        args = replace(args, num_critics=3, entropy_samples=2)
    return module.main(replace(args, **overrides))


@pytest.mark.parametrize("script", SCRIPTS)
def test_width_flags_build_the_networks_they_name(script, minari_root, tmp_path):
    module = MODULES[script]
    run_dir = run_main(module, tmp_path, actor_hidden_dims=(16, 24, 8), critic_hidden_dims=(12, 20), total_timesteps=20,
                       pretrain_steps=10, eval_freq=20, save_model=True)  # fmt: skip
    ckpt = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=False)
    actor_widths = [w.shape[0] for k, w in ckpt["actor"].items() if k.endswith("weight") and w.dim() == 2]
    critic_widths = [w.shape[-1] for k, w in ckpt["critic"].items() if k.startswith("linears") and k.endswith("weight")]
    assert actor_widths[:-1] == [16, 24, 8]  # the last Linear is the output layer
    assert critic_widths == [12, 20, 1]


@pytest.mark.parametrize("script", SCRIPTS)
def test_old_runs_with_one_width_flag_resume(script, minari_root, tmp_path):
    """A run written when --hidden-dims set both widths, before newer flags existed, resumes: one width for both, the
    newer flags at their defaults."""
    import json

    module = MODULES[script]
    run_dir = run_main(module, tmp_path, actor_hidden_dims=(8, 8), critic_hidden_dims=(8, 8), total_timesteps=20,
                       pretrain_steps=10, eval_freq=20, save_model=True)  # fmt: skip
    path = os.path.join(run_dir, "config.json")
    written = json.load(open(path))
    # tasks whose defaults differ for the newer flags (EDAC's anchor on halfcheetah, its CQL terms elsewhere)
    for env_id in ("halfcheetah-random", "hopper-random"):
        config = dict(written, env_id=env_id)
        config["hidden_dims"] = config.pop("actor_hidden_dims")
        del config["critic_hidden_dims"]
        for added_since in ("pretrain_max_steps", "pretrain_cql_weight", "cql_weight", "pretrain_tol", "anchor_weight", "anchor_steps", "cql_cap"):
            config.pop(added_since, None)
        json.dump(config, open(path, "w"))
        args = module.load_resume_args(run_dir)
        assert args.actor_hidden_dims == args.critic_hidden_dims == (8, 8)
        fresh = module.resolve_defaults(module.Args(env_id=args.env_id, total_timesteps=20, pretrain_steps=10))
        assert args.pretrain_max_steps == 20 and args.pretrain_tol == 0.01
        edac, held = module is MODULES["edac_pretrain"], env_id.startswith("halfcheetah")
        if module in EDAC_MODULES:  # an EDAC run from before the CQL flags trained without CQL, and goes on so
            assert args.pretrain_cql_weight == args.cql_weight == 0.0 and fresh.pretrain_cql_weight == (edac and not held)
            assert args.anchor_weight == 0.0 and fresh.anchor_weight == (edac and held)  # nor with an anchor
            assert args.cql_cap is False and fresh.cql_cap is True  # nor with the --cql-cap
        else:
            assert args.pretrain_cql_weight == fresh.pretrain_cql_weight
        module.check_args(args)


@pytest.mark.parametrize("module", EDAC_MODULES)
def test_layernorm_affine_off_has_no_learnable_norm(module):
    low, high = -np.ones(2, np.float32), np.ones(2, np.float32)
    actor = module.Actor(3, 2, (8, 8), True, low, high, affine=False)
    critic = module.Critic(3, 2, (8, 8), True, num_critics=4, affine=False)
    assert sum(p.numel() for p in actor.parameters()) == (3 * 8 + 8) + (8 * 8 + 8) + (8 * 4 + 4)
    assert sum(p.numel() for p in critic.parameters()) == 4 * ((5 * 8 + 8) + (8 * 8 + 8) + (8 + 1))
    x = torch.randn(4, 6, 8) * 3 + 1
    out = critic.norms[0](x, 4)
    assert torch.allclose(out, torch.nn.functional.layer_norm(x, (8,)), atol=1e-5)  # plain normalization
    assert len(module.Critic(3, 2, (8, 8), True, num_critics=4).norms[0].weight.shape) == 3  # affine by default


@pytest.mark.parametrize("module", EDAC_MODULES)
def test_pretrain_mse_weighting_by_hand(module):
    """Members that predict constants c_i: sum = sum_i mean_b (c_i - R_b)^2; mean is that over N."""
    critic = module.Critic(2, 1, (4,), False, num_critics=3)
    with torch.no_grad():
        critic.linears[-1].weight.zero_()
        critic.linears[-1].bias.copy_(torch.tensor([1.0, 2.0, 4.0]).view(3, 1, 1))
    batch = {"obs": torch.randn(2, 2), "act": torch.zeros(2, 1), "soft_return": torch.tensor([0.0, 2.0])}
    by_hand = ((1 - 0) ** 2 + (1 - 2) ** 2) / 2 + ((2 - 0) ** 2 + 0) / 2 + ((4 - 0) ** 2 + (4 - 2) ** 2) / 2  # 1 + 2 + 10
    for mode, expected in (("sum", by_hand), ("mean", by_hand / 3)):
        args = SimpleNamespace(td_lambda=0.0, pretrain_mse=mode, gamma=0.99, pretrain_cql_weight=0.0)
        loss, info = module.pretrain_critic_loss(critic, None, None, batch, 0.1, 0.0, args)
        assert info["losses/critic_mc"].item() == pytest.approx(expected)
        assert loss.item() == pytest.approx(expected)  # eta 0: the MSE alone


@pytest.mark.parametrize("module", EDAC_MODULES)
def test_anchor_schedule(module):
    args = SimpleNamespace(anchor_weight=0.5, anchor_steps=100)
    assert [module.anchor_weight(args, k) for k in (0, 50, 100, 1000)] == [0.5, 0.25, 0.0, 0.0]
    assert module.anchor_weight(SimpleNamespace(anchor_weight=0.0, anchor_steps=100), 0) == 0.0
    constant = SimpleNamespace(anchor_weight=0.5, anchor_steps=0)  # --anchor-steps 0: it never decays
    assert [module.anchor_weight(constant, k) for k in (0, 50, 10**6)] == [0.5, 0.5, 0.5]


def test_anchor_defaults_per_task_and_script():
    """edac_pretrain.py holds the actor on halfcheetah (constant, weight 1, no CQL term in either phase) and nowhere else;
    EDAC+BC's own BC term holds its actor, so it adds none; a set value wins."""
    E, EB = MODULES["edac_pretrain"], MODULES["edac_bc_pretrain"]

    def pick(module, env, **kw):
        args = module.resolve_defaults(module.Args(env_id=env, **kw))
        return args.anchor_weight, args.anchor_steps, args.pretrain_cql_weight, args.cql_weight

    assert pick(E, "halfcheetah-medium") == pick(E, "local/halfcheetah/medium-v0") == (1.0, 0, 0.0, 0.0)
    assert pick(E, "hopper-medium") == pick(E, "walker2d-medium") == pick(E, "pen-human") == (0.0, 5000, 1.0, 1.0)
    assert pick(EB, "halfcheetah-medium") == pick(EB, "hopper-medium") == (0.0, 5000, 0.0, 0.0)
    assert pick(E, "halfcheetah-medium", anchor_weight=0.0, cql_weight=1.0) == (0.0, 0, 0.0, 1.0)
    assert pick(E, "halfcheetah-medium", pretrain_cql_weight=1.0) == (1.0, 0, 1.0, 0.0)
    assert pick(E, "hopper-medium", anchor_weight=0.3, anchor_steps=0) == (0.3, 0, 1.0, 1.0)


def test_anchor_off_is_exactly_the_sac_loss_and_on_pulls_towards_the_data():
    E = MODULES["edac_pretrain"]
    torch.manual_seed(0)
    low, high = -np.ones(2, np.float32), np.ones(2, np.float32)
    actor, critic = E.Actor(3, 2, (16,), True, low, high), E.Critic(3, 2, (16,), True, num_critics=2)
    obs, act = torch.randn(64, 3), torch.full((64, 2), 0.5)
    torch.manual_seed(1)
    loss, _, info = E.finetune_actor_loss(actor, critic, obs, act, torch.tensor(0.2), torch.tensor(0.0))
    assert torch.equal(loss, info["losses/actor"])
    distances = {}
    for weight in (0.0, 10.0):
        a = E.Actor(3, 2, (16,), True, low, high)
        a.load_state_dict(actor.state_dict())
        optimizer = torch.optim.Adam(a.parameters(), lr=1e-2)
        for _ in range(50):
            loss, _, _ = E.finetune_actor_loss(a, critic, obs, act, torch.tensor(0.2), torch.tensor(weight))
            E.gradient_step(optimizer, loss)
        distances[weight] = (a(obs, deterministic=True)[0] - act).square().sum(-1).mean().item()
    assert distances[10.0] < 0.5 * distances[0.0]


def test_anchor_holds_the_mean_not_the_spread():
    """edac_pretrain.py's anchor is BC of the deterministic action: its gradient reaches the mean's outputs and not
    the log-std's (BC of the sampled action would shrink the spread, and the temperature would run away)."""
    E = MODULES["edac_pretrain"]
    torch.manual_seed(0)
    low, high = -np.ones(2, np.float32), np.ones(2, np.float32)
    actor, critic = E.Actor(3, 2, (16,), True, low, high), E.Critic(3, 2, (16,), True, num_critics=2)
    obs, act = torch.randn(64, 3), torch.full((64, 2), 0.5)
    grads = {}
    for weight in (0.0, 10.0):
        actor.zero_grad()
        torch.manual_seed(1)  # the same sampled actions for both weights
        E.finetune_actor_loss(actor, critic, obs, act, torch.tensor(0.2), torch.tensor(weight))[0].backward()
        grads[weight] = actor.net[-1].bias.grad.clone()  # output layer: 2 means, then 2 log-stds
    anchor_grad = grads[10.0] - grads[0.0]
    assert anchor_grad[:2].abs().min() > 1e-3
    assert anchor_grad[2:].abs().max() < 1e-6


@pytest.mark.parametrize("module", EDAC_MODULES)
@pytest.mark.parametrize("alpha_first", [False, True])
def test_update_order(module, alpha_first, minari_root, tmp_path, monkeypatch):
    """Default actor -> alpha -> critic; --alpha-first (the paper's code) alpha -> actor -> critic."""
    calls = []
    step, temperature = module.gradient_step, module.temperature_step

    def recording_step(optimizer, loss):
        first = optimizer.param_groups[0]["params"][0]
        calls.append({0: "alpha", 2: "actor", 3: "critic"}[first.dim()])
        step(optimizer, loss)

    def recording_temperature(*a, **kw):
        calls.append("temperature")
        return temperature(*a, **kw)

    monkeypatch.setattr(module, "gradient_step", recording_step)
    monkeypatch.setattr(module, "temperature_step", recording_temperature)
    run_main(module, tmp_path, total_timesteps=2, pretrain_steps=0, eval_freq=2, alpha_first=alpha_first)
    one_update = ["temperature", "alpha", "actor", "critic"] if alpha_first else ["actor", "temperature", "alpha", "critic"]
    assert calls == one_update * 2


@pytest.mark.parametrize("module", EDAC_MODULES)
def test_log_alpha_clip(module):
    log_alpha = torch.tensor(0.0, requires_grad=True)
    optimizer = torch.optim.SGD([log_alpha], lr=100.0)
    log_prob = torch.full((8,), 50.0)  # entropy far below the target: alpha rises
    module.temperature_step(log_alpha, log_prob, -2.0, optimizer, 1.5)
    assert log_alpha.item() == 1.5
    module.temperature_step(log_alpha, log_prob, -2.0, optimizer, None)
    assert log_alpha.item() > 1000


def test_anchor_end_to_end_logs_its_decay_and_errors(minari_root, tmp_path):
    res = run_edac(TINY_EDAC + ["--total-timesteps", "60", "--pretrain-steps", "20", "--eval-freq", "60", "--log-freq", "10",
                                "--anchor-weight", "2.0", "--anchor-steps", "20", "--alpha-first", "--log-alpha-clip", "5",
                                "--pretrain-mse", "mean", "--no-layernorm-affine", "--runs-dir", str(tmp_path)])  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(open(os.path.join(run_dir_of(res.stdout), "losses.csv"))))
    weights = {int(r["update"]): float(r["value"]) for r in rows if r["name"] == "charts/anchor_weight"}
    # the last actor update of each 10-update interval: 9, 19 (decayed to 0 at 20), then 0
    assert weights == {30: pytest.approx(2.0 * (1 - 9 / 20)), 40: pytest.approx(2.0 * (1 - 19 / 20)), 50: 0.0, 60: 0.0}
    res = run_edac(TINY_EDAC + ["--anchor-weight", "-1", "--anchor-steps", "-1", "--log-alpha-clip", "0"])
    assert res.returncode == 1
    for message in ("--anchor-weight must be >= 0 (got -1.0)", "--anchor-steps must be >= 0, 0 = no decay (got -1)", "--log-alpha-clip must be > 0"):
        assert message in res.stderr


@pytest.mark.parametrize("module", EDAC_MODULES)
def test_pretrain_cql_lowers_q_off_the_data(module):
    """--pretrain-cql-weight: the penalty is the logsumexp over random actions minus Q on the data, and training on it
    makes the ensemble lower off the data than on it (the pessimism EDAC's critic lacks at the switch)."""
    torch.manual_seed(0)
    low, high = -np.ones(1, np.float32), np.ones(1, np.float32)
    actor = module.Actor(2, 1, (8,), False, low, high)
    critic = module.Critic(2, 1, (32, 32), True, num_critics=3)
    obs, act = torch.randn(256, 2), torch.full((256, 1), 0.5)
    batch = {"obs": obs, "act": act, "soft_return": torch.ones(256)}
    args = SimpleNamespace(
        td_lambda=0.0, pretrain_mse="sum", gamma=0.99, pretrain_cql_weight=1.0, cql_n_actions=8, cql_temperature=1.0, cql_cap=False
    )
    q_data = critic(obs, act)
    gap = module.cql_penalty(critic, obs, q_data, torch.tensor(low), torch.tensor(high), 8, 1.0)
    assert gap.shape == (3, 256) and bool((gap > -q_data.abs().max() - 10).all())
    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-3)
    for _ in range(300):
        loss, info = module.pretrain_critic_loss(critic, actor, None, batch, 0.1, 0.0, args)
        module.gradient_step(optimizer, loss)
    assert "losses/critic_cql" in info
    with torch.no_grad():
        off_data = critic(obs, torch.full((256, 1), -0.9)).min(0).values.mean()
        on_data = critic(obs, act).min(0).values.mean()
    assert on_data.item() == pytest.approx(1.0, abs=0.2)
    assert off_data.item() < on_data.item() - 0.5


@pytest.mark.parametrize("module", EDAC_MODULES)
@pytest.mark.parametrize("mse", ["sum", "mean"])
def test_cql_cap_bounds_the_factor(module, mse):
    """--cql-cap: a critic that outputs 0 with soft returns of 3, 4 over 2 members: rms 3.54, MSE sum 2 x 12.5 (mean
    12.5), CQL gap 0 + log 4 per member (all Q equal). eq. 21's factor |loss| / |CQL| = 25 / 2.77 = 9.0 (mean 4.5);
    the cap 2 |loss| / (N rms) = 7.07 (mean 3.54) binds, and the gradient on Q(s, a) then matches the MSE's RMS one."""
    low, high = -np.ones(1, np.float32), np.ones(1, np.float32)
    actor = module.Actor(2, 1, (8,), False, low, high)
    critic = module.Critic(2, 1, (4,), True, num_critics=2)
    for p in critic.parameters():
        torch.nn.init.zeros_(p)
    obs, act = torch.randn(2, 2), torch.zeros(2, 1)
    batch = {"obs": obs, "act": act, "soft_return": torch.tensor([3.0, 4.0])}
    factors = {}
    for cap in (False, True):
        args = SimpleNamespace(
            td_lambda=0.0, pretrain_mse=mse, gamma=0.99, pretrain_cql_weight=1.0, cql_n_actions=4, cql_temperature=1.0, cql_cap=cap
        )
        loss, info = module.pretrain_critic_loss(critic, actor, None, batch, 0.1, 0.0, args)
        assert info["losses/critic_cql"].item() == pytest.approx(2 * np.log(4), rel=1e-5)
        factors[cap] = info["losses/critic_cql_factor"].item()
    scale = 1.0 if mse == "sum" else 0.5
    assert factors[False] == pytest.approx(scale * 25 / (2 * np.log(4)), rel=1e-4)
    assert factors[True] == pytest.approx(scale * 2 * 25 / (2 * 12.5**0.5), rel=1e-4)
    # a loss far below the cap (rms << |CQL|) is left as eq. 21 has it
    batch["soft_return"] = torch.tensor([0.01, -0.01])
    args.cql_cap = True
    _, info = module.pretrain_critic_loss(critic, actor, None, batch, 0.1, 0.0, args)
    assert info["losses/critic_cql_factor"].item() == pytest.approx(scale * 2 * 1e-4 / (2 * np.log(4)), rel=1e-3)


def test_cql_pretraining_default_per_script():
    """The fix is EDAC's default; EDAC+BC's BC term holds its actor, so there it is off; a set value wins."""
    E, EB = MODULES["edac_pretrain"], MODULES["edac_bc_pretrain"]
    assert E.resolve_defaults(E.Args(env_id="hopper-medium")).pretrain_cql_weight == 1.0
    assert EB.resolve_defaults(EB.Args(env_id="hopper-medium")).pretrain_cql_weight == 0.0
    assert E.resolve_defaults(E.Args(env_id="hopper-medium", pretrain_cql_weight=0.0)).pretrain_cql_weight == 0.0
    assert E.Args().cql_n_actions == 4
    # --cql-weight (finetuning) follows --pretrain-cql-weight unless set: one flag gives the paper's EDAC
    assert E.resolve_defaults(E.Args(env_id="hopper-medium")).cql_weight == 1.0
    assert EB.resolve_defaults(EB.Args(env_id="hopper-medium")).cql_weight == 0.0
    assert E.resolve_defaults(E.Args(env_id="hopper-medium", pretrain_cql_weight=0.0)).cql_weight == 0.0
    assert E.resolve_defaults(E.Args(env_id="hopper-medium", pretrain_cql_weight=0.5)).cql_weight == 0.5
    assert E.resolve_defaults(E.Args(env_id="hopper-medium", cql_weight=0.0)).pretrain_cql_weight == 1.0
    assert EB.resolve_defaults(EB.Args(env_id="hopper-medium", pretrain_cql_weight=2.0)).cql_weight == 2.0


@pytest.mark.parametrize("module", EDAC_MODULES)
def test_finetune_cql_keeps_q_low_off_the_data(module):
    """--cql-weight: the same penalty in EDAC's critic loss after the switch. On terminal transitions (target = reward)
    the critics fitted without it are as high off the data as on it; with it they are lower off the data."""
    low, high = -np.ones(1, np.float32), np.ones(1, np.float32)
    obs, act = torch.randn(256, 2, generator=torch.Generator().manual_seed(1)), torch.full((256, 1), 0.5)
    batch = {"obs": obs, "act": act, "rew": torch.ones(256), "next_obs": obs, "term": torch.ones(256)}
    gaps = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        actor = module.Actor(2, 1, (8,), False, low, high)
        critic = module.Critic(2, 1, (32, 32), True, num_critics=3)
        args = SimpleNamespace(gamma=0.99, cql_weight=weight, cql_n_actions=8, cql_temperature=1.0, cql_cap=False)
        optimizer = torch.optim.Adam(critic.parameters(), lr=1e-3)
        for _ in range(300):
            loss, info = module.finetune_critic_loss(critic, actor, critic, batch, 0.1, 0.0, args)
            module.gradient_step(optimizer, loss)
        assert ("losses/critic_cql" in info) == (weight > 0)
        with torch.no_grad():
            on_data = critic(obs, act).min(0).values.mean().item()
            gaps[weight] = on_data - critic(obs, torch.full((256, 1), -0.9)).min(0).values.mean().item()
        assert on_data == pytest.approx(1.0, abs=0.2)
    assert abs(gaps[0.0]) < 0.3 and gaps[1.0] > 0.5, gaps


def test_cql_cap_end_to_end(minari_root, tmp_path):
    """--cql-cap: the logged factor never exceeds eq. 21's |loss| / |CQL| of the same update, and falls below it at
    the start of critic pretraining (Q ~ 0, returns far from it, CQL gap near 0); without the flag it equals it."""
    factors = {}
    for cap in (False, True):
        res = run_edac(TINY_EDAC + ["--total-timesteps", "40", "--pretrain-steps", "30", "--eval-freq", "40", "--log-freq", "1",
                                    "--runs-dir", str(tmp_path / str(cap)), "--cql-cap" if cap else "--no-cql-cap"])  # fmt: skip
        assert res.returncode == 0, res.stderr
        run_dir = run_dir_of(res.stdout)
        assert json.load(open(os.path.join(run_dir, "config.json")))["cql_cap"] is cap
        values = {}
        for r in csv.DictReader(open(os.path.join(run_dir, "losses.csv"))):
            values.setdefault((int(r["update"]), r["phase"]), {})[r["name"]] = float(r["value"])
        pairs = [(v["losses/critic_cql_factor"], abs(v.get("losses/critic_mc", v.get("losses/critic_td"))) / abs(v["losses/critic_cql"]))
                 for v in values.values() if "losses/critic_cql_factor" in v]  # fmt: skip
        assert len(pairs) == 25  # 15 critic-pretraining updates, 10 EDAC
        factors[cap] = pairs
    assert all(f == pytest.approx(eq21, rel=1e-3) for f, eq21 in factors[False])
    assert all(f <= eq21 * (1 + 1e-3) for f, eq21 in factors[True])
    assert factors[True][0][0] < 0.5 * factors[True][0][1]


def test_finetune_cql_end_to_end_and_errors(minari_root, tmp_path):
    res = run_edac(TINY_EDAC + ["--total-timesteps", "40", "--pretrain-steps", "20", "--eval-freq", "40", "--log-freq", "10",
                                "--cql-weight", "0.5", "--runs-dir", str(tmp_path)])  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(open(os.path.join(run_dir_of(res.stdout), "losses.csv"))))
    assert {int(r["update"]) for r in rows if r["name"] == "losses/critic_cql" and r["phase"] == "finetune"} == {30, 40}
    status = [line for line in res.stdout.splitlines() if line.startswith("[finetune ")]
    assert status and all("alpha_loss" in line and " alpha " not in line for line in status)  # the loss, named as such
    res = run_edac(TINY_EDAC + ["--cql-weight", "-1"])
    assert res.returncode == 1 and "--cql-weight must be >= 0 (got -1.0)" in res.stderr
