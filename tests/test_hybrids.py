"""td3bc_cql_pretrain.py and edac_bc_pretrain.py (Appendix G): eq. 21, the CQL and BC terms, end to end."""

import importlib
import json
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import flags, read_csv, run_dir_of, run_script

import edac_bc_pretrain as EB
import td3bc_cql_pretrain as TC

COMBINERS = [
    importlib.import_module(m).combine_losses
    for m in ("td3bc_pretrain", "td3bc_cql_pretrain", "edac_bc_pretrain")
]


@pytest.mark.parametrize("combine", COMBINERS)
@pytest.mark.parametrize("k_primary,k_aux", [(3.0, 2.0), (-3.0, 2.0), (3.0, -2.0), (-3.0, -2.0)])
def test_combination_keeps_each_terms_gradient_direction(combine, k_primary, k_aux):
    # primary = k_primary * p is negative when k_primary < 0 (as the SAC actor loss usually is)
    p = torch.tensor(2.0, requires_grad=True)
    q = torch.tensor(5.0, requires_grad=True)
    primary, aux = k_primary * p, k_aux * q
    loss = combine(primary, aux, 0.5)
    loss.backward()
    assert np.sign(p.grad.item()) == np.sign(k_primary)  # same direction as d primary / dp
    assert np.sign(q.grad.item()) == np.sign(k_aux)
    torch.testing.assert_close(
        p.grad, torch.tensor(k_primary / abs(k_primary * 2.0))
    )  # scaled by 1 / |primary|
    torch.testing.assert_close(q.grad, torch.tensor(0.5 * k_aux / abs(k_aux * 5.0)))
    torch.testing.assert_close(
        loss.detach(), torch.tensor(np.sign(k_primary) + 0.5 * np.sign(k_aux), dtype=torch.float32)
    )


class SumCritic(nn.Module):
    """Q_i(s, a) = sum(a) for every member."""

    num_critics = 2

    def forward(self, obs, act, n=None):
        q = act.sum(-1)
        return q.unsqueeze(0).expand(n or self.num_critics, *q.shape)


def test_cql_term_in_finetuning_on_known_values():
    # a zero-width action box: every random action is 0, so logsumexp_j Q(s, a_j) = log(10)
    actor = TC.Actor(3, 2, (4,), False, np.zeros(2, np.float32), np.zeros(2, np.float32))
    critic = SumCritic()
    act = torch.tensor([[1.0, 1.0], [0.0, -1.0], [0.5, 0.0]])
    batch = {
        "obs": torch.zeros(3, 3),
        "act": act,
        "rew": torch.zeros(3),
        "next_obs": torch.zeros(3, 3),
        "term": torch.zeros(3),
        "mc_return": torch.zeros(3),
    }
    loss, info = TC.critic_loss(critic, actor, critic, batch, 0.99, False, 10.0)
    q_data = act.sum(1)
    expected = 2 * (np.log(10.0) - q_data).mean()  # summed over both critics
    torch.testing.assert_close(info["losses/critic_cql"], expected)
    td = info["losses/critic_td"]
    torch.testing.assert_close(loss, td / td.abs() + 10.0 * expected / expected.abs())


def test_bc_term_pulls_the_actor_to_the_data():
    torch.manual_seed(0)
    actor = EB.Actor(3, 2, (32,), True, np.full(2, -1, np.float32), np.ones(2, np.float32))
    obs, act = torch.randn(128, 3), torch.full((128, 2), 0.7)
    flat = SumCritic()
    flat.forward = lambda o, a, n=None: torch.zeros(2, o.shape[0])  # no Q signal
    opt = torch.optim.Adam(actor.parameters(), 3e-3)
    first = None
    for _ in range(150):
        loss, info = EB.actor_loss(actor, flat, obs, act, torch.tensor(0.0), bc_weight=1.0)
        first = first if first is not None else info["losses/actor_bc"].item()
        opt.zero_grad(), loss.backward(), opt.step()
    assert info["losses/actor_bc"].item() < 0.2 * first
    # bc_weight 0: the loss is the SAC loss direction alone
    loss, info = EB.actor_loss(actor, flat, obs, act, torch.tensor(0.0), bc_weight=0.0)
    assert abs(loss.item()) <= 1.0 + 1e-6


def test_table3_defaults():
    a = TC.resolve_defaults(TC.Args(env_id="pen-human"))
    assert (a.alpha, a.cql_weight, a.pretrain_cql_weight, a.total_timesteps, a.pretrain_steps) == (
        1.0,
        1.0,
        1.0,
        300_000,
        200_000,
    )
    a = TC.resolve_defaults(TC.Args(env_id="hammer-cloned", cql_weight=3.0))
    assert (a.alpha, a.cql_weight, a.pretrain_cql_weight, a.score_window) == (
        0.1,
        3.0,
        3.0,
        (200_000, 300_000),
    )
    b = EB.resolve_defaults(EB.Args(env_id="pen-cloned"))
    assert (b.num_critics, b.eta, b.bc_weight) == (20, 10.0, 1.0)
    b = EB.resolve_defaults(EB.Args(env_id="relocate-human"))
    assert (b.num_critics, b.eta) == (50, 200.0)


@pytest.fixture(scope="module")
def pen_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("pen"))
    res = run_script(
        ["pen", "--steps", "300"],
        script="tools/build_random.py",
        env_extra={"MINARI_DATASETS_PATH": root},
    )
    assert res.returncode == 0, res.stderr
    return root


SMALL = flags(
    batch_size=32,
    hidden_dims=(32, 32),
    eval_episodes=2,
    compile=False,
    final_episodes=0,
    total_timesteps=200,
    pretrain_steps=100,
    eval_freq=100,
    log_freq=50,
)


@pytest.mark.parametrize(
    "script,extra",
    [("td3bc_cql_pretrain.py", []), ("edac_bc_pretrain.py", ["--num-critics", "3"])],
)
@pytest.mark.parametrize("env", ["pen-random", "hopper-random"])
def test_hybrids_end_to_end(minari_root, pen_root, tmp_path, script, extra, env):
    env_extra = {"MINARI_DATASETS_PATH": pen_root} if env == "pen-random" else None
    protocol = flags(eval_protocol="paper", score_window=(100, 200)) if env == "pen-random" else []
    res = run_script(
        SMALL + extra + protocol + flags(env_id=env, runs_dir=tmp_path),
        script=script,
        env_extra=env_extra,
    )
    assert res.returncode == 0, res.stderr
    run_dir = run_dir_of(res.stdout)
    rows = read_csv(run_dir)
    assert [r["phase"] for r in rows] == ["pretrain", "finetune"]
    assert all(np.isfinite(float(r["normalized_mean"])) for r in rows)
    cfg = json.load(open(os.path.join(run_dir, "config.json")))
    if script.startswith("td3bc"):
        assert (
            cfg["cql_weight"]
            == (1.0 if env == "pen-random" else 10.0)
            == cfg["pretrain_cql_weight"]
        )
        assert (
            "TD3+BC+CQL: alpha" in res.stdout
            and "CQL 10.0 (pretraining 10.0)" in res.stdout
            or env == "pen-random"
        )
    else:
        assert cfg["bc_weight"] == 1.0 and "BC 1.0;" in res.stdout
    if env == "pen-random":
        assert (
            "evaluation (paper protocol): episodes of at most 100 steps; reference scores random -162.09"
            in res.stdout
            and "window score, updates 100-200" in res.stdout
        )


def test_hybrid_bad_weights(minari_root):
    res = run_script(flags(cql_weight=-1, env_id="hopper-random"), script="td3bc_cql_pretrain.py")
    assert res.returncode == 1 and "--cql-weight must be >= 0" in res.stderr
    res = run_script(flags(bc_weight=-1, env_id="hopper-random"), script="edac_bc_pretrain.py")
    assert res.returncode == 1 and "--bc-weight must be >= 0" in res.stderr
