"""Build a D4RL-style "random" dataset offline: uniform random actions in a task's Gymnasium
environment, written as the Minari dataset `local/<task>/random-v0` under $MINARI_DATASETS_PATH
(default ~/.minari/datasets), with D4RL's reference scores. No download, no policy needed.

    python tools/build_random.py hopper --steps 100000
    python tools/build_random.py --list
"""

import argparse
import os
import sys
import time

import gymnasium as gym
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import utils  # noqa: E402


def build_random_dataset(task: str, steps: int = 100_000, seed: int = 0, overwrite=False) -> str:
    """Collect `steps` uniform-random-action steps of `task` (the last episode completed) and
    write `local/<task>/random-v0`; an existing one is kept unless `overwrite`."""
    import minari
    from minari.data_collector import EpisodeBuffer

    if task not in utils.TASKS:
        known = ", ".join(utils.TASKS)
        raise utils.DatasetError(f"unknown task '{task}' for build-random; known: {known}")
    if steps < 1:
        raise ValueError("--steps must be at least 1")
    dataset_id = f"local/{task}/random-v0"
    if os.path.exists(utils.dataset_path(dataset_id)):
        if not overwrite:
            return dataset_id
        minari.delete_dataset(dataset_id)
    env_id, time_limit, (ref_min, ref_max) = utils.TASKS[task]
    if task in utils.ADROIT_TASKS:
        import gymnasium_robotics

        gym.register_envs(gymnasium_robotics)
    env = gym.make(env_id, max_episode_steps=time_limit)
    rng = np.random.default_rng(seed)
    # all actions drawn up front; the episode loop below only steps the simulator
    shape = (steps + time_limit, env.action_space.shape[0])
    actions = rng.uniform(env.action_space.low, env.action_space.high, size=shape)
    actions = actions.astype(env.action_space.dtype)
    buffers = []
    t = 0
    while t < steps:
        episode_seed = int(rng.integers(2**31 - 1))
        obs, _ = env.reset(seed=episode_seed)
        episode = {"observations": [obs], "rewards": [], "terminations": [], "truncations": []}
        start = t
        while True:
            obs, reward, term, trunc, _ = env.step(actions[t])
            t += 1
            for key, value in zip(episode, (obs, reward, term, trunc)):
                episode[key].append(value)
            if term or trunc:
                break
        buffers.append(
            EpisodeBuffer(
                id=len(buffers),
                seed=episode_seed,
                observations=np.asarray(episode["observations"]),
                actions=actions[start:t],
                rewards=np.asarray(episode["rewards"], dtype=np.float64),
                terminations=np.asarray(episode["terminations"]),
                truncations=np.asarray(episode["truncations"]),
                infos={},
            )
        )
    eval_env = gym.make(env_id, max_episode_steps=time_limit)
    minari.create_dataset_from_buffers(
        dataset_id,
        buffers,
        env=env,
        eval_env=eval_env,
        algorithm_name="uniform random actions",
        author="tools/build_random.py",
        author_email="n/a",
        code_permalink="tools/build_random.py",
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        description=f"{task}-random: uniform random actions in {env_id}, {t} steps, seed {seed}, "
        "built locally by tools/build_random.py (D4RL's recipe; not D4RL's data). Reference "
        "scores are D4RL's.",
    )
    env.close()
    eval_env.close()
    return dataset_id


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", nargs="?", choices=sorted(utils.TASKS), help="the task to build")
    parser.add_argument("--steps", type=int, default=100_000, help="environment steps to collect")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="rebuild it if it exists")
    parser.add_argument("--list", action="store_true", help="list the short names and their ids")
    args = parser.parse_args(argv)
    if args.list:
        for short, dataset_id in utils.SHORT_NAMES.items():
            print(f"{short:22s} {dataset_id}")
        return
    if args.task is None:
        parser.error("name a task (or --list)")
    if args.steps < 1:
        parser.error(f"--steps must be at least 1 (got {args.steps})")
    dataset_id = f"local/{args.task}/random-v0"
    where = utils.dataset_path(dataset_id)
    existed = os.path.exists(where)
    start = time.time()
    build_random_dataset(args.task, args.steps, args.seed, args.overwrite)
    if existed and not args.overwrite:
        print(f"{dataset_id} already exists at {where} (--overwrite to rebuild)")
    else:
        print(f"wrote {dataset_id} to {where} in {time.time() - start:.1f}s")
    print(f"train on it: python td3bc_pretrain.py --env-id {args.task}-random")


if __name__ == "__main__":
    main()
