"""tools/: the CORL-structured reference loops run and print their speed; rollout.py replays a checkpoint."""

import re

import pytest
from conftest import flags, run_script


def test_reference_edac():
    res = run_script(
        flags(algo="edac", num_critics=2, steps=1, obs_dim=3, act_dim=2),
        script="tools/speed_reference.py",
    )
    assert res.returncode == 0, res.stderr
    assert re.search(
        r"CORL-structured EDAC \(N=2, no LayerNorm, 256x3, eager fp32\), finetune: [\d.]+ updates/s",
        res.stdout,
    )
    edac = flags(algo="edac", num_critics=2, steps=1, obs_dim=3, act_dim=2, phase="pretrain")
    res = run_script(edac, script="tools/speed_reference.py")
    assert res.returncode == 0, res.stderr
    assert re.search(
        r"EDAC \(N=2, no LayerNorm, 256x3, eager fp32\), pretrain: [\d.]+ updates/s", res.stdout
    )


def test_reference_td3bc_with_and_without_layernorm():
    for extra, name in (([], "no LayerNorm"), (["--layernorm"], "LayerNorm")):
        res = run_script(
            ["--algo", "td3bc", "--steps", "3", *extra], script="tools/speed_reference.py"
        )
        assert res.returncode == 0, res.stderr
        assert re.search(
            rf"CORL-structured TD3\+BC \({name}, 256x2, eager fp32\), finetune: [\d.]+ upd",
            res.stdout,
        )
    res = run_script(
        flags(algo="td3bc", steps=3, layernorm=True, phase="pretrain"),
        script="tools/speed_reference.py",
    )
    assert res.returncode == 0, res.stderr
    assert re.search(
        r"TD3\+BC \(LayerNorm, 256x2, eager fp32\), pretrain: [\d.]+ updates/s", res.stdout
    )


def test_reference_edac_update_trains_the_critics():
    """The reference does the work it claims: critics, actor and alpha all change in one update."""
    import os
    import sys

    import torch

    sys.path.insert(
        0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")
    )
    import speed_reference as R

    torch.manual_seed(0)
    agent, buffer = R.EDACReference(3, 2, n=3), R.Buffer(100, 3, 2)
    before = [
        p.detach().clone()
        for p in (*agent.critic.parameters(), *agent.actor.parameters(), agent.log_alpha)
    ]
    agent.train(buffer.sample(8))
    after = [*agent.critic.parameters(), *agent.actor.parameters(), agent.log_alpha]
    assert all(not torch.equal(b, a) for b, a in zip(before, after))
    # sum_{i != j} cos = |sum of unit gradients|^2 - N, so the term lies in [-N / (N - 1), N]
    assert -1.5 <= agent.diversity(*buffer.sample(8)[:2]).item() <= 3
    # the pretraining updates train what they claim: EDAC's critics only, TD3+BC's critics and actor
    before = [p.detach().clone() for p in (*agent.critic.parameters(), *agent.actor.parameters())]
    agent.pretrain(buffer.sample(8))
    changed = [
        not torch.equal(b, a)
        for b, a in zip(before, (*agent.critic.parameters(), *agent.actor.parameters()))
    ]
    n_critic = len(list(agent.critic.parameters()))
    assert all(changed[:n_critic]) and not any(changed[n_critic:])
    td3 = R.TD3BCReference(3, 2, layernorm=True)
    before = [p.detach().clone() for p in (*td3.critic_1.parameters(), *td3.actor.parameters())]
    td3.pretrain(buffer.sample(8))
    assert all(
        not torch.equal(b, a)
        for b, a in zip(before, (*td3.critic_1.parameters(), *td3.actor.parameters()))
    )


def test_plot_losses_of_a_run(tmp_path):
    import json

    run = tmp_path / "run"
    run.mkdir()
    (run / "losses.csv").write_text(
        "update,phase,name,value\n10,pretrain,losses/a,1.0\n20,finetune,losses/a,0.5\n"
    )
    (run / "eval.csv").write_text(
        "update,phase,wall_s,train_s,updates_per_s,return_mean,return_std,normalized_mean,normalized_std\n"
        "20,finetune,1,1,1,5,0,50,0\n"
    )
    (run / "config.json").write_text(json.dumps({"pretrain_steps": 10}))
    res = run_script(
        [str(run), "--names", "losses/a", "--out", str(tmp_path / "p.png")],
        script="tools/plot_losses.py",
    )
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "p.png").stat().st_size > 1000
    res = run_script([str(run), "--names", "losses/b"], script="tools/plot_losses.py")
    assert (
        res.returncode == 2
        and "no run logged 'losses/b'; logged: eval/normalized_score, losses/a" in res.stderr
    )


def test_rollout_replays_the_checkpoints_evaluation(minari_root, tmp_path):
    """tools/rollout.py loads the actor and the state normalization the run evaluated with: its first episode, reset
    with the run's evaluation seed, returns exactly what eval.csv recorded (one episode per evaluation)."""
    import csv
    import os

    from conftest import TINY, run_dir_of

    import utils

    for script, extra in (
        ("td3bc_pretrain.py", []),
        ("edac_pretrain.py", ["--num-critics", "2"]),
    ):
        common = flags(total_timesteps=30, pretrain_steps=10, eval_freq=30, eval_episodes=1)
        common += flags(save_model=True, runs_dir=tmp_path / script)
        res = run_script([*TINY, *extra, *common], script=script)
        assert res.returncode == 0, res.stderr
        run_dir = run_dir_of(res.stdout)
        recorded = float(
            list(csv.DictReader(open(os.path.join(run_dir, "eval.csv"))))[-1]["return_mean"]
        )
        seed = utils.eval_seeds(1, 1)[0]
        res = run_script(
            [run_dir, "--episodes", "2", "--seed", str(seed), "--data-episodes", "3", "--q-line"],
            script="tools/rollout.py",
        )
        assert res.returncode == 0, res.stderr
        assert (
            "checkpoint at update 30 (finetune)" in res.stdout
            and "squared distance to the dataset's action" in res.stdout
            and "the critics' minimum at the dataset's action" in res.stdout
            and "t=2: " in res.stdout
        )
        returns = [float(m) for m in re.findall(r"episode \d: return (-?[\d.]+)", res.stdout)]
        assert len(returns) == 2 and returns[0] == pytest.approx(recorded, abs=0.5), (
            returns,
            recorded,
        )


def test_q_line_walks_from_the_data_action_to_the_actor_action_inside_the_box():
    """rollout.q_line: t=0 is the critics' minimum at the data's actions, t=1 at the actor's, and a
    point past the actor's action is clipped to the action box."""
    import sys

    import torch

    sys.path.insert(0, "tools")
    import rollout

    import edac_pretrain

    torch.manual_seed(0)
    critic = edac_pretrain.Critic(3, 2, (8, 8), False, 4)
    obs, data, actor = torch.randn(5, 3), torch.rand(5, 2) - 0.5, torch.rand(5, 2) * 0.9
    rows = rollout.q_line(critic, obs, data, actor, -torch.ones(2), torch.ones(2), ts=(0, 1, 3))
    at = lambda a: critic(obs, a)
    assert [t for t, _, _ in rows] == [0, 1, 3]
    assert rows[0][1] == pytest.approx(at(data).min(0).values.mean().item())
    assert rows[1][1] == pytest.approx(at(actor).min(0).values.mean().item())
    assert rows[1][2] == pytest.approx(at(actor).std(0, correction=0).mean().item())
    past = (data + 3 * (actor - data)).clamp(-1, 1)
    assert rows[2][1] == pytest.approx(at(past).min(0).values.mean().item())
