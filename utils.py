"""What the four *_pretrain.py scripts share, and no algorithm code: dataset names, loading and
flattening; reference scores and evaluation; and the least plumbing every run needs (flag
checks, config, run directory, checkpoints, the logger, batches). Copy a script with this file.
"""

import contextlib
import csv
import dataclasses
import difflib
import io
import json
import os
import random
import re
import socket
import sys
import time
from dataclasses import asdict

import gymnasium as gym
import numpy as np
import torch

# -------- Datasets --------------------------------------------------------------------------------
# task: (Gymnasium env, D4RL's time limit, D4RL's reference returns (random, expert))
TASKS = {
    "hopper": ("Hopper-v5", 1000, (-20.272305, 3234.3)),
    "halfcheetah": ("HalfCheetah-v5", 1000, (-280.178953, 12135.0)),
    "walker2d": ("Walker2d-v5", 1000, (1.629008, 4592.3)),
    "ant": ("Ant-v5", 1000, (-325.6, 3879.7)),
    "pen": ("AdroitHandPen-v1", 100, (96.262799, 3076.8331)),
    "door": ("AdroitHandDoor-v1", 200, (-56.512833, 2880.5693)),
    "hammer": ("AdroitHandHammer-v1", 200, (-274.856578, 12794.1348)),
    "relocate": ("AdroitHandRelocate-v1", 200, (-6.425911, 4233.8778)),
}
ADROIT_TASKS = ("pen", "door", "hammer", "relocate")
# The paper's Adroit protocol (Table 4): task: (evaluation time limit, re-measured random score)
PAPER_PROTOCOL = {"pen": (100, -162.09), "door": (300, -84.52), "hammer": (624, -856.83)}
PAPER_PROTOCOL["relocate"] = (527, -37.95)
# D4RL-style short name -> Minari id; `<task>-random` is built by tools/build_random.py
SHORT_NAMES = {f"{t}-random": f"local/{t}/random-v0" for t in TASKS}
for _t in TASKS:
    _adroit = _t in ADROIT_TASKS
    for _x in ("human", "cloned", "expert") if _adroit else ("expert", "medium", "simple"):
        SHORT_NAMES[f"{_t}-{_x}"] = f"D4RL/{_t}/{_x}-v2" if _adroit else f"mujoco/{_t}/{_x}-v0"


class DatasetError(RuntimeError):
    """A dataset name that cannot be resolved or a dataset that cannot be loaded."""


class ConfigError(ValueError):
    """A bad flag or run directory. `cli` prints it (and DatasetError) as one `error:` line."""


def resolve_dataset_id(name: str) -> str:
    """D4RL-style short name (`hopper-medium`) -> Minari id; a full id (with a `/`) passes."""
    if "/" in name or name in SHORT_NAMES:
        return SHORT_NAMES.get(name, name)
    close = difflib.get_close_matches(name, SHORT_NAMES, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    names = ", ".join(sorted(SHORT_NAMES))
    raise DatasetError(f"unknown env id '{name}': {hint}use a short name ({names}) or a Minari id")


def task_of(dataset_id: str):
    """The task ('hopper', 'pen', ...) of a dataset id or short name, if it is a known one."""
    return next((p for p in dataset_id.replace("-", "/").split("/") if p in TASKS), None)


def dataset_path(dataset_id: str) -> str:
    root = os.environ.get("MINARI_DATASETS_PATH", os.path.expanduser("~/.minari/datasets"))
    return os.path.join(root, dataset_id)


def load_dataset(name: str, download: bool = True):
    """A Minari dataset by short name or id: the local copy, else (`download`) Minari's hub."""
    import minari

    dataset_id = resolve_dataset_id(name)
    path = dataset_path(dataset_id)
    if os.path.exists(os.path.join(path, "data")):
        try:
            return minari.load_dataset(dataset_id)
        except (OSError, KeyError, ValueError) as e:  # a damaged or half-written copy
            raise unreadable(dataset_id, e) from e
    if dataset_id.endswith("/random-v0") and dataset_id.startswith("local/"):
        build = f"python tools/build_random.py {dataset_id.split('/')[1]}"
        raise DatasetError(f"dataset '{dataset_id}' not found at {path}: build it with `{build}`")
    if not download:
        raise DatasetError(f"dataset '{dataset_id}' not found at {path} and download is off")
    try:
        if os.environ.get("MINARI_REMOTE", "hf://").startswith("hf://"):  # offline: fail in 5 s
            hub = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1]
            socket.create_connection((hub.split("/")[0], 443), timeout=5).close()
        minari.download_dataset(dataset_id)
        return minari.load_dataset(dataset_id)
    except Exception as e:  # network, unknown remote id, version mismatch: one message
        raise DatasetError(
            f"dataset '{dataset_id}' is not available locally (searched {path}) and could not "
            f"be downloaded ({type(e).__name__}: {e}). Fix: run `minari download {dataset_id}` "
            f"where there is network and copy the folder to {path}, or set "
            "MINARI_DATASETS_PATH to a Minari root that holds it"
        ) from e


def unreadable(dataset_id: str, error: Exception) -> DatasetError:
    """The error for a dataset whose files cannot be read (a truncated HDF5, bad metadata)."""
    path = dataset_path(dataset_id)
    fix = f"delete {path} and download it again: `minari download {dataset_id}`"
    if dataset_id.startswith("local/"):
        task = dataset_id.split("/")[1]
        fix = f"rebuild it: `python tools/build_random.py {task} --overwrite`"
        fix = fix if dataset_id.endswith("/random-v0") else "rebuild it with the tool that made it"
    data_file = os.path.join(path, "data", "main_data.hdf5")
    where = data_file if os.path.exists(data_file) else path
    problem = f"{where} cannot be read ({type(error).__name__}: {error})"
    return DatasetError(f"dataset '{dataset_id}': {problem}; damaged or incomplete. Fix: {fix}")


def flatten_dataset(dataset) -> dict:
    """The dataset as flat float32 arrays, one read per episode and key; an episode's last step
    that did not terminate counts as truncated (its tail is unknown)."""
    name = dataset.spec.dataset_id
    if not isinstance(dataset.observation_space, gym.spaces.Box):
        space = dataset.observation_space
        raise DatasetError(f"{name}: only Box observations are supported, not {space}")
    try:
        episodes = list(dataset.storage.get_episodes(dataset.episode_indices))
    except (OSError, KeyError) as e:  # a data file damaged after its metadata was read
        raise unreadable(name, e) from e
    if not episodes:
        raise DatasetError(f"dataset {name} has no episodes")
    field = lambda key, dtype=np.float32: [np.asarray(ep[key], dtype) for ep in episodes]
    obs = field("observations")
    terms = field("terminations", bool)
    truncs = [t.copy() for t in field("truncations", bool)]
    for term, trunc in zip(terms, truncs):
        trunc[-1:] |= ~term[-1:]
    data = dict(observations=np.concatenate([o[:-1] for o in obs]))
    data["actions"] = np.concatenate([a.reshape(len(a), -1) for a in field("actions")])
    data["rewards"] = np.concatenate(field("rewards"))
    data["next_observations"] = np.concatenate([o[1:] for o in obs])
    data["terminations"] = np.concatenate(terms).astype(np.float32)
    data["truncations"] = np.concatenate(truncs).astype(np.float32)
    for key, value in data.items():
        if not np.isfinite(value).all():
            raise DatasetError(f"dataset {name}: {key} holds NaN or inf; clean the dataset first")
    return data


# -------- Budgets, scores and evaluation ----------------------------------------------------------
def fill_defaults(args, task, **defaults):
    """The fields left None, filled: the paper's budget for the task (Adroit: 300k updates, 200k
    pretraining, the mean score over 200k-300k, Appendix G; else 1M, 50k, none) and the script's
    own task `defaults`. Printed; the run's config.json records what ran."""
    adroit = task in ADROIT_TASKS
    total, pretrain = (300_000, 200_000) if adroit else (1_000_000, 50_000)
    cap = min(2 * pretrain, args.total_timesteps or total)
    filled = dict(total_timesteps=total, pretrain_steps=pretrain, pretrain_max_steps=cap)
    filled.update(score_window=(200_000, 300_000) if adroit else None, **defaults)
    filled = {k: v for k, v in filled.items() if getattr(args, k) is None}
    print(f"defaults for task {task}: " + ", ".join(f"{k}={v}" for k, v in filled.items()))
    return dataclasses.replace(args, **filled)


def reference_scores(dataset, protocol: str = "d4rl"):
    """(min, max) reference returns: the dataset's metadata, else D4RL's table, else None."""
    meta = dataset.storage.metadata
    task = task_of(dataset.spec.dataset_id)
    ref = (meta.get("ref_min_score"), meta.get("ref_max_score"))
    if None in ref:
        ref = TASKS[task][2] if task else None
    if ref and protocol == "paper" and task in PAPER_PROTOCOL:
        ref = (PAPER_PROTOCOL[task][1], ref[1])
    return ref and (float(ref[0]), float(ref[1]))


def eval_time_limit(dataset, protocol: str = "d4rl"):
    """The protocol's time limit (None: the eval env's own). Adroit under `d4rl`: D4RL's, where
    its reference scores were measured (Minari's pen sets say 200, not 100); `paper`: Table 4."""
    if protocol not in ("d4rl", "paper"):
        raise ValueError(f"unknown eval protocol '{protocol}': use 'd4rl' or 'paper'")
    task = task_of(dataset.spec.dataset_id)
    if protocol == "paper" and task in PAPER_PROTOCOL:
        return PAPER_PROTOCOL[task][0]
    return TASKS[task][1] if task in ADROIT_TASKS else None


def dataset_time_limit(dataset):
    """The time limit of the dataset's own evaluation environment."""
    spec = dataset.storage.metadata.get("eval_env_spec") or dataset.storage.metadata.get("env_spec")
    return json.loads(spec).get("max_episode_steps") if isinstance(spec, str) else None


def normalized_score(returns, ref):
    """100 (R - min) / (max - min); NaN where no reference scores are known."""
    returns = np.asarray(returns, dtype=np.float64)
    if ref is None:
        return np.full_like(returns, np.nan)
    return 100.0 * (returns - ref[0]) / (ref[1] - ref[0])


def state_normalizer(observations):
    """(mean, std + 1e-3) of the observations (TD3+BC's), used in training and evaluation."""
    return observations.mean(0), observations.std(0) + 1e-3


def eval_seeds(seed: int, episodes: int, base: int = 1_000_000) -> list:
    """Episode i of every evaluation is seeded base + seed * episodes + i: the same episodes at
    each evaluation, others per seed (the final evaluation: base 2_000_000)."""
    return [base + seed * episodes + i for i in range(episodes)]


def make_eval_envs(dataset, args, episodes=None, render: bool = False):
    """`episodes` (default --eval-episodes) eval envs of the dataset under the protocol's time
    limit, as one vector env; `render`: offscreen rgb_array (EGL unless MUJOCO_GL says)."""
    if dataset.env_spec is not None and "Adroit" in dataset.env_spec.id:
        import gymnasium_robotics

        gym.register_envs(gymnasium_robotics)
    limit = eval_time_limit(dataset, args.eval_protocol)
    kwargs = {} if limit is None else {"max_episode_steps": limit}
    if render:
        if not os.environ.get("DISPLAY"):
            os.environ.setdefault("MUJOCO_GL", "egl")  # before MuJoCo is first imported
        kwargs["render_mode"] = "rgb_array"
    make = lambda: dataset.recover_environment(eval_env=True, **kwargs)
    try:
        envs = gym.vector.SyncVectorEnv([make] * (episodes or args.eval_episodes))
        if render:
            envs.reset(seed=0)
            envs.envs[0].render()
    except Exception as e:  # GL missing: MuJoCo's FatalError, PyOpenGL's AttributeError, ...
        if not render:
            raise
        gl = f"MUJOCO_GL={os.environ.get('MUJOCO_GL', 'glfw')}: {type(e).__name__}: {e}"
        fix = "MUJOCO_GL=egl (apt install libegl1) or MUJOCO_GL=osmesa (apt install libosmesa6)"
        raise ConfigError(f"--capture-video: offscreen rendering failed ({gl}); use {fix}") from e
    return envs


def evaluate(policy, envs, seeds, ref, video=None):
    """(returns, normalized scores): one episode per sub-env, in parallel, episode i seeded
    seeds[i]; `policy` maps raw observations to actions. `video`: the first episode to MP4."""
    obs, _ = envs.reset(seed=[int(s) for s in seeds])
    writer = video and video_writer(video, envs.envs[0])
    returns = np.zeros(envs.num_envs)
    done = np.zeros(envs.num_envs, dtype=bool)
    while not done.all():
        obs, reward, term, trunc, _ = envs.step(policy(obs))
        if writer and not done[0]:
            writer.send(np.ascontiguousarray(envs.envs[0].render()))
        returns += np.where(done, 0.0, reward)
        done |= term | trunc
    if writer:
        writer.close()
    return returns, normalized_score(returns, ref)


def video_writer(path: str, env):
    """An MP4 writer (H.264 by imageio-ffmpeg, whose wheel ships ffmpeg) holding env's frame."""
    import imageio_ffmpeg

    os.makedirs(os.path.dirname(path), exist_ok=True)
    frame = np.ascontiguousarray(env.render())
    fps = env.metadata.get("render_fps", 30)
    writer = imageio_ffmpeg.write_frames(path, frame.shape[1::-1], fps=fps, macro_block_size=1)
    writer.send(None)
    writer.send(frame)
    return writer


def final_evaluation(policy, dataset, args, ref, run_dir: str):
    """--final-episodes: one last evaluation (the paper's code: 100 episodes), its own seeds, a
    row each in final_returns.csv; skipped if that exists (a resumed run had written it)."""
    path = os.path.join(run_dir, "final_returns.csv")
    if args.final_episodes < 1 or os.path.exists(path):
        return
    envs = make_eval_envs(dataset, args, args.final_episodes)
    seeds = eval_seeds(args.seed, args.final_episodes, base=2_000_000)
    try:
        returns, scores = evaluate(policy, envs, seeds, ref)
    finally:
        envs.close()
    rows = zip(range(len(seeds)), seeds, returns.tolist(), scores.tolist())
    write_csv(path + ".tmp", ["episode", "seed", "return", "normalized"], rows)
    os.replace(path + ".tmp", path)
    score = f"{np.mean(scores):.1f} ± {np.std(scores):.1f}"
    print(f"final evaluation, {len(seeds)} episodes: normalized {score} ({path})")


def window_score(updates, scores, window) -> float:
    """The mean score of the evaluations with update in [start, end]; NaN if none."""
    updates = np.asarray(updates)
    inside = np.asarray(scores)[(updates >= window[0]) & (updates <= window[1])]
    return float(inside.mean()) if inside.size else float("nan")


def summarize_run(run_dir: str, window) -> dict:
    """summary.csv: the last periodic evaluation (last_eval_*), the final evaluation's mean
    over --final-episodes (final_episodes_*) and the mean over --score-window (window_*)."""
    rows = read_csv(os.path.join(run_dir, "eval.csv"))
    updates = [int(r["update"]) for r in rows]
    scores = [float(r["normalized_mean"]) for r in rows]
    summary = {"last_eval_update": updates[-1], "last_eval_return": float(rows[-1]["return_mean"])}
    summary["last_eval_normalized"] = scores[-1]
    final_path = os.path.join(run_dir, "final_returns.csv")
    if os.path.exists(final_path):
        final = [float(r["normalized"]) for r in read_csv(final_path)]
        summary.update(final_episodes=len(final), final_episodes_normalized=float(np.mean(final)))
    if window is not None:
        summary.update(window_start=window[0], window_end=window[1])
        summary["window_evaluations"] = sum(window[0] <= u <= window[1] for u in updates)
        summary["window_normalized"] = window_score(updates, scores, window)
    write_csv(os.path.join(run_dir, "summary.csv"), list(summary), [summary])
    return summary


def read_csv(path: str) -> list:
    with open(path) as f:
        return list(csv.DictReader(f))


def write_csv(path: str, fields, rows, mode: str = "w"):
    """Rows (dicts, or sequences in `fields` order) to a CSV file; the header unless appending."""
    with open(path, mode, newline="") as f:
        writer = csv.writer(f)
        if mode == "w":
            writer.writerow(fields)
        writer.writerows([r[k] for k in fields] if isinstance(r, dict) else r for r in rows)


# -------- The logger: eval.csv, losses.csv, the status lines, the wandb mirror --------------------
EVAL_FIELDS = ["update", "phase", "wall_s", "train_s", "updates_per_s"]
EVAL_FIELDS += ["return_mean", "return_std", "normalized_mean", "normalized_std"]
LOSS_FIELDS = ["update", "phase", "name", "value"]


class RunLog:
    """eval.csv (a row per evaluation), losses.csv (a row per logged value), the status lines,
    two clocks (wall-clock; training time, evaluations excluded) and, with --track, wandb.
    Resuming at update U (`ckpt`) drops the rows after U, which the run then writes again."""

    def __init__(self, run_dir: str, args, ckpt=None):
        self.run_dir = run_dir
        self.args = args
        self.total = args.total_timesteps
        self.ups = float("nan")
        self.start = time.time() - (ckpt["wall_s"] if ckpt else 0.0)
        self.train_s = ckpt["train_s"] if ckpt else 0.0
        self.mark = time.time()
        self.mark_update = ckpt["update"] if ckpt else 0
        self.ends_seen = set()  # the phase ends whose first interval has been timed
        for kind, fields in (("eval", EVAL_FIELDS), ("losses", LOSS_FIELDS)):
            path = os.path.join(run_dir, f"{kind}.csv")
            rows = read_csv(path) if ckpt and os.path.exists(path) else []
            write_csv(path, fields, [r for r in rows if int(r["update"]) <= ckpt["update"]])
        self.wandb = None
        if args.track:  # WANDB_PROJECT, WANDB_ENTITY, WANDB_MODE work as usual
            import wandb

            name = os.path.basename(run_dir)
            project = os.environ.get("WANDB_PROJECT", "first-imitate-then-improve")
            group = f"{args.env_id.replace('/', '-')}__{args.exp_name}"
            config = dict(config=asdict(args), dir=run_dir, name=name, id=name[-64:], group=group)
            self.wandb = wandb
            wandb.init(project=project, resume="allow", save_code=True, **config)

    def losses(self, losses: dict, update: int, phase: str, ends):
        """One host sync for the interval's losses; NaN/inf stops the run naming the loss. The
        status line counts to the phase's end (the first of `ends` and the total not passed) and
        estimates its time left at this interval's rate, except in a phase's first interval in
        this process with --compile (torch.compile's warm-up)."""
        now = time.time()
        self.train_s += now - self.mark
        self.ups = (update - self.mark_update) / max(now - self.mark, 1e-9)
        self.mark = now
        self.mark_update = update
        values = {}
        if losses:
            stacked = torch.stack([v.detach().float() for v in losses.values()])
            values = dict(zip(losses, stacked.cpu().tolist()))
        for name, value in values.items():
            if not np.isfinite(value):
                last = update - self.args.log_freq
                checked = f"phase {phase}; the last check passed at update {last}"
                fix = "Lower --learning-rate or check the dataset; --resume continues from the "
                fix += "last checkpoint if the run saved one (--save-model)"
                raise FloatingPointError(f"{name} is {value} at update {update} ({checked}). {fix}")
        values["charts/updates_per_second"] = self.ups
        rows = [(update, phase, name, value) for name, value in values.items()]
        write_csv(os.path.join(self.run_dir, "losses.csv"), LOSS_FIELDS, rows, mode="a")
        shown = ", ".join(f"{k[7:]} {v:.4g}" for k, v in values.items() if k[:7] == "losses/")
        end = min(e for e in (*ends, self.total) if e >= update)
        left = (end - update) / max(self.ups, 1e-9)
        left = f"~{left / 60:.0f} min" if left >= 120 else f"~{left:.0f} s"
        warm = self.args.compile and end not in self.ends_seen
        left = "compiling, no estimate yet" if warm else f"{left} of updates left"
        self.ends_seen.add(end)
        status = f"{self.rate()} updates/s | {shown} | {left}"
        print(f"[{phase} {update}/{end}] {status}", flush=True)
        if self.wandb:
            self.wandb.log({**values, "charts/phase": int(phase == "finetune")}, step=update)

    def rate(self) -> str:  # EDAC's 12.6 updates/s, TD3+BC's 187
        return f"{self.ups:.{int(self.ups < 100)}f}"

    def evaluation(self, update: int, phase: str, policy, envs, ref) -> dict:
        """Evaluates `policy` (seeded the same every time; --capture-video: the first episode to
        videos/update_<update>.mp4), writes the row to eval.csv and prints it."""
        video = self.args.capture_video and f"{self.run_dir}/videos/update_{update}.mp4"
        seeds = eval_seeds(self.args.seed, envs.num_envs)
        returns, scores = evaluate(policy, envs, seeds, ref, video)
        row = dict(update=update, phase=phase, wall_s=round(time.time() - self.start, 3))
        row.update(train_s=round(self.train_s, 3), updates_per_s=round(self.ups, 1))
        row.update(return_mean=float(np.mean(returns)), return_std=float(np.std(returns)))
        row.update(normalized_mean=float(np.mean(scores)), normalized_std=float(np.std(scores)))
        write_csv(os.path.join(self.run_dir, "eval.csv"), EVAL_FIELDS, [row], mode="a")
        if self.wandb:
            values = {"eval/return": row["return_mean"]}
            values["eval/normalized_score"] = row["normalized_mean"]
            if video:
                values["eval/video"] = self.wandb.Video(video, format="mp4")
            self.wandb.log(values, step=update)
        returns = f"return {row['return_mean']:.1f} ± {row['return_std']:.1f}"
        scores = f"normalized {row['normalized_mean']:.1f} ± {row['normalized_std']:.1f}"
        status = f"{self.rate()} updates/s | {returns} | {scores} | {row['wall_s']:.0f}s"
        print(f"[{phase}] update {update}/{self.total} | {status}", flush=True)
        self.mark = time.time()  # evaluation time is not training time
        return row

    def finish(self, window):
        """summary.csv and the closing lines of a run."""
        summary = summarize_run(self.run_dir, window)
        score = f"last evaluation {summary['last_eval_normalized']:.1f} (normalized)"
        print(f"done: {self.total} updates; {score}; in {self.run_dir}")
        if window is not None:
            score = f"{summary['window_normalized']:.1f}, the mean of"
            n = summary["window_evaluations"]
            print(f"window score, updates {window[0]}-{window[1]}: {score} {n} evaluations")
        if self.wandb:
            self.wandb.run.summary.update(summary)
            self.wandb.finish()


# -------- Flags, config, run directory, checkpoints -----------------------------------------------
RULES = {  # what a flag must be, in the words of its error
    "at least 1": lambda v: v >= 1,
    ">= 0": lambda v: v >= 0,
    "> 0": lambda v: v > 0,
    "in [0, 1]": lambda v: 0 <= v <= 1,
    "in (0, 1]": lambda v: 0 < v <= 1,
}
SHARED_RULES = dict.fromkeys(["total_timesteps", "batch_size", "eval_freq"], "at least 1")
SHARED_RULES.update(eval_episodes="at least 1", log_freq="at least 1", final_episodes=">= 0")
SHARED_RULES.update(learning_rate="> 0", gamma="in (0, 1]", td_lambda="in [0, 1]", tau="in [0, 1]")


def check_args(args, rules: dict):
    """One ConfigError naming every bad flag, before the dataset loads: SHARED_RULES and the
    script's own `rules` ({field: a key of RULES}), then the checks of two flags at once."""
    problems = []
    for field, rule in {**SHARED_RULES, **rules}.items():
        if not RULES[rule](getattr(args, field)):
            name = "--" + field.replace("_", "-")
            problems.append(f"{name} must be {rule} (got {getattr(args, field)})")
    auto = args.pretrain_steps == "auto"
    name = "--pretrain-max-steps" if auto else "--pretrain-steps"
    steps = args.pretrain_max_steps if auto else args.pretrain_steps
    if steps < int(auto):
        problems.append(f"{name} must be >= {int(auto)} (got {steps})")
    if steps > args.total_timesteps:
        total = f"--total-timesteps {args.total_timesteps}, which counts pretraining too"
        fix = f"raise --total-timesteps or lower {name}"
        problems.append(f"{name} {steps} exceeds {total}: {fix}")
    if not args.resume and os.path.isfile(args.runs_dir):
        problems.append(f"--runs-dir {args.runs_dir} is a file, not a directory: name a folder")
    if args.score_window is not None and args.score_window[0] > args.score_window[1]:
        problems.append(f"--score-window START END needs START <= END (got {args.score_window})")
    if not args.hidden_dims or min(args.hidden_dims) < 1:
        problems.append(f"--hidden-dims needs positive widths (got {args.hidden_dims})")
    if problems:
        raise ConfigError("; ".join(problems))


def check_data(args, data: dict):
    """The flags that only the loaded dataset can check, before the first update."""
    n = len(data["rewards"])
    truncated = int(((data["truncations"] > 0) & (data["terminations"] == 0)).sum())
    if args.batch_size > n:
        problem = f"--batch-size {args.batch_size} exceeds the dataset's {n} transitions"
        raise ConfigError(f"{problem}: use at most {n}")
    if args.gamma >= 1.0 and args.mc_tail == "geometric" and truncated:
        problem = f"--gamma {args.gamma} with --mc-tail geometric: {truncated} episode(s) end"
        why = "truncated, where the tail gamma / (1 - gamma) diverges"
        raise ConfigError(f"{problem} {why}; use --mc-tail none")


def read_config(path: str, args_cls, script=None):
    """The Args of a config.json. `--config PATH`: any subset of the fields (a run's config
    too), the rest keep their defaults. `--resume RUN_DIR` (`script` given): that run's whole
    config, which `script` must have written."""
    file = os.path.join(path, "config.json") if script else path
    name = f"--resume {path}" if script else f"--config {path}"
    if not os.path.isfile(file):
        fix = "no such file; pass a run's config.json or a JSON file of flags"
        if script:
            fix = "no config.json there; pass the run directory printed at the start of the run"
        raise ConfigError(f"{name}: {fix}")
    try:
        with open(file) as f:
            config = json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{name}: not valid JSON ({e})") from e
    by = config.pop("script", None)
    for record in ("pretrain_steps_chosen", "pretrain_converged", "resume", "config"):
        config.pop(record, None)
    fields = set(args_cls.__dataclass_fields__)
    unknown = ", ".join(sorted(set(config) - fields))
    missing = ", ".join(sorted(fields - set(config) - {"resume", "config"}))
    if script and (by not in (None, script) or (unknown and not by)):
        fix = f"python {by} --resume {path}" if by else "the script that wrote it"
        by = by or f"another script (its config has {unknown}, which {script} lacks)"
        raise ConfigError(
            f"{name}: that run was written by {by}, not {script}; resume it with {fix}"
        )
    older = f"an older version of {script} wrote it; resume with that version, or start again"
    if script and unknown:  # flags removed since
        raise ConfigError(f"{name}: its config.json has {unknown}, which {script} lacks: {older}")
    if unknown:
        raise ConfigError(f"{name}: unknown keys {unknown}; see --help")
    if script and missing:
        raise ConfigError(f"{name}: its config.json lacks {missing}: {older}")
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    return args_cls(**config, **({"resume": path} if script else {}))


def start_run(args, script: str):
    """Loads and checks the data, makes (or reopens) the run directory with its config.json,
    seeds every RNG, picks the device and prints the run's header.
    Returns (dataset, data, reference scores, run_dir, device)."""
    if args.resume:
        lock_run_dir(args.resume)  # before the dataset loads: a live run is refused at once
    dataset = load_dataset(args.env_id)
    data = flatten_dataset(dataset)
    check_data(args, data)
    ref = reference_scores(dataset, args.eval_protocol)
    run_dir = args.resume
    if not run_dir:  # runs/{env}__{exp_name}__{seed}__{time}
        name = f"{args.env_id.replace('/', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}"
        run_dir = os.path.join(args.runs_dir, name)
        os.makedirs(run_dir, exist_ok=True)
        lock_run_dir(run_dir)
        record_config(run_dir, **asdict(args), script=script)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size = f"{len(data['rewards'])} transitions, {dataset.total_episodes} episodes"
    print(f"dataset {dataset.spec.dataset_id}: {size}; device {device}; run dir {run_dir}")
    own = dataset_time_limit(dataset)
    limit = eval_time_limit(dataset, args.eval_protocol) or own
    scores = f"reference scores random {ref[0]}, expert {ref[1]}" if ref else "raw returns only"
    protocol = f"{args.eval_protocol} protocol"
    print(f"evaluation ({protocol}): episodes of at most {limit} steps; {scores}")
    if limit != own:
        print(f"the dataset's eval env stops episodes at {own} steps: overridden ({protocol})")
    return dataset, data, ref, run_dir, device


LOCKS = {}  # run directory: its open run.lock, for this process's lifetime


def lock_run_dir(run_dir: str):
    """One writer per run directory: an OS lock on run_dir/run.lock while the process lives; the
    kernel drops it when the process ends, so a run killed with -9 resumes as it is. A run that
    ended in this process (main() called again, in a test or a notebook) hands its lock over."""
    import fcntl

    path = os.path.realpath(os.path.join(run_dir, "run.lock"))
    if path in LOCKS:
        LOCKS.pop(path).close()
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = f"process {handle.read().strip() or '?'}"
        raise ConfigError(
            f"{run_dir} is being written by {owner}: wait for it or stop it"
        ) from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    LOCKS[path] = handle


def record_config(run_dir: str, **values):
    """Adds `values` to the run's config.json (creating it)."""
    path = os.path.join(run_dir, "config.json")
    config = {}
    if os.path.exists(path):
        with open(path) as f:
            config = json.load(f)
    with open(path, "w") as f:
        json.dump({**config, **values}, f, indent=2)


def save_checkpoint(run_dir: str, state: dict, row: dict, args, **extra):
    """Every module's and optimizer's state, the evaluation row's update, phase and clocks, the
    RNG states and `extra`, written atomically (a kill leaves the previous checkpoint)."""
    ckpt = {name: module.state_dict() for name, module in state.items()}
    ckpt.update({k: row[k] for k in ("update", "phase", "wall_s", "train_s")})
    ckpt.update(args=asdict(args), **extra)
    ckpt["torch_rng"] = torch.get_rng_state()
    ckpt["numpy_rng"] = np.random.get_state()
    ckpt["python_rng"] = random.getstate()
    ckpt["cuda_rng"] = torch.cuda.get_rng_state() if torch.cuda.is_available() else None
    path = os.path.join(run_dir, "checkpoint.pt")
    torch.save(ckpt, path + ".tmp")
    os.replace(path + ".tmp", path)


def load_checkpoint(run_dir: str, state: dict, device) -> dict:
    """Loads what save_checkpoint wrote into the modules, optimizers and RNGs; returns it."""
    path = os.path.join(run_dir, "checkpoint.pt")
    if not os.path.exists(path):
        why = "the run had no --save-model, or was stopped before its first evaluation"
        raise ConfigError(f"--resume {run_dir}: no checkpoint.pt there ({why}); start it again")
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


def cli(main, args_cls):
    """`__main__` of every script: tyro's flags, over a --config file's values if one is given.
    Our own errors (bad flag, dataset, a diverged loss) end with one `error:` line; any other
    exception, e.g. from a loss you edited, keeps its traceback."""
    try:
        args = parse_flags(args_cls)
        if args.config:
            args = parse_flags(args_cls, read_config(args.config, args_cls))
        main(args)
    except (ConfigError, DatasetError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def parse_flags(args_cls, default=None):
    """tyro's parse of the command line; its boxed error becomes one ConfigError."""
    import tyro

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            description = (sys.modules["__main__"].__doc__ or "").strip()
            return tyro.cli(args_cls, default=default, description=description)
    except SystemExit as e:
        if not e.code:  # --help
            raise
        text = err.getvalue().translate(str.maketrans("─│╭╮╰╯", "-     "))  # no frame
        sections = re.split(r"(?:^|\n) *-{3,} *\n", text.split("\n", 1)[-1])  # title dropped
        problem = next((s for s in sections if s.strip()), text)
        problem = " ".join(problem.split("Got errors:")[0].split())
        hints = [s.split() for s in sections if "Perhaps you meant" in s]
        meant = [w for w in (hints[0] if hints else []) if w.startswith("--")]
        hint = f"; did you mean {' or '.join(meant[:3])}?" if meant else ""
        script = os.path.basename(sys.argv[0])
        raise ConfigError(f"{problem}{hint} (python {script} --help lists the flags)") from None


# -------- Batches, and the bookkeeping of --pretrain-steps auto -----------------------------------
def make_table(fields: dict, device):
    """Every per-transition field as columns of one tensor, so that a batch is one gather.
    Returns the table and each field's width; a new field is a new entry in `fields`."""
    columns = [np.asarray(v, np.float32).reshape(len(v), -1) for v in fields.values()]
    table = torch.as_tensor(np.concatenate(columns, axis=1), device=device)
    return table, {name: c.shape[1] for name, c in zip(fields, columns)}


def sample_batch(table, widths: dict, batch_size: int, rows=None):
    """Uniformly sampled transitions (of `rows` if given) as named fields."""
    n = table.shape[0] if rows is None else rows.shape[0]
    idx = torch.randint(n, (batch_size,), device=table.device)
    return table_rows(table, widths, idx if rows is None else rows[idx])


def table_rows(table, widths: dict, idx):
    """Rows of the table as named fields; 1-wide fields come out as vectors."""
    parts = table[idx].split(list(widths.values()), dim=1)
    return {name: p.squeeze(1) if p.shape[1] == 1 else p for name, p in zip(widths, parts)}


def validation_split(table, seed: int):
    """--pretrain-steps auto: (held-out rows, training rows), 1% of the transitions and at most
    5000 held out, by their own generator so the training stream is a fixed-length run's."""
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(table.shape[0], generator=generator).to(table.device)
    n_val = min(5000, max(1, int(table.shape[0] * 0.01)))
    return perm[:n_val], perm[n_val:]


class Plateau:
    """Has a validation loss converged? True once its best value improved by less than `tol`
    (relative) over the last `patience` checks; `history` is its state (checkpointed)."""

    def __init__(self, tol: float = 0.01, patience: int = 5, history=None):
        self.tol = tol
        self.patience = patience
        self.history = list(history or [])

    def update(self, value: float) -> bool:
        if not np.isfinite(value):
            raise FloatingPointError(f"validation loss is {value}: pretraining diverged")
        self.history.append(float(value))
        best = np.minimum.accumulate(self.history)
        if len(best) <= self.patience:
            return False
        return bool(best[-1 - self.patience] - best[-1] <= self.tol * abs(best[-1 - self.patience]))


def report_auto_pretraining(run_dir: str, update: int, converged: dict, parts):
    """The end of --pretrain-steps auto: printed and written to config.json."""
    record_config(run_dir, pretrain_steps_chosen=update, pretrain_converged=dict(converged))
    how = [f"{p} converged at {converged[p]}" for p in parts if p in converged]
    how += [f"{p} capped by --pretrain-max-steps" for p in parts if p not in converged]
    print(f"auto pretraining ends at update {update}: {', '.join(how)}", flush=True)
