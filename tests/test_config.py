"""--config PATH: a run started from a config.json (a finished run's, or hand-written); flags given win."""

import json
import os

import pytest
from conftest import TINY, flags, read_csv, run_dir_of, run_script

SCRIPTS = ["td3bc_pretrain.py", "edac_pretrain.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_run_from_another_runs_config_trains_the_same(script, minari_root, tmp_path):
    extra = ["--num-critics", "2"] if script.startswith("edac") else []
    common = TINY + extra + flags(total_timesteps=200, pretrain_steps=100, eval_freq=100, seed=4)
    first = run_script(common + flags(runs_dir=tmp_path / "a", gamma=0.98), script=script)
    assert first.returncode == 0, first.stderr
    source = os.path.join(run_dir_of(first.stdout), "config.json")
    again = run_script(flags(config=source, runs_dir=tmp_path / "b"), script=script)
    assert again.returncode == 0, again.stderr
    a, b = run_dir_of(first.stdout), run_dir_of(again.stdout)
    assert a != b  # its own run directory
    config_a, config_b = (json.load(open(os.path.join(d, "config.json"))) for d in (a, b))
    assert config_b["config"] == source and config_b["gamma"] == 0.98  # where it came from
    assert {**config_a, "runs_dir": 0, "config": 0} == {**config_b, "runs_dir": 0, "config": 0}
    assert [r["return_mean"] for r in read_csv(a)] == [
        r["return_mean"] for r in read_csv(b)
    ]  # same seed, same run
    # flags on the command line win over the file
    third = run_script(
        [f"--config={source}", "--seed", "5", "--runs-dir", str(tmp_path / "c")], script=script
    )
    assert third.returncode == 0, third.stderr
    assert json.load(open(os.path.join(run_dir_of(third.stdout), "config.json")))["seed"] == 5


def test_hand_written_config_and_its_errors(minari_root, tmp_path):
    path = tmp_path / "mine.json"
    json.dump(
        {
            "env_id": "hopper-random",
            "total_timesteps": 100,
            "pretrain_steps": 50,
            "eval_freq": 100,
            "hidden_dims": [16, 16],
            "eval_episodes": 1,
            "compile": False,
            "final_episodes": 0,
        },
        open(path, "w"),
    )
    res = run_script(flags(config=path, runs_dir=tmp_path))
    assert res.returncode == 0, res.stderr
    assert json.load(open(os.path.join(run_dir_of(res.stdout), "config.json")))["hidden_dims"] == [
        16,
        16,
    ]
    json.dump(
        {"env_id": "hopper-random", "learning_rat": 1e-3, "anchor_weight": 1.0}, open(path, "w")
    )
    res = run_script(["--config", str(path)])
    assert (
        res.returncode == 1
        and f"--config {path}: unknown keys anchor_weight, learning_rat" in res.stderr
    )
    res = run_script(["--config", str(tmp_path / "nowhere.json")])
    assert res.returncode == 1 and "no such file" in res.stderr
    path.write_text("{not json")
    res = run_script(["--config", str(path)])
    assert res.returncode == 1 and "not valid JSON" in res.stderr
    assert "--config {None}|STR" in run_script(["--help"]).stdout  # in the options box
