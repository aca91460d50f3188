"""edac_pretrain.py: soft returns, tanh-Gaussian actor, ensemble diversity, end to end."""

import csv
import importlib
import json
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import TINY, flags, run_dir_of, run_script

import edac_pretrain as E
import td3bc_pretrain as T

TINY_EDAC = [*TINY, "--num-critics", "3"]  # the tiny setup plus a small ensemble


def run_edac(args, **kw):
    return run_script(args, script="edac_pretrain.py", **kw)


# ---------------------------------------------------------------------------------------------
# soft returns
# ---------------------------------------------------------------------------------------------
def test_soft_returns_terminated_bonus_starts_at_next_step():
    r, h = [1.0, 2.0, 3.0], [10.0, 20.0, 30.0]
    R = E.soft_mc_returns(r, h, [0, 0, 1], [0, 0, 0], gamma=0.5, alpha=0.1)
    # R2 = 3; R1 = 2 + .5 (.1 * 30 + 3) = 5; R0 = 1 + .5 (.1 * 20 + 5) = 4.5  (H(s_0) never counts)
    np.testing.assert_allclose(R, [4.5, 5.0, 3.0])


def test_soft_returns_truncated_tails():
    r, h = [1.0, 2.0], [10.0, 20.0]
    R = E.soft_mc_returns(r, h, [0, 0], [0, 1], gamma=0.5, alpha=0.1, tail="geometric")
    # R1 = 2 + .5 / .5 * (2 + .1 * 20) = 6; R0 = 1 + .5 (.1 * 20 + 6) = 5
    np.testing.assert_allclose(R, [5.0, 6.0])
    R = E.soft_mc_returns(r, h, [0, 0], [0, 1], gamma=0.5, alpha=0.1, tail="none")
    np.testing.assert_allclose(R, [1 + 0.5 * (2 + 2), 2.0])


def test_soft_returns_several_episodes_do_not_leak():
    r, h = [1.0, 1.0, 5.0, 5.0], [1.0, 2.0, 100.0, 200.0]
    R = E.soft_mc_returns(r, h, [0, 1, 0, 1], [0, 0, 0, 0], gamma=0.9, alpha=1.0)
    # episode 1 must not see episode 2's entropy 100 at its end
    np.testing.assert_allclose(R, [1 + 0.9 * (2 + 1), 1.0, 5 + 0.9 * (200 + 5), 5.0])


def test_soft_returns_match_the_plain_reversed_loop():
    rng = np.random.default_rng(1)
    n, gamma, alpha = 3000, 0.99, 0.3
    r, h = rng.normal(size=n), rng.normal(size=n)
    ends = rng.random(n) < 0.01
    term = ends & (rng.random(n) < 0.5)
    trunc = ends & ~term
    expected, nxt = np.zeros(n), 0.0
    for t in reversed(range(n)):  # the recursion of the docstring, one step at a time
        if term[t]:
            nxt = r[t]
        elif trunc[t] or t == n - 1:
            nxt = r[t] + gamma / (1 - gamma) * (r[t] + alpha * h[t])
        else:
            nxt = r[t] + gamma * (alpha * h[t + 1] + nxt)
        expected[t] = nxt
    np.testing.assert_allclose(
        E.soft_mc_returns(r, h, term, trunc, gamma, alpha), expected, rtol=1e-9, atol=1e-9
    )


def test_soft_returns_with_zero_alpha_are_hard_returns():
    rng = np.random.default_rng(0)
    r, h = rng.normal(size=500), rng.normal(size=500)
    term, trunc = rng.random(500) < 0.02, rng.random(500) < 0.02
    np.testing.assert_allclose(
        E.soft_mc_returns(r, h, term, trunc, 0.99, 0.0),
        T.mc_returns(r, term, trunc, 0.99),
        rtol=1e-10,
    )


# ---------------------------------------------------------------------------------------------
# networks
# ---------------------------------------------------------------------------------------------
def test_actor_log_prob_matches_torch_tanh_gaussian():
    torch.manual_seed(0)
    actor = E.Actor(4, 2, (16,), True, np.array([-1, -2], np.float32), np.array([1, 2], np.float32))
    obs = torch.randn(5, 4)
    mu, std = actor.dist(obs)
    base = torch.distributions.Normal(mu, std)
    transforms = [
        torch.distributions.TanhTransform(),
        torch.distributions.AffineTransform(actor.bias, actor.scale),
    ]
    dist = torch.distributions.TransformedDistribution(base, transforms)
    act = torch.tensor([[0.3, -1.0], [0.0, 1.5], [-0.9, 0.1], [0.5, 0.5], [0.2, -0.2]])
    torch.testing.assert_close(
        actor.log_prob(obs, act), dist.log_prob(act).sum(-1), rtol=1e-4, atol=1e-4
    )
    sampled, log_prob = actor(obs)
    torch.testing.assert_close(log_prob, dist.log_prob(sampled).sum(-1), rtol=1e-3, atol=1e-3)
    edge = actor.log_prob(
        obs[:2], torch.tensor([[1.0, 2.0], [-1.0, -2.0]])
    )  # actions on the box edge
    assert torch.isfinite(edge).all()


def test_log_std_is_clipped():
    actor = E.Actor(2, 1, (8,), False, np.full(1, -1, np.float32), np.ones(1, np.float32))
    with torch.no_grad():
        actor.net[-1].bias.copy_(torch.tensor([0.0, 50.0]))
    assert torch.allclose(
        actor.dist(torch.zeros(3, 2))[1], torch.tensor(np.exp(2.0), dtype=torch.float32)
    )


@pytest.mark.parametrize("module", [E, T])
def test_ensemble_equals_separate_mlps(module):
    torch.manual_seed(0)
    critic = module.Critic(5, 2, (16, 8), layernorm=True, num_critics=4)
    obs, act = torch.randn(7, 5), torch.randn(7, 2)
    q = critic(obs, act)
    for i in range(4):
        layers = []
        for j, lin in enumerate(critic.linears):
            linear = nn.Linear(*lin.weight.shape[1:])
            linear.weight.data, linear.bias.data = lin.weight[i].T.clone(), lin.bias[i, 0].clone()
            layers.append(linear)
            if (
                j < len(critic.linears) - 1
            ):  # LayerNorm without scale and shift, as the paper's code
                layers += [nn.LayerNorm(lin.weight.shape[2], elementwise_affine=False), nn.ReLU()]
        torch.testing.assert_close(
            q[i], nn.Sequential(*layers)(torch.cat([obs, act], 1)).squeeze(1)
        )


class LinearInAction(nn.Module):
    """Member i: Q_i(s, a) = w_i . a, so grad_a Q_i = w_i."""

    def __init__(self, w):
        super().__init__()
        self.w, self.num_critics = torch.as_tensor(w, dtype=torch.float32), len(w)

    def members(self, x, act_dim=0):
        q = (x[..., -self.w.shape[1] :] * self.w[:, None, :]).sum(-1)
        return (q, self.w[:, None, :].expand(-1, x.shape[1], -1)) if act_dim else q


def test_diversity_hand_computed():
    critic = LinearInAction([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    q, div = E.q_and_diversity(critic, torch.zeros(4, 3), torch.randn(4, 2))
    # cos(w1, w2) = 0, cos(w1, w3) = cos(w2, w3) = 1/sqrt(2); (2 * (0 + 2/sqrt(2))) / (N - 1) = sqrt(2)
    torch.testing.assert_close(div, torch.tensor(2**0.5))
    assert q.shape == (3, 4)


@pytest.mark.parametrize("layernorm", [True, False])
def test_members_action_gradient_is_autograds(layernorm):
    """Critic.members's hand-written dQ_i/da equals autograd's, member by member; Q is unchanged."""
    torch.manual_seed(0)
    critic = E.Critic(5, 3, (16, 16, 16), layernorm, num_critics=4)
    x = torch.randn(4, 7, 8)
    act = x[..., 5:].clone().requires_grad_(True)
    q_plain = critic.members(torch.cat([x[..., :5], act], -1))
    expected = torch.autograd.grad(q_plain.sum(), act)[0]
    q, grad = critic.members(x, act_dim=3)
    torch.testing.assert_close(q, q_plain)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6)
    # and its own gradient (what the diversity term trains on) matches double backward
    weights = critic.linears[1].weight
    ours = torch.autograd.grad(grad.square().sum(), weights)[0]
    g = torch.autograd.grad(
        critic.members(torch.cat([x[..., :5], act], -1)).sum(), act, create_graph=True
    )[0]
    torch.testing.assert_close(
        ours, torch.autograd.grad(g.square().sum(), weights)[0], rtol=1e-4, atol=1e-6
    )


def test_diversity_is_maximal_for_identical_members():
    torch.manual_seed(0)
    critic = E.Critic(3, 2, (16,), True, num_critics=4)
    obs, act = torch.randn(32, 3), torch.rand(32, 2)
    _, spread = E.q_and_diversity(critic, obs, act)
    with torch.no_grad():
        for p in critic.parameters():
            p.copy_(p[:1].expand_as(p))
    _, same = E.q_and_diversity(critic, obs, act)
    torch.testing.assert_close(same, torch.tensor(4.0))  # N when every cosine is 1
    assert spread < same - 0.5


def test_soft_bc_raises_the_likelihood_of_data_actions():
    torch.manual_seed(0)
    actor = E.Actor(3, 2, (32,), True, np.full(2, -1, np.float32), np.ones(2, np.float32))
    obs = torch.randn(256, 3)
    act = torch.tanh(obs[:, :2])
    opt = torch.optim.Adam(actor.parameters(), 3e-3)
    before = actor.log_prob(obs, act).mean().item()
    for _ in range(200):
        loss, _ = E.soft_bc_loss(actor, obs, act, torch.tensor(0.1))
        opt.zero_grad(), loss.backward(), opt.step()
    assert actor.log_prob(obs, act).mean().item() > before + 2.0


def test_task_defaults():
    expected = {
        "hopper-medium": (50, 1.0),
        "halfcheetah-medium": (10, 1.0),
        "pen-human": (20, 1000.0),
        "D4RL/pen/cloned-v2": (20, 10.0),
        "door-human": (50, 200.0),
        "my/own-v0": (10, 1.0),
    }
    for env_id, (n, eta) in expected.items():
        args = E.resolve_defaults(E.Args(env_id=env_id))
        assert (args.num_critics, args.eta) == (n, eta), env_id


# ---------------------------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------------------------
def test_actor_frozen_during_critic_pretraining(minari_root, tmp_path):
    ckpts = []
    # the same 100 soft-BC updates, then nothing (run 1) or 100 critic-pretraining updates (run 2)
    for total, fraction in ((100, "1.0"), (200, "0.5")):
        res = run_edac(
            TINY_EDAC
            + flags(
                total_timesteps=total,
                pretrain_steps=total,
                eval_freq=100,
                actor_pretrain_fraction=fraction,
                save_model=True,
                runs_dir=tmp_path / str(total),
            )
        )
        assert res.returncode == 0, res.stderr
        ckpts.append(
            torch.load(os.path.join(run_dir_of(res.stdout), "checkpoint.pt"), weights_only=False)
        )
    assert all(torch.equal(ckpts[0]["actor"][k], ckpts[1]["actor"][k]) for k in ckpts[0]["actor"])
    assert torch.equal(ckpts[0]["log_alpha"], ckpts[1]["log_alpha"])
    assert not all(
        torch.equal(ckpts[0]["critic"][k], ckpts[1]["critic"][k]) for k in ckpts[0]["critic"]
    )
    assert ckpts[1]["frozen_alpha"] == pytest.approx(float(ckpts[0]["log_alpha"].exp()))


def test_two_critics_and_every_edac_option(minari_root, tmp_path):
    res = run_edac(
        TINY_EDAC[:-2]
        + flags(
            num_critics=2,
            eta=5.0,
            actor_pretrain_fraction=0.25,
            td_lambda=0.3,
            mc_tail="none",
            actor_layernorm=False,
            critic_layernorm=False,
            compile=False,
            total_timesteps=200,
            pretrain_steps=200,
            eval_freq=200,
            runs_dir=tmp_path,
        )
    )
    assert res.returncode == 0, res.stderr
    assert "EDAC: 2 critics, eta 5.0" in res.stdout and "soft returns: alpha" in res.stdout
    cfg = json.load(open(os.path.join(run_dir_of(res.stdout), "config.json")))
    assert (
        cfg["num_critics"] == 2
        and cfg["actor_pretrain_fraction"] == 0.25
        and cfg["td_lambda"] == 0.3
    )


def test_errors(minari_root):
    res = run_edac(["--env-id", "hopper-mediun"])
    assert (
        res.returncode == 1
        and "unknown env id 'hopper-mediun'" in res.stderr
        and "hopper-medium" in res.stderr
    )
    res = run_edac(flags(actor_pretrain_fraction=1.5, num_critics=0))
    assert res.returncode == 1
    assert (
        "--actor-pretrain-fraction must be in [0, 1]" in res.stderr
        and "--num-critics must be at least 1" in res.stderr
    )


def test_edac_task_defaults_resolved():
    args = E.resolve_defaults(E.Args(env_id="pen-human"))
    assert (args.num_critics, args.eta, args.total_timesteps, args.pretrain_steps) == (
        20,
        1000.0,
        300_000,
        200_000,
    )
    args = E.resolve_defaults(E.Args(env_id="hopper-medium", eta=3.0))
    assert (args.num_critics, args.eta, args.total_timesteps, args.score_window) == (
        50,
        3.0,
        1_000_000,
        None,
    )


@pytest.mark.parametrize("module", [E, importlib.import_module("edac_bc_pretrain")])
def test_diagnostics_on_known_values(module):
    torch.manual_seed(0)
    actor = module.Actor(3, 2, (8,), False, -np.ones(2, np.float32), np.ones(2, np.float32))
    obs, act = torch.randn(2, 3), torch.zeros(2, 2)
    q_all = torch.tensor([[1.0, 2.0], [3.0, 6.0]])  # [N=2 members, B=2]
    _, d = module.actor_loss(
        actor, lambda o, a: q_all, obs, act, 0.1, *([1.0] if module is not E else [])
    )
    assert d["diagnostics/q_pi_min"].item() == pytest.approx(
        1.5
    )  # mean of the member minima 1 and 2
    assert d["diagnostics/q_pi_std"].item() == pytest.approx(
        1.5
    )  # mean of the population stds 1 and 2
    deterministic, _ = actor(obs, deterministic=True)
    assert d["diagnostics/action_distance"].item() == pytest.approx(
        deterministic.square().sum(-1).mean().item()
    )


def test_diagnostics_reach_losses_csv(minari_root, tmp_path):
    res = run_edac(
        TINY_EDAC
        + flags(
            total_timesteps=40,
            pretrain_steps=0,
            eval_freq=40,
            log_freq=20,
            num_critics=1,
            runs_dir=tmp_path,
        )
    )
    assert res.returncode == 0, res.stderr  # N=1: the ensemble std is 0, not NaN
    rows = list(csv.DictReader(open(os.path.join(run_dir_of(res.stdout), "losses.csv"))))
    names = {r["name"] for r in rows if r["update"] == "40"}
    assert {
        "diagnostics/q_data_min",
        "diagnostics/q_data_std",
        "diagnostics/q_pi_min",
        "diagnostics/q_pi_std",
        "diagnostics/action_distance",
        "charts/alpha",
        "losses/entropy",
        "losses/critic_diversity",
    } <= names
    assert all(float(r["value"]) == 0.0 for r in rows if r["name"].endswith("_std"))
