"""Watch what a checkpoint's policy does: its deterministic actor's actions on the dataset's states
(squared distance to the dataset's actions, per-dimension means), then episodes on the dataset's
evaluation env with the return, the reward of each fifth of the episode and, on HalfCheetah, the
step from which the cheetah lies on its back (torso pitch |obs[1]| > 1.5 rad) and whether it got
up again.

    python tools/rollout.py RUN_DIR [--episodes 5] [--seed 1000] [--video] [--q-line]

--video renders the first episode offscreen to RUN_DIR/videos/rollout_update_<N>.mp4
(MUJOCO_GL=egl). --q-line: the critics' value along the line from the dataset's action to the
actor's, a = a_data + t (a_actor - a_data), clipped to the action box: does the critic prefer the
actor's action, and do its members disagree more off the data (EDAC's only pessimism)?

RUN_DIR: a run directory written with --save-model (its config.json names the script and the
dataset)."""

import argparse
import importlib
import inspect
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import utils  # noqa: E402

FLIP_ANGLE = 1.5  # rad; HalfCheetah's obs[1] is the torso's pitch


def load_actor(run_dir):
    """(the actor with the checkpoint's weights, the checkpoint, the dataset), built as the run's
    script built them."""
    config = json.load(open(os.path.join(run_dir, "config.json")))
    module = importlib.import_module(config["script"][: -len(".py")])
    args = utils.read_config(run_dir, module.Args, config["script"])
    dataset = utils.load_dataset(args.env_id)
    ckpt = torch.load(
        os.path.join(run_dir, "checkpoint.pt"), map_location="cpu", weights_only=False
    )
    obs_dim, act_dim = dataset.observation_space.shape[0], dataset.action_space.shape[0]
    low, high = (
        dataset.action_space.low.astype(np.float32),
        dataset.action_space.high.astype(np.float32),
    )
    actor = module.Actor(
        obs_dim, act_dim, args.hidden_dims, args.actor_layernorm, low, high, bf16=args.bf16
    )
    actor.load_state_dict(ckpt["actor"])
    return actor, ckpt, dataset, args


def load_critic(ckpt, dataset, args):
    """The checkpoint's critics (EDAC's N, TD3+BC's 2), built as the run's script built them."""
    module = sys.modules[type(args).__module__]
    obs_dim, act_dim = dataset.observation_space.shape[0], dataset.action_space.shape[0]
    n = getattr(args, "num_critics", 2)
    critic = module.Critic(
        obs_dim, act_dim, args.hidden_dims, args.critic_layernorm, n, bf16=args.bf16
    )
    critic.load_state_dict(ckpt["critic"])
    return critic


@torch.no_grad()
def q_line(critic, obs, data_acts, policy_acts, low, high, ts=(0, 0.25, 0.5, 1, 1.5, 2)):
    """[(t, the members' minimum, their spread)] at a = a_data + t (a_actor - a_data), clipped to
    [low, high], each averaged over the states."""
    obs, data_acts, policy_acts = (
        torch.as_tensor(x, dtype=torch.float32) for x in (obs, data_acts, policy_acts)
    )
    low, high = torch.as_tensor(low), torch.as_tensor(high)
    rows = []
    for t in ts:
        q = critic(obs, torch.clamp(data_acts + t * (policy_acts - data_acts), low, high))
        rows.append((t, q.min(0).values.mean().item(), q.std(0, correction=0).mean().item()))
    return rows


@torch.no_grad()
def act(actor, obs):
    """The deterministic action: TD3+BC's actor is deterministic, EDAC's takes tanh of its mean."""
    obs = torch.as_tensor(obs, dtype=torch.float32)
    if "deterministic" in inspect.signature(actor.forward).parameters:
        return actor(obs, deterministic=True)[0].numpy()
    return actor(obs).numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1000, help="episode i is reset with seed + i")
    parser.add_argument(
        "--data-episodes", type=int, default=50, help="dataset episodes for the action statistics"
    )
    parser.add_argument(
        "--video", action="store_true", help="render the first episode to RUN_DIR/videos"
    )
    parser.add_argument(
        "--q-line", action="store_true", help="the critics from the data's action to the actor's"
    )
    opts = parser.parse_args()
    actor, ckpt, dataset, args = load_actor(opts.run_dir)
    mean, std = np.asarray(ckpt["obs_mean"]), np.asarray(ckpt["obs_std"])
    print(f"{opts.run_dir}: checkpoint at update {ckpt['update']} ({ckpt['phase']})")

    obs, acts = [], []
    for i, episode in enumerate(dataset.iterate_episodes()):
        if i >= opts.data_episodes:
            break
        obs.append(episode.observations[:-1]), acts.append(episode.actions)
    obs, acts = np.concatenate(obs), np.concatenate(acts)
    policy_acts = act(actor, (obs - mean) / std)
    distance = ((policy_acts - acts) ** 2).sum(1).mean()
    means = [np.array2string(a.mean(0), precision=2) for a in (policy_acts, acts)]
    print(f"on {len(obs)} dataset states: squared distance to the dataset's action {distance:.3f}")
    print(f"mean action {means[0]} (dataset {means[1]})")
    if opts.q_line:
        critic = load_critic(ckpt, dataset, args)
        box = dataset.action_space.low, dataset.action_space.high
        rows = q_line(critic, (obs - mean) / std, acts, policy_acts, *box)
        base = rows[0][1]
        print(f"the critics' minimum at the dataset's action {base:.2f} (spread {rows[0][2]:.2f})")
        steps = [f"t={t}: {m - base:+.2f} (spread {sd:.2f})" for t, m, sd in rows[1:]]
        print("toward the actor's action, a_data + t (a_actor - a_data): " + ", ".join(steps))

    env = utils.make_eval_envs(dataset, args, 1, render=opts.video).envs[0]  # the evaluation's env
    cheetah = "HalfCheetah" in env.spec.id
    for e in range(opts.episodes):
        o, _ = env.reset(seed=opts.seed + e)
        rewards, angles, done = [], [], False
        path = os.path.join(opts.run_dir, "videos", f"rollout_update_{ckpt['update']}.mp4")
        video = utils.video_writer(path, env) if opts.video and e == 0 else None
        while not done:
            o, r, terminated, truncated, _ = env.step(act(actor, ((o - mean) / std)[None])[0])
            rewards.append(r), angles.append(o[1])
            done = terminated or truncated
            if video:
                video.send(np.ascontiguousarray(env.render()))
        if video:
            video.close()
            print(f"video of episode 0: {path}")
        rewards, angles = np.array(rewards), np.array(angles)
        fifths = [round(float(part.sum())) for part in np.array_split(rewards, 5)]
        line = f"episode {e}: return {rewards.sum():.0f}, {len(rewards)} steps"
        line += f", reward per fifth {fifths}"
        if cheetah:
            flipped = np.flatnonzero(np.abs(angles) > FLIP_ANGLE)
            if len(flipped):
                line += f", on its back from step {flipped[0]}" + (
                    " to the end" if abs(angles[-1]) > FLIP_ANGLE else " (got up again)"
                )
            else:
                line += ", never on its back"
        print(line)


if __name__ == "__main__":
    main()
