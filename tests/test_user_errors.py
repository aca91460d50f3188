"""Bad input in all four scripts: each ends with one error naming the flag (or file) and the fix."""

import importlib
import json
import os
import shutil
from dataclasses import asdict

import conftest
import numpy as np
import pytest
from conftest import TINY, flags, run_script

import utils

SCRIPTS = ["td3bc_pretrain", "edac_pretrain", "td3bc_cql_pretrain", "edac_bc_pretrain"]
MODULES = {name: importlib.import_module(name) for name in SCRIPTS}


def run_main(module, tmp_path, **overrides):  # 50 + 50 updates, one evaluation
    budget = dict(
        total_timesteps=100, pretrain_steps=50, eval_freq=100, runs_dir=str(tmp_path / "runs")
    )
    return conftest.run_main(module, tmp_path, **{**budget, **overrides})


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"learning_rate": -1.0}, "--learning-rate must be > 0 (got -1.0)"),
        (
            {"pretrain_steps": 600, "total_timesteps": 500},
            "--pretrain-steps 600 exceeds --total-timesteps 500, which counts pretraining too: raise --total-timesteps or lower --pretrain-steps",
        ),
    ],
)
def test_flags_checked_before_the_dataset_loads(script, overrides, message, tmp_path, monkeypatch):
    def no_load(*_):
        raise AssertionError("the dataset was loaded before the flags were checked")

    monkeypatch.setattr(utils, "load_dataset", no_load)
    with pytest.raises(ValueError) as e:
        run_main(MODULES[script], tmp_path, **overrides)
    assert message in str(e.value)


@pytest.mark.parametrize("script", SCRIPTS)
def test_runs_dir_naming_a_file(script, tmp_path, monkeypatch):
    monkeypatch.setattr(
        utils,
        "load_dataset",
        lambda *_: pytest.fail("dataset loaded before the flags were checked"),
    )
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("")
    with pytest.raises(
        ValueError, match=f"--runs-dir {a_file} is a file, not a directory: name a folder"
    ):
        run_main(MODULES[script], tmp_path, runs_dir=str(a_file))


@pytest.mark.parametrize("script", SCRIPTS)
def test_batch_larger_than_the_dataset(script, minari_root, tmp_path):
    with pytest.raises(
        ValueError,
        match=r"--batch-size 2000000000 exceeds the dataset's \d+ transitions: use at most \d+",
    ):
        run_main(MODULES[script], tmp_path, batch_size=2_000_000_000)
    assert not os.path.exists(tmp_path / "runs")  # refused before a run directory was made


def episodes(truncated_end):
    """Two episodes: one terminated, the second terminated or (truncated_end) cut by a time limit."""
    return {
        "rewards": np.array([1.0, 2.0, 3.0, 4.0], np.float32),
        "terminations": np.array([0, 1, 0, 0 if truncated_end else 1], np.float32),
        "truncations": np.array([0, 0, 0, 1 if truncated_end else 0], np.float32),
    }


@pytest.mark.parametrize("script", SCRIPTS)
def test_gamma_one_with_geometric_tail_only_fails_on_truncated_ends(script):
    module = MODULES[script]
    args = module.Args(gamma=1.0, mc_tail="geometric", batch_size=2)
    utils.check_data(
        args, episodes(truncated_end=False)
    )  # every episode terminates: the paper's Table 1 case
    with pytest.raises(
        ValueError,
        match="--gamma 1.0 with --mc-tail geometric: 1 episode\\(s\\) end truncated.*use --mc-tail none",
    ):
        utils.check_data(args, episodes(truncated_end=True))
    utils.check_data(
        module.Args(gamma=1.0, mc_tail="none", batch_size=2), episodes(truncated_end=True)
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_returns_with_gamma_one_and_the_default_tail(script):
    module = MODULES[script]
    data = episodes(truncated_end=False)
    if hasattr(module, "mc_returns"):
        returns = lambda d: module.mc_returns(
            d["rewards"], d["terminations"], d["truncations"], gamma=1.0
        )
    else:  # the soft returns with zero entropy are the hard returns
        returns = lambda d: module.soft_mc_returns(
            d["rewards"], np.zeros(4), d["terminations"], d["truncations"], gamma=1.0, alpha=0.5
        )
    np.testing.assert_allclose(
        returns(data), [1 + 2, 2, 3 + 4, 4]
    )  # undiscounted sums within each episode
    with pytest.raises(ValueError, match="needs gamma < 1: 1 episode\\(s\\) end truncated"):
        returns(episodes(truncated_end=True))


@pytest.mark.parametrize("reader", SCRIPTS)
def test_resume_of_another_scripts_run_names_it(reader, tmp_path):
    writer = SCRIPTS[
        (SCRIPTS.index(reader) + 2) % 4
    ]  # the hybrid of a base script, or the base of a hybrid
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = asdict(MODULES[writer].Args())
    json.dump({**config, "script": f"{writer}.py"}, open(run_dir / "config.json", "w"))
    with pytest.raises(ValueError) as e:
        utils.read_config(str(run_dir), MODULES[reader].Args, f"{reader}.py")
    assert (
        f"that run was written by {writer}.py, not {reader}.py; resume it with python {writer}.py --resume {run_dir}"
        in str(e.value)
    )
    # a config.json from before the script was recorded: the fields that give it away are named
    json.dump(config, open(run_dir / "config.json", "w"))
    extra = sorted(set(config) - set(asdict(MODULES[reader].Args())))
    if (
        extra
    ):  # (a hybrid accepts its base's fields: there only the recorded script name tells them apart)
        with pytest.raises(
            ValueError,
            match=f"written by another script \\(its config has {', '.join(extra)}, which {reader}.py lacks\\)",
        ):
            utils.read_config(str(run_dir), MODULES[reader].Args, f"{reader}.py")
    # its own runs resume
    json.dump(
        {**asdict(MODULES[reader].Args()), "script": f"{reader}.py"},
        open(run_dir / "config.json", "w"),
    )
    assert utils.read_config(str(run_dir), MODULES[reader].Args, f"{reader}.py").resume == str(
        run_dir
    )


def test_resume_of_a_run_with_a_removed_flag_says_an_older_version_wrote_it(tmp_path):
    """A run of the same script whose config has a flag removed since (EDAC's CQL weights) is an
    older version's run, not another script's."""
    config = {
        **asdict(MODULES["edac_pretrain"].Args()),
        "cql_weight": 0.0,
        "script": "edac_pretrain.py",
    }
    json.dump(config, open(tmp_path / "config.json", "w"))
    with pytest.raises(ValueError) as e:
        utils.read_config(str(tmp_path), MODULES["edac_pretrain"].Args, "edac_pretrain.py")
    assert str(e.value) == (
        f"--resume {tmp_path}: its config.json has cql_weight, which edac_pretrain.py lacks: an older "
        "version of edac_pretrain.py wrote it; resume with that version, or start again"
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_corrupt_dataset_file_is_named_with_the_fix(script, minari_root, tmp_path, monkeypatch):
    root = tmp_path / "minari"
    shutil.copytree(
        os.path.join(minari_root, "local", "hopper", "random-v0"),
        root / "local" / "hopper" / "random-v0",
    )
    data_file = root / "local" / "hopper" / "random-v0" / "data" / "main_data.hdf5"
    with open(data_file, "r+b") as f:
        f.truncate(os.path.getsize(data_file) // 2)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    with pytest.raises(utils.DatasetError) as e:
        run_main(MODULES[script], tmp_path)
    message = str(e.value)
    assert (
        f"{data_file} cannot be read (OSError: " in message and "damaged or incomplete" in message
    )
    assert "Fix: rebuild it: `python tools/build_random.py hopper --overwrite`" in message


def test_corrupt_downloaded_dataset_says_download_again(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    error = utils.unreadable("mujoco/hopper/medium-v0", OSError("truncated file"))
    path = tmp_path / "mujoco/hopper/medium-v0"
    assert (
        f"Fix: delete {path} and download it again: `minari download mujoco/hopper/medium-v0`"
        in str(error)
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_bad_input_is_one_error_line_without_traceback(script, minari_root, tmp_path):
    res = run_script(TINY + flags(learning_rate=-1, batch_size=0), script=f"{script}.py")
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1].startswith("error: ")
    assert (
        "--learning-rate must be > 0 (got -1.0)" in res.stderr
        and "--batch-size must be at least 1 (got 0)" in res.stderr
    )
    assert "Traceback" not in res.stderr


def test_a_live_run_refuses_a_second_writer(minari_root, tmp_path):
    """One writer per run directory: a --resume of a run that is still going fails at once with one
    error line naming the live process; once that process is gone (killed), the lock is gone too."""
    import subprocess
    import sys

    from conftest import ROOT

    long_run = flags(total_timesteps=10**6, eval_freq=10**6)  # no checkpoint before the kill
    command = [sys.executable, "td3bc_pretrain.py", *TINY, *long_run]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    command += flags(save_model=True, runs_dir=tmp_path)
    live = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        run_dir = (
            next(line for line in live.stdout if "run dir " in line).split("run dir ")[1].strip()
        )
        res = run_script(["--resume", run_dir])
    finally:
        live.kill()
        live.wait()
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert (
        res.stderr.strip()
        == f"error: {run_dir} is being written by process {live.pid}: wait for it or stop it"
    )
    res = run_script(
        ["--resume", run_dir]
    )  # killed before its first checkpoint: the lock went with it
    assert res.returncode == 1 and "no checkpoint.pt there" in res.stderr


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize(
    "argv,message",
    [
        (["--pretrain-steps", "abc"], "Error parsing --pretrain-steps: no type matching"),
        (["--sed", "1"], "Unrecognized options: --sed, 1; did you mean --seed?"),
        (["--pretrain-mode", "bc"], "invalid choice 'bc' for argument '--pretrain-mode'"),
        (["--gamma"], "Missing value for argument '--gamma'"),
    ],
)
def test_a_bad_flag_value_is_one_line_not_a_box(script, argv, message, monkeypatch):
    monkeypatch.setattr("sys.argv", [f"{script}.py", *argv])
    with pytest.raises(utils.ConfigError) as e:
        utils.parse_flags(MODULES[script].Args)
    text = str(e.value)
    assert message in text and f"(python {script}.py --help lists the flags)" in text
    assert "\n" not in text and not set("│─╭") & set(text) and "Got errors" not in text


def test_config_file_under_the_flags(tmp_path, monkeypatch):
    path = tmp_path / "flags.json"
    path.write_text(json.dumps({"seed": 7, "gamma": 0.9, "hidden_dims": [4, 4]}))
    monkeypatch.setattr("sys.argv", ["td3bc_pretrain.py", "--config", str(path), "--seed", "2"])
    seen = []
    utils.cli(seen.append, MODULES["td3bc_pretrain"].Args)
    assert (seen[0].seed, seen[0].gamma, seen[0].hidden_dims) == (2, 0.9, (4, 4))
