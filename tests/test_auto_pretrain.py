"""--pretrain-steps auto: the stopping rule (utils.Plateau) on synthetic loss sequences, end-to-end runs that
switch before the cap or at it, the record in config.json, errors, and resume in the middle of the decision."""

import csv
import importlib
import json
import os

import conftest
import numpy as np
import pytest
import torch
from conftest import read_csv

import utils

SCRIPTS = ["td3bc_pretrain", "edac_pretrain", "td3bc_cql_pretrain", "edac_bc_pretrain"]
MODULES = {name: importlib.import_module(name) for name in SCRIPTS}


def first_stop(values, tol=0.01, patience=3):
    plateau = utils.Plateau(tol, patience)
    return next((i for i, v in enumerate(values) if plateau.update(v)), None)


def test_plateau_found_where_the_loss_flattens():
    decaying = [10 * 0.5**k for k in range(8)] + [10 * 0.5**7] * 10  # halves 7 times, then flat
    # best 3 checks before index 10 is at index 7 = the flat value: improvement 0 -> stop at 10, not earlier
    assert first_stop(decaying) == 10


def test_plateau_never_before_patience_checks():
    assert first_stop([1.0] * 10, patience=4) == 4  # a flat loss stops at the 5th check, not before
    assert first_stop([1.0, 1.0], patience=4) is None


def test_plateau_slow_steady_improvement_is_not_a_plateau():
    assert (
        first_stop([100 * 0.98**k for k in range(40)], tol=0.01, patience=3) is None
    )  # 6% per 3 checks > 1%
    assert first_stop([100 * 0.98**k for k in range(40)], tol=0.1, patience=3) == 3


def test_plateau_noise_uses_the_best_so_far_and_history_resumes():
    noisy = [5.0, 4.0, 3.0, 9.0, 2.9, 8.0, 2.95, 2.99, 3.5]
    # spikes do not count: at index 5 the best is 2.9, 3 checks earlier it was 3.0 (index 2): 3.3% < 5%
    assert first_stop(noisy, tol=0.05, patience=3) == 5
    assert (
        first_stop(noisy, tol=0.03, patience=3) == 7
    )  # 3.3% > 3% at 5; at 7 nothing beat 2.9 for 3 checks
    resumed = utils.Plateau(
        0.05, 3, history=noisy[:4]
    )  # a checkpoint's history: the same answers follow
    assert [resumed.update(v) for v in noisy[4:6]] == [False, True]
    with pytest.raises(FloatingPointError, match="validation loss is nan"):
        utils.Plateau(0.01, 3).update(float("nan"))


def run_main(module, tmp_path, **overrides):  # auto, its losses checked every 50 updates
    return conftest.run_main(module, tmp_path, log_freq=50, pretrain_steps="auto", **overrides)


def rule(monkeypatch, tol, patience):
    """The scripts use utils.Plateau's rule (1% over 5 checks); a test sets another one."""
    plateau = utils.Plateau
    monkeypatch.setattr(utils, "Plateau", lambda history=None: plateau(tol, patience, history))


@pytest.mark.parametrize("script", SCRIPTS)
def test_switches_before_the_cap_and_records_it(script, minari_root, tmp_path, monkeypatch):
    rule(
        monkeypatch, 1.0, 1
    )  # every loss counts as converged after patience + 1 checks (2 checks of 50 updates)
    run_dir = run_main(
        MODULES[script], tmp_path, total_timesteps=900, pretrain_max_steps=800, eval_freq=100
    )
    config = json.load(open(os.path.join(run_dir, "config.json")))
    chosen = config["pretrain_steps_chosen"]
    assert config["pretrain_steps"] == "auto" and chosen < 800
    # TD3+BC: both losses together (2 checks); EDAC: soft BC (2 checks), then the critics (2 checks)
    assert chosen == (100 if script.startswith("td3bc") else 200)
    assert set(config["pretrain_converged"]) == {"actor", "critic"}
    phases = {int(r["update"]): r["phase"] for r in read_csv(run_dir)}
    assert phases[chosen] == "pretrain" and phases[chosen + 100] == "finetune"
    names = {r["name"] for r in csv.DictReader(open(os.path.join(run_dir, "losses.csv")))}
    assert {"validation/actor", "validation/critic"} <= names
    resumed = utils.read_config(run_dir, MODULES[script].Args, f"{script}.py")
    assert resumed.pretrain_steps == "auto"  # the records do not break resume


@pytest.mark.parametrize("script", ["td3bc_pretrain", "edac_pretrain"])
def test_cap_respected(script, minari_root, tmp_path, capsys, monkeypatch):
    rule(monkeypatch, 0.0, 1000)
    run_dir = run_main(
        MODULES[script], tmp_path, total_timesteps=400, pretrain_max_steps=300, eval_freq=100
    )
    config = json.load(open(os.path.join(run_dir, "config.json")))
    assert config["pretrain_steps_chosen"] == 300 and config["pretrain_converged"] == {}
    assert [r["phase"] for r in read_csv(run_dir)] == ["pretrain"] * 3 + ["finetune"]
    assert "auto pretraining ends at update 300" in capsys.readouterr().out


@pytest.mark.parametrize("script", ["td3bc_pretrain", "edac_pretrain"])
def test_pretrain_modes_auto(script, minari_root, tmp_path, monkeypatch):
    rule(monkeypatch, 1.0, 1)
    for mode, expected in (("actor", {"actor"}), ("critic", {"critic"})):
        run_dir = run_main(
            MODULES[script],
            tmp_path / mode,
            total_timesteps=300,
            pretrain_max_steps=250,
            eval_freq=100,
            pretrain_mode=mode,
        )
        config = json.load(open(os.path.join(run_dir, "config.json")))
        assert {k for k, v in config["pretrain_converged"].items() if v is not None} == expected
        assert config["pretrain_steps_chosen"] == 100, mode


@pytest.mark.parametrize("script", ["td3bc_pretrain", "edac_pretrain"])
def test_resume_in_the_middle_of_auto_pretraining(script, minari_root, tmp_path, monkeypatch):
    """A run stopped at its third evaluation (last checkpoint at 200, nothing decided about the critic yet) resumes
    to the same decision and the same final networks as an uninterrupted run."""
    module = MODULES[script]
    rule(monkeypatch, 0.0, 1000)
    kw = dict(total_timesteps=700, pretrain_max_steps=500, eval_freq=100, save_model=True, seed=3)
    straight = run_main(module, tmp_path / "straight", **kw)

    evaluate, calls = utils.evaluate, []

    def stop_at_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return evaluate(*a, **k)

    monkeypatch.setattr(utils, "evaluate", stop_at_third)
    with pytest.raises(KeyboardInterrupt):
        run_main(module, tmp_path / "stopped", **kw)
    monkeypatch.setattr(utils, "evaluate", evaluate)
    stopped = os.path.join(tmp_path / "stopped", os.listdir(tmp_path / "stopped")[0])
    assert "pretrain_steps_chosen" not in json.load(open(os.path.join(stopped, "config.json")))
    assert torch.load(os.path.join(stopped, "checkpoint.pt"), weights_only=False)["update"] == 200
    resumed = module.main(module.Args(resume=stopped))
    a, b = (json.load(open(os.path.join(d, "config.json"))) for d in (straight, resumed))
    assert a["pretrain_steps_chosen"] == b["pretrain_steps_chosen"] == 500
    ca, cb = (
        torch.load(os.path.join(d, "checkpoint.pt"), weights_only=False)
        for d in (straight, resumed)
    )
    assert all(torch.equal(ca["actor"][k], cb["actor"][k]) for k in ca["actor"])
    assert all(torch.equal(ca["critic"][k], cb["critic"][k]) for k in ca["critic"])
    assert [r["return_mean"] for r in read_csv(straight)] == [
        r["return_mean"] for r in read_csv(resumed)
    ]


@pytest.mark.parametrize("script", SCRIPTS)
def test_auto_errors(script, minari_root, tmp_path):
    module = MODULES[script]
    with pytest.raises(
        utils.ConfigError, match="--pretrain-max-steps 600 exceeds --total-timesteps 500"
    ):
        run_main(module, tmp_path, total_timesteps=500, pretrain_max_steps=600)
    with pytest.raises(utils.ConfigError, match="--pretrain-max-steps must be >= 1"):
        run_main(module, tmp_path, total_timesteps=500, pretrain_max_steps=0)


def test_sampling_from_rows_and_the_split():
    """sample_batch with `rows` draws only those rows (uniformly, one randint as without); the validation split is
    a partition of the table's rows."""
    table, widths, rows = torch.arange(100.0).view(100, 1), {"x": 1}, torch.arange(50, 100)
    torch.manual_seed(0)
    drawn = utils.sample_batch(table, widths, 4000, rows)["x"]
    torch.manual_seed(0)
    assert torch.equal(drawn, rows[torch.randint(50, (4000,))].float())
    assert set(drawn.long().tolist()) == set(range(50, 100))
    val, train = utils.validation_split(table, seed=1)
    assert (
        len(val) == 1 and len(train) == 99
    )  # 1% held out and len(set(val.tolist()) | set(train.tolist())) == 100
    assert np.all(np.sort(np.concatenate([val.numpy(), train.numpy()])) == np.arange(100))
