"""Shared fixtures: a temp Minari root holding tiny datasets built by tools/build_random.py
(real Hopper-v5 rollouts with uniform random actions), and helpers to run the scripts.

Two tiers: `python -m pytest -q -m "not slow" tests` runs the in-process tests (about a minute);
the tests marked slow start the scripts as processes (end to end, kill and resume, benchmark.sh).
"""

import inspect
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: starts a process (a script, a tool, benchmark.sh)")


def pytest_collection_modifyitems(items):
    """Every test that starts a process or runs a script end to end is in the slow tier, marked
    or not: the fast tier is the in-process tests of its parts."""
    for item in items:
        source = inspect.getsource(item.function)
        process = ("run_script(", "run_edac(", "subprocess.", "bench(")
        end_to_end = (".main(", "run_main(", "pretrain_only(")  # a whole training run in-process
        if any(call in source for call in process + end_to_end):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def minari_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("minari"))
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = root
    from tools.build_random import build_random_dataset

    build_random_dataset("hopper", steps=3000, seed=0)
    yield root
    if old is None:
        os.environ.pop("MINARI_DATASETS_PATH", None)
    else:
        os.environ["MINARI_DATASETS_PATH"] = old


def run_script(args, cwd=ROOT, env_extra=None, timeout=1800, script="td3bc_pretrain.py"):
    """Run a script as a user would; returns the CompletedProcess (stdout and stderr as text)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **(env_extra or {}))
    return subprocess.run(
        [sys.executable, os.path.join(cwd, script) if not os.path.isabs(script) else script, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_csv(run_dir, name="eval.csv"):
    import csv

    with open(os.path.join(run_dir, name)) as f:
        return list(csv.DictReader(f))


def run_dir_of(stdout):
    """The run directory a script printed at start."""
    return (
        next(line for line in stdout.splitlines() if "run dir " in line)
        .split("run dir ")[1]
        .strip()
    )


def run_main(module, tmp_path, **overrides):
    """A script's main() in this process on the tiny dataset (no compile, one evaluation episode,
    no final evaluation, small networks; EDAC: 2 critics); `overrides` win. Returns the run dir."""
    tiny = dict(env_id="hopper-random", compile=False, final_episodes=0, eval_episodes=1)
    tiny.update(runs_dir=str(tmp_path), batch_size=32, hidden_dims=(16, 16))
    if "edac" in module.__name__:
        tiny["num_critics"] = 2
    return module.main(module.Args(**{**tiny, **overrides}))


def flags(**values) -> list:
    """Keyword arguments as a command line: total_timesteps=300 -> --total-timesteps 300,
    save_model=True -> --save-model, compile=False -> --no-compile, hidden_dims=(8, 8) -> 8 8."""
    argv = []
    for key, value in values.items():
        name = key.replace("_", "-")
        if isinstance(value, bool):
            argv.append(f"--{name}" if value else f"--no-{name}")
        else:
            many = value if isinstance(value, (list, tuple)) else [value]
            argv += [f"--{name}", *map(str, many)]
    return argv


TINY = flags(
    env_id="hopper-random",
    batch_size=64,
    hidden_dims=(32, 32),
    eval_episodes=2,
    compile=False,
    final_episodes=0,
)
