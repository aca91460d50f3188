"""The plumbing that the four *_pretrain.py scripts share, and no algorithm code (no losses, returns or
networks): dataset names, loading and flattening; reference scores and evaluation (videos included); and
the run bookkeeping that is identical everywhere: flag checks, the run directory and its config.json,
checkpoint save/load over a script's `state` dict, resume, logs (eval.csv, losses.csv, status lines,
the wandb mirror), batches from one table, the --pretrain-steps auto bookkeeping and the `__main__`
error handler. Copy one script plus this file and it runs.

Command line (the "embedded" offline dataset, see README "Data"):
    python utils.py build-random hopper --steps 100000
    python utils.py list
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from dataclasses import asdict
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

# --------------------------------------------------------------------------------------------
# Dataset names
# --------------------------------------------------------------------------------------------
MUJOCO_TASKS = ("hopper", "halfcheetah", "walker2d", "ant")
MUJOCO_LEVELS = ("expert", "medium", "simple")
ADROIT_TASKS = ("pen", "door", "hammer", "relocate")
ADROIT_LEVELS = ("human", "cloned", "expert")

# D4RL-style short name -> Minari id. `<task>-random` is the dataset that `build-random` makes
# locally (Minari hosts no random sets for these tasks).
SHORT_NAMES: Dict[str, str] = {}
for _task in MUJOCO_TASKS:
    for _level in MUJOCO_LEVELS:
        SHORT_NAMES[f"{_task}-{_level}"] = f"mujoco/{_task}/{_level}-v0"
for _task in ADROIT_TASKS:
    for _level in ADROIT_LEVELS:
        SHORT_NAMES[f"{_task}-{_level}"] = f"D4RL/{_task}/{_level}-v2"
for _task in MUJOCO_TASKS + ADROIT_TASKS:
    SHORT_NAMES[f"{_task}-random"] = f"local/{_task}/random-v0"

# D4RL reference returns (d4rl/infos.py): (random, expert). Used when a dataset's metadata has none
# (Minari's mujoco/*-v0 sets carry no reference scores).
D4RL_REF_SCORES: Dict[str, Tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
    "pen": (96.262799, 3076.8331),
    "door": (-56.512833, 2880.5693),
    "hammer": (-274.856578, 12794.1348),
    "relocate": (-6.425911, 4233.8778),
}

# Gymnasium environments of each task: (env id, D4RL time limit).
TASK_ENVS: Dict[str, Tuple[str, int]] = {
    "hopper": ("Hopper-v5", 1000),
    "halfcheetah": ("HalfCheetah-v5", 1000),
    "walker2d": ("Walker2d-v5", 1000),
    "ant": ("Ant-v5", 1000),
    "pen": ("AdroitHandPen-v1", 100),
    "door": ("AdroitHandDoor-v1", 200),
    "hammer": ("AdroitHandHammer-v1", 200),
    "relocate": ("AdroitHandRelocate-v1", 200),
}


class DatasetError(RuntimeError):
    """A dataset name that cannot be resolved or a dataset that cannot be loaded."""


class ConfigError(ValueError):
    """A bad flag or run directory. The scripts report it (and DatasetError) as one `error:` line; any
    other exception, e.g. from a loss you edited, keeps its traceback."""


def resolve_dataset_id(name: str) -> str:
    """D4RL-style short name (`hopper-medium`) -> Minari id; a full id (with a `/`) passes through."""
    if "/" in name:
        return name
    if name in SHORT_NAMES:
        return SHORT_NAMES[name]
    known = ", ".join(sorted(SHORT_NAMES))
    raise DatasetError(
        f"unknown env id '{name}'. Use a short name ({known}) "
        f"or a full Minari dataset id such as 'mujoco/hopper/medium-v0' or 'local/hopper/medium-v0'."
    )


def task_of(dataset_id: str) -> Optional[str]:
    """The task ('hopper', 'pen', ...) a dataset id or short name refers to, if it is a known one."""
    for part in dataset_id.replace("-", "/").split("/"):
        if part in D4RL_REF_SCORES:
            return part
    return None


def minari_root() -> str:
    return os.environ.get("MINARI_DATASETS_PATH", os.path.join(os.path.expanduser("~"), ".minari", "datasets"))


def load_dataset(name: str, download: bool = True):
    """Load a Minari dataset by short name or id: local first, then (if `download`) Minari's hub."""
    import minari

    dataset_id = resolve_dataset_id(name)
    path = os.path.join(minari_root(), dataset_id)
    if os.path.exists(os.path.join(path, "data")):
        try:
            return minari.load_dataset(dataset_id)
        except (OSError, KeyError, ValueError) as e:  # h5py/json errors of a damaged or half-written copy
            raise unreadable_dataset(dataset_id, path, e) from e
    if dataset_id.startswith("local/") and dataset_id.endswith("/random-v0"):
        task = dataset_id.split("/")[1]
        raise DatasetError(
            f"dataset '{dataset_id}' not found at {path}. It is built locally, not downloaded: "
            f"run `python utils.py build-random {task}` (or set MINARI_DATASETS_PATH to the root holding it)."
        )
    if not download:
        raise DatasetError(f"dataset '{dataset_id}' not found at {path} and download is off.")
    try:
        minari.download_dataset(dataset_id)
        return minari.load_dataset(dataset_id)
    except Exception as e:  # network, unknown remote id, version mismatch: all end the same way
        raise DatasetError(
            f"dataset '{dataset_id}' is not available locally (searched {path}) and could not be "
            f"downloaded: {type(e).__name__}: {e}\n"
            f"Fix: on a machine with network run `minari download {dataset_id}` and copy "
            f"~/.minari/datasets/{dataset_id} to {path}, or set MINARI_DATASETS_PATH to a Minari root "
            f"that holds it (any local Minari root works, e.g. one holding datasets you built yourself), "
            f"or build a random dataset offline with `python utils.py build-random <task>`."
        ) from e


def unreadable_dataset(dataset_id: str, path: str, error: Exception) -> DatasetError:
    """The error for a dataset folder whose files cannot be read (truncated or corrupt HDF5, bad metadata)."""
    if dataset_id.startswith("local/") and dataset_id.endswith("/random-v0"):
        fix = f"rebuild it: `python utils.py build-random {dataset_id.split('/')[1]} --overwrite`"
    elif dataset_id.startswith("local/"):
        fix = "rebuild it with the tool that made it"
    else:
        fix = f"delete {path} and download it again: `minari download {dataset_id}`"
    data_file = os.path.join(path, "data", "main_data.hdf5")
    where = data_file if os.path.exists(data_file) else path
    return DatasetError(
        f"dataset '{dataset_id}': {where} cannot be read ({type(error).__name__}: {error}); "
        f"the file is damaged or incomplete (an interrupted download or build?). Fix: {fix}."
    )


def flatten_dataset(dataset) -> Dict[str, np.ndarray]:
    """Whole dataset as flat float32 arrays (one read per episode and key, no per-step Python).

    Keys: observations, actions, rewards, next_observations, terminations, truncations. The last
    step of every episode that did not terminate counts as truncated (its tail is unknown).
    """
    import gymnasium as gym

    if not isinstance(dataset.observation_space, gym.spaces.Box):
        raise DatasetError(
            f"only Box observations are supported, this dataset has {dataset.observation_space}; "
            "flatten them into a Box before training."
        )
    try:
        episodes = list(dataset.storage.get_episodes(dataset.episode_indices))
    except (OSError, KeyError) as e:  # a data file damaged after its metadata was read
        path = os.path.join(minari_root(), dataset.spec.dataset_id)
        raise unreadable_dataset(dataset.spec.dataset_id, path, e) from e
    if not episodes:
        raise DatasetError(f"dataset {dataset.spec.dataset_id} has no episodes")
    obs = [np.asarray(ep["observations"], dtype=np.float32) for ep in episodes]
    terms = [np.asarray(ep["terminations"], dtype=bool) for ep in episodes]
    truncs = [np.asarray(ep["truncations"], dtype=bool).copy() for ep in episodes]
    for te, tr in zip(terms, truncs):
        if len(te) and not te[-1]:
            tr[-1] = True
    data = {
        "observations": np.concatenate([o[:-1] for o in obs]),
        "actions": np.concatenate(
            [np.asarray(ep["actions"], dtype=np.float32).reshape(len(ep["rewards"]), -1) for ep in episodes]
        ),
        "rewards": np.concatenate([np.asarray(ep["rewards"], dtype=np.float32) for ep in episodes]),
        "next_observations": np.concatenate([o[1:] for o in obs]),
        "terminations": np.concatenate(terms).astype(np.float32),
        "truncations": np.concatenate(truncs).astype(np.float32),
    }
    for key, value in data.items():
        if not np.isfinite(value).all():
            raise DatasetError(
                f"dataset {dataset.spec.dataset_id}: {key} holds NaN or inf values; clean the dataset first"
            )
    return data


# --------------------------------------------------------------------------------------------
# Scores and evaluation
# --------------------------------------------------------------------------------------------
# The paper's Adroit protocol (Table 4): longer evaluation time limit and re-measured random score.
PAPER_PROTOCOL: Dict[str, Tuple[int, float]] = {
    "pen": (100, -162.09),
    "door": (300, -84.52),
    "hammer": (624, -856.83),
    "relocate": (527, -37.95),
}


# Training budget (total updates, pretraining updates) and score window of the paper, by task family.
ADROIT_TASKS_BUDGET = (300_000, 200_000)
DEFAULT_BUDGET = (1_000_000, 50_000)
ADROIT_SCORE_WINDOW = (200_000, 300_000)


def default_budget(task: Optional[str]) -> Tuple[int, int]:
    """(total updates, pretraining updates): Adroit 300k / 200k (paper Appendix G), else 1M / 50k."""
    return ADROIT_TASKS_BUDGET if task in ADROIT_TASKS else DEFAULT_BUDGET


def default_score_window(task: Optional[str]) -> Optional[Tuple[int, int]]:
    """The paper's Adroit window (mean over evaluations in 200k-300k updates); None elsewhere."""
    return ADROIT_SCORE_WINDOW if task in ADROIT_TASKS else None


def summarize_run(csv_path: str, window: Optional[Tuple[int, int]]) -> Dict[str, float]:
    """Final evaluation, the --final-episodes mean, and the mean normalized score over the evaluations with
    update in [start, end]."""
    import csv

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    last = rows[-1]
    summary = {
        "final_update": int(last["update"]),
        "final_return": float(last["return_mean"]),
        "final_normalized": float(last["normalized_mean"]),
    }
    final_path = os.path.join(os.path.dirname(csv_path), "final_returns.csv")
    if os.path.exists(final_path):  # --final-episodes
        with open(final_path) as f:
            scores = [float(r["normalized"]) for r in csv.DictReader(f)]
        summary.update(final_episodes=len(scores), final_episodes_normalized=float(np.mean(scores)))
    if window is not None:
        inside = [float(r["normalized_mean"]) for r in rows if window[0] <= int(r["update"]) <= window[1]]
        summary.update(
            window_start=window[0],
            window_end=window[1],
            window_evaluations=len(inside),
            window_normalized=float(np.mean(inside)) if inside else float("nan"),
        )
    with open(os.path.join(os.path.dirname(csv_path), "summary.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, list(summary))
        writer.writeheader()
        writer.writerow(summary)
    return summary


def reference_scores(dataset, protocol: str = "d4rl") -> Optional[Tuple[float, float]]:
    """(min, max) reference returns: dataset metadata, else D4RL's table, else None (raw returns only)."""
    meta = dataset.storage.metadata
    task = task_of(dataset.spec.dataset_id)
    lo, hi = meta.get("ref_min_score"), meta.get("ref_max_score")
    if lo is None or hi is None:
        if task is None:
            return None
        lo, hi = D4RL_REF_SCORES[task]
    if protocol == "paper" and task in PAPER_PROTOCOL:
        lo = PAPER_PROTOCOL[task][1]
    return float(lo), float(hi)


def eval_time_limit(dataset, protocol: str = "d4rl") -> Optional[int]:
    """The evaluation time limit a protocol sets, None to keep the dataset's eval env's: on the Adroit tasks
    `d4rl` is D4RL's (pen 100, door/hammer/relocate 200), which its reference scores were measured at (Minari's
    D4RL/pen sets evaluate for 200 steps, which inflates pen's scores), `paper` the paper's Table 4."""
    if protocol not in ("d4rl", "paper"):
        raise ValueError(f"unknown eval protocol '{protocol}': use 'd4rl' or 'paper'")
    task = task_of(dataset.spec.dataset_id)
    if protocol == "paper" and task in PAPER_PROTOCOL:
        return PAPER_PROTOCOL[task][0]
    return TASK_ENVS[task][1] if task in ADROIT_TASKS else None


def dataset_time_limit(dataset) -> Optional[int]:
    """The time limit of the dataset's own evaluation environment (its eval_env_spec, else its env_spec)."""
    meta = dataset.storage.metadata
    spec = meta.get("eval_env_spec") or meta.get("env_spec")
    spec = json.loads(spec) if isinstance(spec, str) else spec
    return spec.get("max_episode_steps") if spec else None


def normalized_score(returns, ref: Optional[Tuple[float, float]]):
    """100 (R - min) / (max - min); NaN where no reference scores are known."""
    returns = np.asarray(returns, dtype=np.float64)
    if ref is None:
        return np.full_like(returns, np.nan)
    lo, hi = ref
    return 100.0 * (returns - lo) / (hi - lo)


def print_run_header(dataset, data: Dict[str, np.ndarray], ref, protocol: str, device, run_dir: str):
    """What a run trains on and where it writes, printed at its start."""
    print(
        f"dataset {dataset.spec.dataset_id}: {len(data['rewards'])} transitions, {dataset.total_episodes} episodes; "
        f"device {device}; run dir {run_dir}"
    )
    own, limit = dataset_time_limit(dataset), eval_time_limit(dataset, protocol)
    print(
        f"evaluation ({protocol} protocol): episodes of at most {limit or own} steps; "
        + (
            f"reference scores random {ref[0]}, expert {ref[1]}"
            if ref
            else f"no reference scores for {dataset.spec.dataset_id} (not in its metadata nor in D4RL's table): "
            "raw returns only"
        )
    )
    if limit is not None and own != limit:
        print(f"the dataset's eval env stops episodes at {own} steps: overridden to {limit} ({protocol} protocol)")


def state_normalizer(observations: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(mean, std) of the dataset's observations, std + 1e-3 (TD3+BC's), applied in training and evaluation."""
    return observations.mean(0), observations.std(0) + 1e-3


def eval_seeds(seed: int, episodes: int, base: int = 1_000_000) -> list:
    """Episode i of every evaluation of a run is seeded base + seed * episodes + i: the same episodes at
    each evaluation, different ones per episode and per seed (the final evaluation: base 2_000_000)."""
    return [base + seed * episodes + i for i in range(episodes)]


def _register_env_libs(env_id: str):
    import gymnasium as gym

    if "Adroit" in env_id:
        import gymnasium_robotics

        gym.register_envs(gymnasium_robotics)


def make_eval_envs(dataset, num_envs: int, max_episode_steps: Optional[int] = None, render: bool = False):
    """A vector env of the dataset's evaluation environment (`recover_environment(eval_env=True)`); `render`:
    rgb_array rendering offscreen (MuJoCo through EGL unless MUJOCO_GL says otherwise), checked on one frame."""
    import gymnasium as gym

    if dataset.env_spec is not None:
        _register_env_libs(dataset.env_spec.id)
    kwargs = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    if render:
        if not os.environ.get("DISPLAY"):
            os.environ.setdefault("MUJOCO_GL", "egl")  # before MuJoCo is first imported, by the env below
        kwargs["render_mode"] = "rgb_array"
    try:
        envs = gym.vector.SyncVectorEnv([lambda: dataset.recover_environment(eval_env=True, **kwargs)] * num_envs)
        if render:
            envs.reset(seed=0)
            envs.envs[0].render()
    except Exception as e:  # GL libraries missing: MuJoCo raises FatalError, PyOpenGL AttributeError, ...
        if not render:
            raise
        gl = os.environ.get("MUJOCO_GL", "glfw")
        raise ConfigError(
            f"--capture-video: offscreen rendering failed (MUJOCO_GL={gl}: {type(e).__name__}: {e}). Render "
            "with EGL: MUJOCO_GL=egl, which needs the EGL library (Debian/Ubuntu: apt install libegl1), or with "
            "OSMesa: MUJOCO_GL=osmesa (apt install libosmesa6); or run without --capture-video"
        ) from e
    return envs


class VideoWriter:
    """Frames to an MP4 file as they come (H.264 through imageio-ffmpeg, whose wheel ships ffmpeg)."""

    def __init__(self, path: str, frame, fps: float):
        import imageio_ffmpeg

        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        height, width = frame.shape[:2]
        self.writer = imageio_ffmpeg.write_frames(path, (width, height), fps=fps, macro_block_size=1)
        self.writer.send(None)
        self.add(frame)

    def add(self, frame):
        self.writer.send(np.ascontiguousarray(frame))

    def close(self):
        self.writer.close()


def evaluate(
    policy: Callable[[np.ndarray], np.ndarray],
    envs,
    obs_mean: np.ndarray,
    obs_std: np.ndarray,
    seeds: Sequence[int],
    ref: Optional[Tuple[float, float]],
    video: Optional[str] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """One episode per sub-env, all in parallel; `policy` gets normalized float32 observations.

    Returns (episode returns, normalized scores). Episode i is seeded with seeds[i]. `video`: the first
    episode, from its first state to its last, rendered to that MP4 file (envs made with render=True).
    """
    n = envs.num_envs
    assert len(seeds) == n, "one seed per sub-environment"
    obs, _ = envs.reset(seed=[int(s) for s in seeds])
    writer = video and VideoWriter(video, envs.envs[0].render(), envs.envs[0].metadata.get("render_fps", 30))
    returns = np.zeros(n)
    done = np.zeros(n, dtype=bool)
    while not done.all():
        action = policy(((obs - obs_mean) / obs_std).astype(np.float32))
        obs, reward, term, trunc, _ = envs.step(action)
        if writer and not done[0]:
            writer.add(envs.envs[0].render())
        returns += np.where(done, 0.0, reward)
        done |= term | trunc
    if writer:
        writer.close()
    return returns, normalized_score(returns, ref)


class Evaluation:
    """A run's evaluations: --eval-episodes episodes of the dataset's eval env in parallel under the protocol's
    time limit, seeded the same at every call; with --capture-video the first one is rendered to
    videos/update_<N>.mp4 in the run directory."""

    def __init__(self, dataset, args, ref, obs_mean, obs_std, run_dir: str):
        self.dataset, self.seed, self.run_dir = dataset, args.seed, run_dir
        self.limit = eval_time_limit(dataset, args.eval_protocol)
        self.envs = make_eval_envs(dataset, args.eval_episodes, self.limit, render=args.capture_video)
        self.seeds, self.ref = eval_seeds(args.seed, args.eval_episodes), ref
        self.obs_mean, self.obs_std = obs_mean, obs_std
        self.videos = os.path.join(run_dir, "videos") if args.capture_video else None

    def __call__(self, policy, update: int):
        """(returns, normalized scores, the video's path or None) of one evaluation at `update`."""
        video = self.videos and os.path.join(self.videos, f"update_{update}.mp4")
        return (*evaluate(policy, self.envs, self.obs_mean, self.obs_std, self.seeds, self.ref, video), video)

    def final(self, policy, episodes: int):
        """--final-episodes: one last evaluation of that many episodes (the paper's code: 100), their own seeds,
        a row each in final_returns.csv; skipped when the file exists (a resumed run that had written it)."""
        import csv

        path = os.path.join(self.run_dir, "final_returns.csv")
        if episodes < 1 or os.path.exists(path):
            return
        envs = make_eval_envs(self.dataset, episodes, self.limit)
        seeds = eval_seeds(self.seed, episodes, base=2_000_000)
        try:
            returns, scores = evaluate(policy, envs, self.obs_mean, self.obs_std, seeds, self.ref)
        finally:
            envs.close()
        with open(path + ".tmp", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(FINAL_FIELDS)
            writer.writerows(zip(range(episodes), seeds, returns.tolist(), scores.tolist()))
        os.replace(path + ".tmp", path)
        print(
            f"final evaluation, {episodes} episodes: normalized {np.mean(scores):.1f} ± {np.std(scores):.1f} ({path})"
        )

    def close(self):
        self.envs.close()


# --------------------------------------------------------------------------------------------
# What a run writes: eval.csv, losses.csv and the lines it prints
# --------------------------------------------------------------------------------------------
EVAL_FIELDS = [
    "update",
    "phase",
    "wall_s",
    "train_s",
    "updates_per_s",
    "return_mean",
    "return_std",
    "normalized_mean",
    "normalized_std",
]
LOSS_FIELDS = ["update", "phase", "name", "value"]
FINAL_FIELDS = ["episode", "seed", "return", "normalized"]


class Plateau:
    """`--pretrain-steps auto`: when has a supervised loss converged? Fed the validation loss at every check
    (every --log-freq updates), it answers True once the best value so far improved by less than `tol`
    (relative) over the last `patience` checks, i.e. (best `patience` checks ago - best now) <= tol |best then|.
    Never before `patience` + 1 checks; the caller applies the cap. `history` is its whole state (checkpointed)."""

    def __init__(self, tol: float = 0.01, patience: int = 5, history: Optional[Sequence[float]] = None):
        self.tol, self.patience, self.history = tol, patience, list(history or [])

    def update(self, value: float) -> bool:
        if not np.isfinite(value):
            raise FloatingPointError(f"validation loss is {value}: pretraining diverged")
        self.history.append(float(value))
        if len(self.history) <= self.patience:
            return False
        best = np.minimum.accumulate(self.history)
        then, now = best[-1 - self.patience], best[-1]
        return bool(then - now <= self.tol * abs(then))


def rate(ups: float) -> str:
    """Updates/s as printed: one decimal below 100 (EDAC's 12.6), none above (TD3+BC's 187)."""
    return f"{ups:.1f}" if ups < 100 else f"{ups:.0f}"


class RunLog:
    """eval.csv (a row per evaluation), losses.csv (a row per logged value, long format: pivot on
    `name` to get columns), the progress lines and the clocks: wall-clock since the start and training
    time (evaluations excluded), both carried over a resume. Resuming at update U (`resume`: the
    checkpoint's update, wall_s and train_s) drops the rows after U, which the resumed run writes again."""

    def __init__(self, run_dir: str, total: int, resume: Optional[dict] = None, wandb=None):
        import csv

        self.wandb = wandb  # --track: every logged value and evaluation mirrored there
        resume_update = None if resume is None else resume["update"]
        self.total, self.last_score, self.ups = total, float("nan"), float("nan")
        self.start = time.time() - (resume["wall_s"] if resume else 0.0)
        self.train_s = resume["train_s"] if resume else 0.0
        self.mark, self.mark_update = time.time(), resume_update or 0
        self.paths = {"eval": os.path.join(run_dir, "eval.csv"), "losses": os.path.join(run_dir, "losses.csv")}
        for kind, fields in (("eval", EVAL_FIELDS), ("losses", LOSS_FIELDS)):
            rows = []
            if resume_update is not None and os.path.exists(self.paths[kind]):
                with open(self.paths[kind]) as f:
                    rows = [r for r in csv.DictReader(f) if int(r["update"]) <= resume_update]
            with open(self.paths[kind], "w", newline="") as f:
                writer = csv.DictWriter(f, fields)
                writer.writeheader()
                writer.writerows(rows)
            if kind == "eval" and rows:
                self.last_score = float(rows[-1]["normalized_mean"])

    def _append(self, kind: str, rows):
        import csv

        with open(self.paths[kind], "a", newline="") as f:
            csv.DictWriter(f, EVAL_FIELDS if kind == "eval" else LOSS_FIELDS).writerows(rows)

    def losses(self, losses: Dict[str, Any], update: int, phase: str, log_freq: int) -> Dict[str, float]:
        """One host sync for all losses of the interval; NaN/inf stops the run naming the loss; writes
        losses.csv and prints a status line with the interval's updates/s. Returns the values as floats."""
        import torch

        now = time.time()
        self.train_s += now - self.mark
        self.ups = ups = (update - self.mark_update) / max(now - self.mark, 1e-9)
        self.mark, self.mark_update = now, update
        names = list(losses)
        values = torch.stack([losses[k].detach().float() for k in names]).cpu().tolist() if names else []
        for name, value in zip(names, values):
            if not np.isfinite(value):
                raise FloatingPointError(
                    f"{name} is {value} at update {update} (phase {phase}; the last check passed at update "
                    f"{max(update - log_freq, 0)}). Lower --learning-rate or check the dataset for extreme values; "
                    f"--resume continues from the last checkpoint if the run saved one (--save-model)"
                )
        values = {**dict(zip(names, values)), "charts/updates_per_second": ups}
        self._append("losses", [{"update": update, "phase": phase, "name": k, "value": v} for k, v in values.items()])
        left = (self.total - update) / max(ups, 1e-9)
        shown = ", ".join(f"{k.split('/')[-1]} {v:.4g}" for k, v in values.items() if k.startswith("losses/"))
        print(
            f"[{phase} {update}/{self.total}] {rate(ups)} updates/s | {shown} | ~{left / 60:.0f} min of updates left",
            flush=True,
        )
        if self.wandb:
            self.wandb.log({**values, "charts/phase": int(phase == "finetune")}, step=update)
        return values

    def evaluation(self, update: int, phase: str, returns, scores, video: Optional[str] = None) -> dict:
        """Writes the evaluation's row to eval.csv and prints its line (call it right after `losses`)."""
        self.last_score, ups = float(np.mean(scores)), self.ups
        row = {
            "update": update,
            "phase": phase,
            "wall_s": round(time.time() - self.start, 3),
            "train_s": round(self.train_s, 3),
            "updates_per_s": round(ups, 1),
            "return_mean": float(np.mean(returns)),
            "return_std": float(np.std(returns)),
            "normalized_mean": self.last_score,
            "normalized_std": float(np.std(scores)),
        }
        self._append("eval", [row])
        if self.wandb:
            values = {"eval/return": row["return_mean"], "eval/normalized_score": row["normalized_mean"]}
            if video:  # --capture-video
                values["eval/video"] = self.wandb.Video(video, format="mp4")
            self.wandb.log(values, step=update)
        print(
            f"[{phase}] update {update}/{self.total} | {rate(ups)} updates/s | "
            f"return {row['return_mean']:.1f} ± {row['return_std']:.1f} | "
            f"normalized {self.last_score:.1f} ± {row['normalized_std']:.1f} | {row['wall_s']:.0f}s",
            flush=True,
        )
        self.mark = time.time()  # evaluation time is not training time
        return row

    def finish(self, score_window: Optional[Tuple[int, int]]) -> Dict[str, float]:
        """summary.csv (final and window scores, see summarize_run) and the closing lines of a run."""
        summary = summarize_run(self.paths["eval"], score_window)
        print(
            f"done: {self.total} updates, final normalized score {self.last_score:.1f}; results in {self.paths['eval']}"
        )
        if score_window is not None:
            print(
                f"window score, updates {score_window[0]}-{score_window[1]}: {summary['window_normalized']:.1f} "
                f"(mean of {summary['window_evaluations']} evaluations; summary.csv)"
            )
        print(
            "other data: --env-id hopper-medium (Minari, downloaded once), any Minari id, or a local Minari root "
            "via MINARI_DATASETS_PATH; see README 'Data'"
        )
        if self.wandb:
            self.wandb.run.summary.update(summary)
            self.wandb.finish()
        return summary


# --------------------------------------------------------------------------------------------
# Run bookkeeping that the four scripts share: flags, run directory, checkpoints, batches
# --------------------------------------------------------------------------------------------
def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_args(args, at_least_one=(), non_negative=(), fractions=()):
    """One ConfigError naming every bad flag, before the dataset loads: the fields all four scripts share,
    then the script's own (`at_least_one`, `non_negative`, `fractions` in [0, 1])."""
    problems = []
    for name in ("total_timesteps", "batch_size", "eval_freq", "eval_episodes", "log_freq", *at_least_one):
        if getattr(args, name) < 1:
            problems.append(f"{flag(name)} must be at least 1 (got {getattr(args, name)})")
    auto = args.pretrain_steps == "auto"
    name, steps = (
        ("--pretrain-max-steps", args.pretrain_max_steps) if auto else ("--pretrain-steps", args.pretrain_steps)
    )
    if steps < int(auto):
        problems.append(f"{name} must be >= {int(auto)} (got {steps})")
    if steps > args.total_timesteps:
        problems.append(
            f"{name} {steps} exceeds --total-timesteps {args.total_timesteps}, which counts pretraining too: "
            f"raise --total-timesteps or lower {name}"
        )
    if not args.learning_rate > 0:
        problems.append(f"--learning-rate must be > 0 (got {args.learning_rate})")
    if not args.resume and os.path.exists(args.runs_dir) and not os.path.isdir(args.runs_dir):
        problems.append(
            f"--runs-dir {args.runs_dir} is a file, not a directory: name a folder (it is created if missing)"
        )
    if not 0.0 < args.gamma <= 1.0:
        problems.append(f"--gamma must be in (0, 1] (got {args.gamma})")
    for name in ("td_lambda", "tau", *fractions):
        if not 0.0 <= getattr(args, name) <= 1.0:
            problems.append(f"{flag(name)} must be in [0, 1] (got {getattr(args, name)})")
    for name in ("pretrain_cql_weight", "final_episodes", *non_negative):
        if getattr(args, name) < 0:
            problems.append(f"{flag(name)} must be >= 0 (got {getattr(args, name)})")
    if args.score_window is not None and args.score_window[0] > args.score_window[1]:
        problems.append(f"--score-window START END needs START <= END (got {args.score_window})")
    if not args.hidden_dims or min(args.hidden_dims) < 1:
        problems.append(f"--hidden-dims needs one or more positive widths (got {args.hidden_dims})")
    if problems:
        raise ConfigError("; ".join(problems))


def check_data(args, data: Dict[str, np.ndarray]):
    """The flags that only the loaded dataset can check, before the first update."""
    n = len(data["rewards"])
    truncated_ends = int(((data["truncations"] > 0) & (data["terminations"] == 0)).sum())
    problems = []
    if args.batch_size > n:
        problems.append(f"--batch-size {args.batch_size} exceeds the dataset's {n} transitions: use at most {n}")
    if args.gamma >= 1.0 and args.mc_tail == "geometric" and truncated_ends:
        problems.append(
            f"--gamma {args.gamma} with --mc-tail geometric: {truncated_ends} episode(s) end truncated, where the "
            "tail gamma / (1 - gamma) diverges; use --mc-tail none"
        )
    if problems:
        raise ConfigError("; ".join(problems))


def load_config(run_dir: str, args_cls, script: str):
    """`--resume RUN_DIR`: the Args of that run, from its config.json, if `script` wrote it."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        raise ConfigError(
            f"--resume {run_dir}: no config.json there; pass the run directory printed at the start of the run"
        )
    with open(path) as f:
        config = json.load(f)
    written_by = config.pop("script", None)
    config.pop("pretrain_steps_chosen", None), config.pop("pretrain_converged", None)  # records of auto
    fields = set(args_cls.__dataclass_fields__)
    unknown, missing = sorted(set(config) - fields), sorted(fields - set(config) - {"resume"})
    if unknown or (written_by is not None and written_by != script):
        by = written_by or f"another script (its config has {', '.join(unknown)}, which {script} lacks)"
        fix = f"python {written_by} --resume {run_dir}" if written_by else "the script that wrote it"
        raise ConfigError(f"--resume {run_dir}: that run was written by {by}, not {script}; resume it with {fix}")
    if missing:
        raise ConfigError(
            f"--resume {run_dir}: its config.json lacks {', '.join(missing)}: an older version of {script} wrote it; "
            "resume it with that version, or start the run again"
        )
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    return args_cls(**{**config, "resume": run_dir})


def make_run_dir(args, script: str) -> str:
    """runs/{env}__{exp_name}__{seed}__{time}, with the run's config.json."""
    name = f"{args.env_id.replace('/', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = os.path.join(args.runs_dir, name)
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump({**asdict(args), "script": script}, f, indent=2)
    return run_dir


def record_config(run_dir: str, **values):
    """Adds `values` to the run's config.json (what --pretrain-steps auto chose)."""
    path = os.path.join(run_dir, "config.json")
    with open(path) as f:
        config = json.load(f)
    with open(path, "w") as f:
        json.dump({**config, **values}, f, indent=2)


def start_run(args, script: str):
    """Loads and checks the data, makes (or reopens) the run directory, seeds every RNG and picks the device;
    prints the run header. Returns (dataset, data, reference scores, run_dir, device)."""
    import torch

    dataset = load_dataset(args.env_id)
    data = flatten_dataset(dataset)
    check_data(args, data)
    ref = reference_scores(dataset, args.eval_protocol)
    run_dir = args.resume or make_run_dir(args, script)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # CUDA_VISIBLE_DEVICES= for the CPU
    print_run_header(dataset, data, ref, args.eval_protocol, device, run_dir)
    return dataset, data, ref, run_dir, device


def save_checkpoint(run_dir: str, state: dict, row: dict, args, **extra):
    """Every module's and optimizer's state_dict, the evaluation row's update, phase and clocks, the RNG
    states and `extra`, written atomically (a kill leaves the previous checkpoint intact)."""
    import torch

    ckpt = {name: module.state_dict() for name, module in state.items()}
    ckpt.update({k: row[k] for k in ("update", "phase", "wall_s", "train_s")}, args=asdict(args), **extra)
    ckpt.update(torch_rng=torch.get_rng_state(), numpy_rng=np.random.get_state(), python_rng=random.getstate())
    ckpt["cuda_rng"] = torch.cuda.get_rng_state() if torch.cuda.is_available() else None
    path = os.path.join(run_dir, "checkpoint.pt")
    torch.save(ckpt, path + ".tmp")
    os.replace(path + ".tmp", path)


def load_checkpoint(run_dir: str, state: dict, device) -> dict:
    """Loads what save_checkpoint wrote back into the modules, optimizers and RNGs; returns the checkpoint."""
    import torch

    path = os.path.join(run_dir, "checkpoint.pt")
    if not os.path.exists(path):
        raise ConfigError(
            f"--resume {run_dir}: no checkpoint.pt there (the run had no --save-model, or was stopped before its "
            "first evaluation); start it again"
        )
    ckpt = torch.load(path, map_location=device, weights_only=False)
    for name, module in state.items():
        module.load_state_dict(ckpt[name])
    torch.set_rng_state(ckpt["torch_rng"])
    np.random.set_state(ckpt["numpy_rng"])
    random.setstate(ckpt["python_rng"])
    if device.type == "cuda" and ckpt.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(ckpt["cuda_rng"])
    print(f"resuming {run_dir} at update {ckpt['update']} (settings from its config.json)")
    return ckpt


def start_wandb(args, run_dir: str):
    """--track: the run mirrored to Weights & Biases (WANDB_ENTITY, WANDB_MODE=offline work as usual)."""
    import wandb

    name = os.path.basename(run_dir)
    group = f"{args.env_id.replace('/', '-')}__{args.exp_name}"
    wandb.init(
        project=os.environ.get("WANDB_PROJECT", "first-imitate-then-improve"),
        config=asdict(args),
        dir=run_dir,
        name=name,
        id=name[-64:],
        resume="allow",
        group=group,
        save_code=True,
    )
    return wandb


def make_table(fields: Dict[str, np.ndarray], device):
    """Every per-transition field as columns of one tensor, so that a batch is a single gather.
    Returns the table and each field's width; add a field by adding an entry to `fields`."""
    import torch

    columns = [np.asarray(v, np.float32).reshape(len(v), -1) for v in fields.values()]
    table = torch.as_tensor(np.concatenate(columns, axis=1), device=device)
    return table, {name: c.shape[1] for name, c in zip(fields, columns)}


def sample_batch(table, widths: Dict[str, int], batch_size: int, rows=None):
    """Uniformly sampled transitions (of `rows` if given) as named fields; 1-wide fields come out as vectors."""
    import torch

    idx = torch.randint(table.shape[0] if rows is None else rows.shape[0], (batch_size,), device=table.device)
    return table_rows(table, widths, idx if rows is None else rows[idx])


def table_rows(table, widths: Dict[str, int], idx):
    parts = table[idx].split(list(widths.values()), dim=1)
    return {name: p.squeeze(1) if p.shape[1] == 1 else p for name, p in zip(widths, parts)}


VALIDATION_ROWS = (0.01, 5000)  # --pretrain-steps auto holds out 1% of the transitions, at most 5000


def validation_split(table, seed: int):
    """--pretrain-steps auto: the held-out rows and the rows that pretraining samples from, drawn with their own
    generator (seeded by --seed) so that the training random stream stays that of a fixed-length run."""
    import torch

    perm = torch.randperm(table.shape[0], generator=torch.Generator().manual_seed(seed)).to(table.device)
    n_val = min(VALIDATION_ROWS[1], max(1, int(table.shape[0] * VALIDATION_ROWS[0])))
    return perm[:n_val], perm[n_val:]


def report_auto_pretraining(run_dir: str, update: int, converged: dict, parts):
    """The end of --pretrain-steps auto: printed and written to config.json."""
    record_config(run_dir, pretrain_steps_chosen=update, pretrain_converged=dict(converged))
    how = ", ".join(
        f"{p} converged at {converged[p]}" if p in converged else f"{p} capped by --pretrain-max-steps" for p in parts
    )
    print(f"auto pretraining ends at update {update}: {how}", flush=True)


def load_start_config(path: str, args_cls):
    """--config PATH: the Args of a config.json (a finished run's, or hand-written with any subset of the fields;
    the fields it leaves out keep their defaults). Flags on the command line win over it."""
    if not os.path.isfile(path):
        raise ConfigError(f"--config {path}: no such file; pass a run's config.json or a JSON file of flags")
    try:
        with open(path) as f:
            config = json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--config {path}: not valid JSON ({e})") from e
    for record in ("script", "pretrain_steps_chosen", "pretrain_converged", "resume"):  # what a run adds
        config.pop(record, None)
    unknown = sorted(set(config) - set(args_cls.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"--config {path}: unknown keys {', '.join(unknown)}; see --help for the flags")
    return args_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})


def cli(main, args_cls):
    """`__main__` of every script: tyro's flags, after `--config PATH` if given; our own errors (a bad flag, a
    dataset problem, a loss that diverged) end the run with one `error:` line; any other exception, e.g. from
    a loss you edited, keeps its traceback."""
    import tyro

    argv, description = sys.argv[1:], (sys.modules["__main__"].__doc__ or "").strip()
    description += "\n\n--config PATH: start from a config.json (a run's, or hand-written); flags given here win."
    try:
        default = None
        for i, arg in enumerate(argv):
            if arg == "--config" or arg.startswith("--config="):
                path = arg.split("=", 1)[1] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else "")
                argv = argv[:i] + argv[i + (1 if "=" in arg else 2) :]
                default = load_start_config(path, args_cls)
                break
        main(tyro.cli(args_cls, args=argv, default=default, description=description))
    except (ConfigError, DatasetError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


# --------------------------------------------------------------------------------------------
# The built-in offline dataset: D4RL-style "random" data, uniform random actions
# --------------------------------------------------------------------------------------------
def build_random_dataset(task: str, steps: int = 100_000, seed: int = 0, overwrite: bool = False) -> str:
    """Collect `steps` uniform-random-action steps of `task` and write `local/<task>/random-v0`."""
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    if task not in TASK_ENVS:
        raise DatasetError(f"unknown task '{task}' for build-random; known: {', '.join(TASK_ENVS)}")
    if steps < 1:
        raise ValueError("--steps must be at least 1")
    dataset_id = f"local/{task}/random-v0"
    path = os.path.join(minari_root(), dataset_id)
    if os.path.exists(path):
        if not overwrite:
            return dataset_id
        minari.delete_dataset(dataset_id)
    env_id, time_limit = TASK_ENVS[task]
    _register_env_libs(env_id)
    env = gym.make(env_id, max_episode_steps=time_limit)
    rng = np.random.default_rng(seed)
    # All actions drawn up front; the episode loop below only steps the simulator.
    actions = rng.uniform(
        env.action_space.low, env.action_space.high, size=(steps + time_limit, env.action_space.shape[0])
    )
    actions = actions.astype(env.action_space.dtype)
    buffers, t = [], 0
    while t < steps:
        ep_seed = int(rng.integers(2**31 - 1))
        obs, _ = env.reset(seed=ep_seed)
        o, r, te, tr = [obs], [], [], []
        start = t
        while True:
            obs, reward, term, trunc, _ = env.step(actions[t])
            t += 1
            o.append(obs), r.append(reward), te.append(term), tr.append(trunc)
            if term or trunc:
                break
        buffers.append(
            EpisodeBuffer(
                id=len(buffers),
                seed=ep_seed,
                observations=np.asarray(o),
                actions=actions[start:t],
                rewards=np.asarray(r, dtype=np.float64),
                terminations=np.asarray(te),
                truncations=np.asarray(tr),
                infos={},
            )
        )
    lo, hi = D4RL_REF_SCORES[task]
    eval_env = gym.make(env_id, max_episode_steps=time_limit)
    minari.create_dataset_from_buffers(
        dataset_id,
        buffers,
        env=env,
        eval_env=eval_env,
        algorithm_name="uniform random actions",
        author="utils.py build-random",
        author_email="n/a",
        code_permalink="utils.py",
        ref_min_score=lo,
        ref_max_score=hi,
        description=f"{task}-random: uniform random actions in {env_id}, {t} steps, seed {seed}, built locally "
        "by utils.py (D4RL recipe; not the D4RL data). Reference scores are D4RL's.",
    )
    env.close(), eval_env.close()
    return dataset_id


def main(argv: Optional[Sequence[str]] = None):
    parser = argparse.ArgumentParser(description="Dataset helpers for the *_pretrain.py scripts.")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build-random", help="build local/<task>/random-v0 offline (uniform random actions)")
    build.add_argument("task", choices=sorted(TASK_ENVS))
    build.add_argument(
        "--steps", type=int, default=100_000, help="environment steps to collect (the last episode is completed)"
    )
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--overwrite", action="store_true", help="rebuild even if the dataset exists")
    sub.add_parser("list", help="list the short names and the Minari ids they map to")
    args = parser.parse_args(argv)
    if args.command == "list":
        for short, dataset_id in SHORT_NAMES.items():
            print(f"{short:22s} {dataset_id}")
        return
    dataset_id = f"local/{args.task}/random-v0"
    existed = os.path.exists(os.path.join(minari_root(), dataset_id))
    t0 = time.time()
    build_random_dataset(args.task, args.steps, args.seed, args.overwrite)
    where = os.path.join(minari_root(), dataset_id)
    if existed and not args.overwrite:
        print(f"{dataset_id} already exists at {where} (--overwrite to rebuild)")
    else:
        print(f"wrote {dataset_id} to {where} in {time.time() - t0:.1f}s")
    print(f"train on it: python td3bc_pretrain.py --env-id {args.task}-random   (or --env-id {dataset_id})")


if __name__ == "__main__":
    main()
