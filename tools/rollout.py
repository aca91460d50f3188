"""Watch what a checkpoint's policy does: its deterministic actor's actions on the dataset's states
(squared distance to the dataset's actions, per-dimension means), then episodes on the dataset's
evaluation env with the return, the reward of each fifth of the episode and, on HalfCheetah, the
step from which the cheetah lies on its back (torso pitch |obs[1]| > 1.5 rad) and whether it got
up again.

    python tools/rollout.py RUN_DIR [--episodes 5] [--seed 1000] [--video]

--video renders the first episode offscreen to RUN_DIR/videos/rollout_update_<N>.mp4
(MUJOCO_GL=egl).

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
