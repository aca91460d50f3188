"""Both families end to end: each pretraining mode, and a run killed with -9 mid-way that resumes
(`--resume RUN_DIR`) to the same evaluations, losses and weights as a run never stopped."""

import glob
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY, flags, read_csv, run_dir_of, run_script

CASES = {  # script: (its flags, the update from which a checkpoint may be killed)
    "td3bc_pretrain.py": (flags(total_timesteps=3000, pretrain_steps=1000, eval_freq=100), 100),
    "edac_pretrain.py": (
        flags(num_critics=3, total_timesteps=1500, pretrain_steps=600, eval_freq=50),
        400,  # EDAC: past the switch from soft BC to the critics, where the soft returns are made
    ),
}


def checkpoint_update(path):
    try:
        return torch.load(path, weights_only=False)["update"]
    except Exception:  # replaced while read
        return -1


def kill_midway(script, argv, runs_dir, past):
    """Starts the run, kills it with -9 once a checkpoint at `past` or later exists; returns its
    run directory and the update of the checkpoint it left."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    command = [sys.executable, script, *argv, "--runs-dir", str(runs_dir)]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    found, deadline = [], time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        found = glob.glob(str(runs_dir / "*" / "checkpoint.pt"))
        if found and checkpoint_update(found[0]) >= past:
            break
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert found, "no checkpoint appeared"
    return os.path.dirname(found[0]), checkpoint_update(found[0])


def losses(run_dir):  # losses.csv without its clock rows
    return [r for r in read_csv(run_dir, "losses.csv") if r["name"].startswith("losses/")]


@pytest.mark.parametrize("script", CASES)
def test_resume_after_kill_matches_an_uninterrupted_run(script, minari_root, tmp_path):
    argv, past = CASES[script]
    argv = TINY + argv + flags(save_model=True, seed=5)
    total = int(argv[argv.index("--total-timesteps") + 1])
    run_dir, killed_at = kill_midway(script, argv, tmp_path / "killed", past)
    assert past <= killed_at < total, "the run was not killed mid-way"
    res = run_script(["--resume", run_dir], script=script)
    assert res.returncode == 0, res.stderr
    assert f"resuming {run_dir} at update {killed_at}" in res.stdout
    ref = run_script(argv + flags(runs_dir=tmp_path / "straight"), script=script)
    assert ref.returncode == 0, ref.stderr
    ref_dir = run_dir_of(ref.stdout)
    rows, ref_rows = read_csv(run_dir), read_csv(ref_dir)
    assert [r["update"] for r in rows] == [r["update"] for r in ref_rows]  # kept, none twice
    assert [r["return_mean"] for r in rows] == [r["return_mean"] for r in ref_rows]
    assert losses(run_dir) == losses(ref_dir) and losses(run_dir)
    a, b = (torch.load(f"{d}/checkpoint.pt", weights_only=False) for d in (run_dir, ref_dir))
    assert a["update"] == b["update"] == total
    for key in ("actor", "critic", "actor_target", "critic_target", "log_alpha"):
        if key in a:
            same = [torch.equal(a[key], b[key])] if key == "log_alpha" else None
            same = same or [torch.equal(a[key][k], b[key][k]) for k in a[key]]
            assert all(same), key


@pytest.mark.parametrize("script", CASES)
@pytest.mark.parametrize(
    "mode,pretrain", [("both", 200), ("actor", 200), ("critic", 200), ("both", 0)]
)
def test_pretrain_modes_end_to_end(script, mode, pretrain, minari_root, tmp_path):
    argv = TINY + flags(num_critics=3) if script.startswith("edac") else TINY
    argv += flags(total_timesteps=300, pretrain_steps=pretrain, pretrain_mode=mode, eval_freq=100)
    res = run_script(argv + flags(log_freq=50, save_model=True, runs_dir=tmp_path), script=script)
    assert res.returncode == 0, res.stderr
    run_dir = run_dir_of(res.stdout)
    rows = read_csv(run_dir)
    assert [int(r["update"]) for r in rows] == [100, 200, 300]
    expected = ["pretrain"] * (pretrain // 100) + ["finetune"] * (3 - pretrain // 100)
    assert [r["phase"] for r in rows] == expected
    for r in rows:
        assert np.isfinite(float(r["return_mean"])) and np.isfinite(float(r["normalized_mean"]))
        assert float(r["updates_per_s"]) > 0 and float(r["wall_s"]) > 0
    assert "[finetune] update 300/300" in res.stdout
    assert json.load(open(os.path.join(run_dir, "config.json")))["pretrain_mode"] == mode
    if script.startswith("edac"):  # soft returns exactly when the critics are pretrained
        soft = pretrain > 0 and mode != "actor"
        assert ("soft returns: alpha" in res.stdout) == soft
        ckpt = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=False)
        assert (ckpt["soft_return"] is not None) == soft
        assert "EDAC: 3 critics, eta 1.0;" in res.stdout and "eta=1.0" in res.stdout
