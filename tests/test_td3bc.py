"""td3bc_pretrain.py: networks and losses, then the script end to end on a tiny dataset."""

import glob
import json
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import TINY, flags, read_csv, run_dir_of, run_script

import td3bc_pretrain as T
import utils


# ---------------------------------------------------------------------------------------------
# networks and losses
# ---------------------------------------------------------------------------------------------
def test_critic_first_n_and_extra_batch_dims():
    # member-by-member equality with plain MLPs: tests/test_edac.py::test_ensemble_equals_separate_mlps
    torch.manual_seed(0)
    critic = T.Critic(5, 2, (16, 8), layernorm=True, num_critics=3)
    obs, act = torch.randn(7, 5), torch.randn(7, 2)
    torch.testing.assert_close(critic(obs, act, n=1)[0], critic(obs, act)[0])
    assert critic(obs[:, None].expand(-1, 4, -1), torch.randn(7, 4, 2)).shape == (3, 7, 4)


def test_layernorm_flags():
    actor = T.Actor(3, 2, (8,), False, np.full(2, -1, np.float32), np.ones(2, np.float32))
    assert not any(isinstance(m, nn.LayerNorm) for m in actor.modules())
    actor = T.Actor(3, 2, (8, 8), True, np.full(2, -1, np.float32), np.ones(2, np.float32))
    assert sum(isinstance(m, nn.LayerNorm) for m in actor.modules()) == 2
    x = torch.randn(7, 3)
    layer = T.Critic(1, 2, (8,), False, num_critics=1).linears[0]
    with_norm, without = (
        T.Critic(1, 2, (8,), True, num_critics=1),
        T.Critic(1, 2, (8,), False, num_critics=1),
    )
    with_norm.load_state_dict(without.state_dict())  # same weights: only the normalization differs
    h = torch.relu(layer(x[None]))
    assert not torch.allclose(
        with_norm(x[:, :1], x[:, 1:]), without(x[:, :1], x[:, 1:])
    ) and h.shape == (1, 7, 8)


def test_actor_respects_action_box():
    actor = T.Actor(
        3, 2, (8,), True, np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32)
    )
    with torch.no_grad():
        for p in actor.parameters():
            p.mul_(100)
        a = actor(torch.randn(1000, 3))
    assert a[:, 0].min() >= -2 and a[:, 0].max() <= 2 and a[:, 0].abs().max() > 1.5
    assert a[:, 1].min() >= 0 and a[:, 1].max() <= 1


class ConstantCritic(nn.Module):
    """Q(s, a) = sum(a) * k for every member, so logsumexp over actions is computable by hand."""

    def __init__(self, k=1.0, n=2):
        super().__init__()
        self.k, self.num_critics = k, n

    def forward(self, obs, act, n=None):
        q = act.sum(-1) * self.k
        return q.unsqueeze(0).expand(n or self.num_critics, *q.shape)


def test_cql_penalty_known_values():
    torch.manual_seed(0)
    critic = ConstantCritic()
    obs = torch.zeros(4, 3)
    zero = np.zeros(1, np.float32)
    actor = T.Actor(3, 1, (4,), False, zero, zero)  # a zero-width box: every random action is 0
    q_data = torch.tensor([[1.0, 2.0, 0.0, -1.0]] * 2)
    gap = T.cql_gap(critic, actor, obs, q_data)  # mean over the batch, summed over both critics
    torch.testing.assert_close(gap, (torch.log(torch.tensor(10.0)) - q_data).mean(1).sum())


def test_td_target_bootstraps_through_truncation_not_termination():
    actor = T.Actor(1, 1, (4,), False, np.full(1, -1, np.float32), np.ones(1, np.float32))
    critic_q = lambda o, a: torch.full((2, o.shape[0]), 10.0)  # noqa: E731
    batch = {
        "act": torch.zeros(2, 1),
        "rew": torch.tensor([1.0, 1.0]),
        "next_obs": torch.zeros(2, 1),
    }
    batch["term"] = torch.tensor([1.0, 0.0])  # second: truncated or mid-episode
    y = T.td_target(actor, critic_q, batch, gamma=0.5)
    torch.testing.assert_close(y, torch.tensor([1.0, 6.0]))


def test_td3bc_actor_loss_climbs_q_and_clones():
    torch.manual_seed(0)
    actor = T.Actor(2, 1, (16,), False, np.full(1, -1, np.float32), np.ones(1, np.float32))
    critic = ConstantCritic(k=1.0)  # Q increases with the action
    obs, act = torch.randn(64, 2), torch.zeros(64, 1)
    opt = torch.optim.Adam(actor.parameters(), 1e-2)
    start = actor(obs).mean().item()
    for _ in range(50):
        loss, info = T.actor_loss(actor, critic, obs, act, alpha=2.5)
        opt.zero_grad(), loss.backward(), opt.step()
    assert actor(obs).mean().item() > start + 0.1  # -lambda Q: gradient ascent on Q
    # the BC term alone (alpha = 0) pulls the policy to the data action
    for _ in range(200):
        loss, info = T.actor_loss(actor, critic, obs, act, alpha=0.0)
        opt.zero_grad(), loss.backward(), opt.step()
    assert info["losses/actor_bc"].item() < 1e-3


def test_mc_max_target_takes_the_larger():
    """Appendix F: with critics that output 0 and no noise on the next action, the TD target is r = 1 and the
    MC returns are 5 and -5: the loss of a zero critic is the mean square of the target, max(R, 1) = (5, 1)."""
    critic = T.Critic(1, 1, (4,), False)
    for p in critic.parameters():
        torch.nn.init.zeros_(p)
    actor = T.Actor(1, 1, (4,), False, np.full(1, -1, np.float32), np.ones(1, np.float32))
    batch = {"obs": torch.zeros(2, 1), "act": torch.zeros(2, 1), "rew": torch.tensor([1.0, 1.0])}
    batch.update(
        next_obs=torch.zeros(2, 1), term=torch.ones(2), mc_return=torch.tensor([5.0, -5.0])
    )
    loss, _ = T.critic_loss(critic, actor, critic, batch, 0.99, True)
    assert loss.item() == pytest.approx(2 * (25 + 1) / 2)  # two critics, each mean((5, 1)^2)
    loss, _ = T.critic_loss(critic, actor, critic, batch, 0.99, False)
    assert loss.item() == pytest.approx(2 * 1.0)


# ---------------------------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------------------------
def pretrain_only(tmp_path, mode, steps=300, extra=()):
    res = run_script(
        TINY
        + [*extra]
        + flags(total_timesteps=steps, pretrain_steps=steps, pretrain_mode=mode, eval_freq=steps)
        + flags(save_model=True, runs_dir=tmp_path)
    )
    assert res.returncode == 0, res.stderr
    return torch.load(os.path.join(run_dir_of(res.stdout), "checkpoint.pt"), weights_only=False)


def same_weights(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_pretrain_mode_actor_leaves_critic_alone(minari_root, tmp_path):
    ckpt = pretrain_only(tmp_path, "actor")
    assert same_weights(
        ckpt["critic"], ckpt["critic_target"]
    )  # untouched critic: Polyak keeps them equal
    assert not same_weights(ckpt["actor"], ckpt["actor_target"])


def test_pretrain_mode_critic_leaves_actor_alone(minari_root, tmp_path):
    ckpt = pretrain_only(tmp_path, "critic")
    assert same_weights(ckpt["actor"], ckpt["actor_target"])
    assert not same_weights(ckpt["critic"], ckpt["critic_target"])


def test_critic_pretraining_fits_mc_returns(minari_root, tmp_path):
    import utils

    ckpt = pretrain_only(tmp_path, "critic", steps=2000, extra=["--learning-rate", "3e-3"])
    data = utils.flatten_dataset(utils.load_dataset("hopper-random"))
    mc = torch.as_tensor(
        T.mc_returns(data["rewards"], data["terminations"], data["truncations"], 0.99),
        dtype=torch.float32,
    )
    obs = torch.as_tensor((data["observations"] - ckpt["obs_mean"]) / ckpt["obs_std"])
    act = torch.as_tensor(data["actions"])
    critic = T.Critic(11, 3, (32, 32), True)
    with torch.no_grad():
        untrained = ((critic(obs, act) - mc) ** 2).mean()
        critic.load_state_dict(ckpt["critic"])
        trained = ((critic(obs, act) - mc) ** 2).mean()
    assert trained < 0.5 * mc.var() and trained < 0.3 * untrained, (trained, mc.var(), untrained)


def test_seeded_runs_repeat_exactly(minari_root, tmp_path):
    common = TINY + flags(total_timesteps=300, pretrain_steps=100, eval_freq=100, save_model=True)
    dirs = []
    for seed, sub in ((3, "a"), (3, "b"), (4, "c")):
        res = run_script(common + flags(seed=seed, runs_dir=tmp_path / sub))
        assert res.returncode == 0, res.stderr
        dirs.append(run_dir_of(res.stdout))
    ckpts = [torch.load(os.path.join(d, "checkpoint.pt"), weights_only=False) for d in dirs]
    returns = [[r["return_mean"] for r in read_csv(d)] for d in dirs]
    assert returns[0] == returns[1] and same_weights(ckpts[0]["actor"], ckpts[1]["actor"])
    assert not same_weights(ckpts[0]["actor"], ckpts[2]["actor"])


def test_final_evaluation_writes_one_row_per_episode_once(minari_root, tmp_path):
    """--final-episodes N: N episodes after the last update, own seeds, a row each; summary.csv has their mean;
    resuming the finished run does not evaluate again."""
    common = TINY + flags(total_timesteps=40, pretrain_steps=20, eval_freq=20, save_model=True)
    res = run_script(common + flags(final_episodes=4, runs_dir=tmp_path))
    assert res.returncode == 0, res.stderr
    run_dir = run_dir_of(res.stdout)
    rows = read_csv(run_dir, "final_returns.csv")
    assert list(rows[0]) == ["episode", "seed", "return", "normalized"] and len(rows) == 4
    assert [int(r["episode"]) for r in rows] == [0, 1, 2, 3] and len({r["seed"] for r in rows}) == 4
    assert not {int(r["seed"]) for r in rows} & set(
        utils.eval_seeds(1, 2)
    )  # not the periodic evaluation's
    summary = read_csv(run_dir, "summary.csv")[0]
    mean = sum(float(r["normalized"]) for r in rows) / 4
    assert (
        int(summary["final_episodes"]) == 4
        and abs(float(summary["final_episodes_normalized"]) - mean) < 1e-9
    )
    assert "final evaluation, 4 episodes: normalized" in res.stdout
    before = open(os.path.join(run_dir, "final_returns.csv")).read()
    again = run_script(["--resume", run_dir])
    assert again.returncode == 0, again.stderr
    assert "final evaluation" not in again.stdout
    assert open(os.path.join(run_dir, "final_returns.csv")).read() == before
    res = run_script(common + flags(final_episodes=0, runs_dir=tmp_path / "off"))
    assert res.returncode == 0 and not os.path.exists(
        os.path.join(run_dir_of(res.stdout), "final_returns.csv")
    )
    res = run_script(["--final-episodes", "-1"])
    assert res.returncode == 1 and "--final-episodes must be >= 0 (got -1)" in res.stderr


def test_resume_errors(minari_root, tmp_path):
    res = run_script(["--resume", str(tmp_path / "nowhere")])
    assert res.returncode == 1 and "no config.json" in res.stderr
    ok = run_script(
        TINY + flags(total_timesteps=100, pretrain_steps=50, eval_freq=100, runs_dir=tmp_path)
    )
    res = run_script(["--resume", run_dir_of(ok.stdout)])
    assert res.returncode == 1 and "no checkpoint.pt" in res.stderr and "--save-model" in res.stderr


def test_track_wandb_offline(minari_root, tmp_path):
    res = run_script(
        TINY
        + flags(
            total_timesteps=200, pretrain_steps=100, eval_freq=100, track=True, runs_dir=tmp_path
        ),
        env_extra={"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_PROJECT": "unit-test"},
    )
    assert res.returncode == 0, res.stderr
    runs = glob.glob(os.path.join(run_dir_of(res.stdout), "wandb", "offline-run-*", "run-*.wandb"))
    assert runs, "no offline wandb run written"
    blob = open(runs[0], "rb").read()
    assert (
        b"eval/normalized_score" in blob
        and b"losses/critic_mc" in blob
        and b"losses/critic_td" in blob
    )
    assert (
        b"charts/updates_per_second" in blob and b"td3bc_pretrain.py" in blob
    )  # save_code keeps the script


def test_unknown_env_id_lists_short_names(minari_root):
    res = run_script(["--env-id", "hopper-mediun"])
    assert res.returncode == 1
    assert (
        "unknown env id 'hopper-mediun'" in res.stderr
        and "hopper-medium" in res.stderr
        and "pen-human" in res.stderr
    )
    assert "Traceback" not in res.stderr


def test_dataset_not_found_offline(minari_root):
    res = run_script(
        flags(env_id="halfcheetah-medium", compile=False), env_extra={"HF_HUB_OFFLINE": "1"}
    )
    assert res.returncode == 1
    assert "mujoco/halfcheetah/medium-v0" in res.stderr and "not available locally" in res.stderr
    assert (
        "minari download mujoco/halfcheetah/medium-v0" in res.stderr
        and "MINARI_DATASETS_PATH" in res.stderr
    )
    assert "Traceback" not in res.stderr


def test_nan_loss_stops_run_and_names_it(minari_root, tmp_path):
    for pretrain, name in ((0, "losses/critic_td"), (200, "losses/critic_mc")):
        res = run_script(
            TINY
            + flags(
                total_timesteps=400,
                pretrain_steps=pretrain,
                learning_rate="1e30",
                log_freq=20,
                eval_freq=200,
                runs_dir=tmp_path,
            )
        )
        assert res.returncode == 1
        phase = "pretrain" if pretrain else "finetune"
        assert (
            f"{name} is" in res.stderr
            and f"(phase {phase};" in res.stderr
            and "at update 20" in res.stderr
        )


def test_bad_arguments_are_named(minari_root):
    res = run_script(flags(td_lambda=2, eval_freq=0))
    assert res.returncode == 1
    assert (
        "--td-lambda must be in [0, 1]" in res.stderr
        and "--eval-freq must be at least 1" in res.stderr
    )


def test_every_option_runs(minari_root, tmp_path):
    """Each non-default value of every flag, across two runs, reaches config.json and the run finishes."""
    first = flags(
        env_id="local/hopper/random-v0",
        seed=2,
        final_episodes=3,
        exp_name="opts",
        total_timesteps=300,
        pretrain_steps=200,
        pretrain_mode="both",
        batch_size=32,
        gamma=0.95,
        tau=0.01,
        learning_rate="1e-3",
        hidden_dims=(16, 24),
        actor_layernorm=False,
        critic_layernorm=False,
        td_lambda=0.5,
        mc_tail="none",
        pretrain_cql_weight=1.0,
        alpha=3.0,
        policy_frequency=1,
        eval_freq=150,
        eval_episodes=1,
        eval_protocol="paper",
        log_freq=10,
        mc_max_target=True,
        compile=False,
        bf16=True,
        runs_dir=tmp_path,
    )
    res = run_script(first)
    assert res.returncode == 0, res.stderr
    run_dir = run_dir_of(res.stdout)
    assert os.path.basename(run_dir).startswith("local-hopper-random-v0__opts__2__")
    cfg = json.load(open(os.path.join(run_dir, "config.json")))
    assert cfg["hidden_dims"] == [16, 24] and cfg["mc_tail"] == "none" and cfg["td_lambda"] == 0.5
    assert cfg["bf16"] is True
    assert (
        cfg["pretrain_cql_weight"] == 1.0 and cfg["alpha"] == 3.0 and cfg["mc_max_target"] is True
    )
    assert "TD3+BC: alpha 3.0" in res.stdout
    assert [int(r["update"]) for r in read_csv(run_dir)] == [150, 300]
    assert cfg["final_episodes"] == 3 and len(read_csv(run_dir, "final_returns.csv")) == 3
    # --compile (the default) runs in tests/test_main_job.py through the README command


def test_adroit_random_dataset_with_paper_protocol(tmp_path):
    import utils

    root = str(tmp_path / "minari")
    res = run_script(
        ["pen", "--steps", "200"],
        script="tools/build_random.py",
        env_extra={"MINARI_DATASETS_PATH": root},
    )
    assert res.returncode == 0, res.stderr
    res = run_script(
        TINY[2:]
        + flags(
            env_id="pen-random",
            eval_protocol="paper",
            total_timesteps=100,
            pretrain_steps=50,
            eval_freq=100,
            runs_dir=tmp_path,
        ),
        env_extra={"MINARI_DATASETS_PATH": root},
    )
    assert res.returncode == 0, res.stderr
    assert (
        "evaluation (paper protocol): episodes of at most 100 steps; reference scores random -162.09, expert 3076.8331"
        in res.stdout
    )
    (row,) = read_csv(run_dir_of(res.stdout))
    expected = utils.normalized_score([float(row["return_mean"])], (-162.09, 3076.8331))[0]
    assert abs(float(row["normalized_mean"]) - expected) < 1e-6


def test_score_window_and_task_defaults(minari_root, tmp_path):
    res = run_script(
        TINY
        + flags(
            total_timesteps=300,
            pretrain_steps=100,
            eval_freq=100,
            score_window=(200, 300),
            runs_dir=tmp_path,
        )
    )
    assert res.returncode == 0, res.stderr
    assert (
        "defaults for task hopper: pretrain_max_steps=300, td_lambda=0.0, alpha=10.0" in res.stdout
    )
    run_dir = run_dir_of(res.stdout)
    rows = read_csv(run_dir)
    expected = (float(rows[1]["normalized_mean"]) + float(rows[2]["normalized_mean"])) / 2
    assert f"window score, updates 200-300: {expected:.1f}, the mean of 2 evaluations" in res.stdout
    cfg = json.load(open(os.path.join(run_dir, "config.json")))
    assert cfg["alpha"] == 10.0 and cfg["score_window"] == [200, 300]  # resolved values recorded


def test_adroit_defaults_resolved():
    args = T.resolve_defaults(T.Args(env_id="door-human"))
    assert (args.total_timesteps, args.pretrain_steps, args.score_window, args.alpha) == (
        300_000,
        200_000,
        (200_000, 300_000),
        0.1,
    )
    args = T.resolve_defaults(T.Args(env_id="pen-human", total_timesteps=5, alpha=2.0))
    assert (args.total_timesteps, args.pretrain_steps, args.alpha) == (
        5,
        200_000,
        2.0,
    )  # what the user sets wins
