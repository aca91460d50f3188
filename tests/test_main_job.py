"""The README's main-job command, and the "copy a file to hack on" use."""

import csv
import glob
import os
import re
import shutil
import subprocess

from conftest import ROOT, TINY, flags, run_script

SCALE = {
    "--steps": "2000",
    "--total-timesteps": "300",
    "--pretrain-steps": "100",
    "--eval-freq": "100",
}


def readme_main_job():
    text = open(os.path.join(ROOT, "README.md")).read()
    block = text.split("<!-- main-job -->", 1)[1]
    lines = re.search(r"```bash\n(.+?)\n```", block, re.S).group(1).strip().splitlines()
    install = "pip install -r requirements.txt && "
    assert lines[-1].startswith(install), lines
    return lines[-1][len(install) :]


def test_readme_installs_the_pinned_torch_from_the_cpu_index_first():
    """A CPU user following the quick start literally gets no CUDA: the CPU wheel of the pinned torch
    goes in first, and `pip install -r requirements.txt` then finds its pin met."""
    text = open(os.path.join(ROOT, "README.md")).read().split("<!-- main-job -->", 1)[1]
    first = re.search(r"```bash\n(.+?)\n", text).group(1)
    pin = next(
        ln for ln in open(os.path.join(ROOT, "requirements.txt")) if ln.startswith("torch==")
    )
    index = "--index-url https://download.pytorch.org/whl/cpu"
    assert first.startswith(f"pip install {pin.split()[0]} {index}"), first


def test_readme_main_job_runs_offline(tmp_path):
    command = readme_main_job()
    for flag, value in SCALE.items():  # same command, smaller numbers
        command, n = re.subn(rf"{flag} \d+", f"{flag} {value}", command)
        assert n == 1, f"{flag} not in the README command"
    shutil.copy(os.path.join(ROOT, "utils.py"), tmp_path)
    shutil.copy(os.path.join(ROOT, "td3bc_pretrain.py"), tmp_path)
    os.makedirs(tmp_path / "tools")
    shutil.copy(os.path.join(ROOT, "tools", "build_random.py"), tmp_path / "tools")
    env = dict(
        os.environ,
        MINARI_DATASETS_PATH=str(tmp_path / "minari"),
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
    )
    res = subprocess.run(
        ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "wrote local/hopper/random-v0" in res.stdout
    assert "; in runs/" in res.stdout
    rows = list(csv.DictReader(open(glob.glob(str(tmp_path / "runs" / "*" / "eval.csv"))[0])))
    assert [r["phase"] for r in rows] == ["pretrain", "finetune", "finetune"]


def test_copied_script_runs_in_an_empty_folder(minari_root, tmp_path):
    for name in ("td3bc_pretrain.py", "utils.py"):
        shutil.copy(os.path.join(ROOT, name), tmp_path)
    res = run_script(
        TINY + flags(total_timesteps=200, pretrain_steps=100, eval_freq=100),
        cwd=str(tmp_path),
        script=str(tmp_path / "td3bc_pretrain.py"),
    )
    assert res.returncode == 0, res.stderr
    assert len(glob.glob(str(tmp_path / "runs" / "*" / "eval.csv"))) == 1  # runs/ next to the copy


def test_a_renamed_copy_names_its_runs_after_itself(minari_root, tmp_path):
    shutil.copy(os.path.join(ROOT, "utils.py"), tmp_path)
    shutil.copy(os.path.join(ROOT, "td3bc_pretrain.py"), tmp_path / "my_idea.py")
    res = run_script(
        TINY + flags(total_timesteps=100, pretrain_steps=50, eval_freq=100),
        cwd=str(tmp_path),
        script=str(tmp_path / "my_idea.py"),
    )
    assert res.returncode == 0, res.stderr
    (run_dir,) = glob.glob(str(tmp_path / "runs" / "hopper-random__my_idea__1__*"))
    import json

    config = json.load(open(os.path.join(run_dir, "config.json")))
    assert (
        config["exp_name"] == "my_idea" and config["script"] == "my_idea.py"
    )  # tools/summarize.py groups by exp_name


def broken_copy(tmp_path, bug):
    """td3bc_pretrain.py copied to broken.py with `bug` as the first line of bc_loss; returns that line's number."""
    shutil.copy(os.path.join(ROOT, "utils.py"), tmp_path)
    source = open(os.path.join(ROOT, "td3bc_pretrain.py")).read()
    anchor = '    """Algorithm 1: behaviour cloning of the deterministic actor."""\n'
    assert source.count(anchor) == 1
    head, tail = source.split(anchor)
    (tmp_path / "broken.py").write_text(head + anchor + f"    {bug}\n" + tail)
    return (head + anchor).count("\n") + 1


def test_an_error_in_an_edited_loss_keeps_its_traceback(minari_root, tmp_path):
    """Only the project's own errors become one `error:` line; a bug in a loss shows its file and line,
    eager and compiled."""
    line = broken_copy(tmp_path, "obs = obs @ torch.ones(3, 4)  # a shape bug")
    args = TINY + flags(total_timesteps=20, pretrain_steps=10, eval_freq=20)
    for compile_flag in ("--no-compile", "--compile"):
        res = run_script(
            args + [compile_flag], cwd=str(tmp_path), script=str(tmp_path / "broken.py")
        )
        assert res.returncode == 1 and "Traceback" in res.stderr, res.stderr
        assert f'broken.py", line {line}, in bc_loss' in res.stderr, (
            compile_flag,
            res.stderr[-3000:],
        )
        assert "obs = obs @ torch.ones(3, 4)" in res.stderr
        assert not res.stderr.startswith("error:")
    line = broken_copy(
        tmp_path, 'raise ValueError("my own mistake")'
    )  # not mistaken for a bad flag
    res = run_script(args + ["--no-compile"], cwd=str(tmp_path), script=str(tmp_path / "broken.py"))
    assert res.returncode == 1 and f'broken.py", line {line}, in bc_loss' in res.stderr
    assert "ValueError: my own mistake" in res.stderr


def test_status_line_every_log_interval_and_losses_csv(minari_root, tmp_path):
    res = run_script(
        TINY
        + flags(
            total_timesteps=200,
            pretrain_steps=100,
            eval_freq=100,
            log_freq=50,
            runs_dir=tmp_path,
            compile=True,
        )
    )
    assert res.returncode == 0, res.stderr
    status = [
        line
        for line in res.stdout.splitlines()
        if line.startswith("[pretrain ") or line.startswith("[finetune ")
    ]
    assert [line.split("]")[0] for line in status] == [
        "[pretrain 50/100",  # each phase counts to its own end
        "[pretrain 100/100",
        "[finetune 150/200",
        "[finetune 200/200",
    ]
    warm = [line.endswith("| compiling, no estimate yet") for line in status]
    assert warm == [True, False, True, False], status  # a phase's first interval: compiling
    assert all(" updates/s |" in line and " of updates left" in line for line in status[1::2])
    assert "critic_mc" in status[0] and "actor_bc" in status[0] and "critic_td" in status[3]
    run_dir = glob.glob(str(tmp_path / "*"))[0]
    rows = list(csv.DictReader(open(os.path.join(run_dir, "losses.csv"))))
    assert {r["name"] for r in rows if r["update"] == "50"} == {
        "losses/critic_mc",
        "losses/actor_bc",
        "charts/updates_per_second",
    }
    assert {r["phase"] for r in rows if r["update"] == "200"} == {"finetune"}
    assert sorted({int(r["update"]) for r in rows}) == [50, 100, 150, 200]
