"""The README's main-job command, and the "copy a file to hack on" use."""

import csv
import glob
import os
import re
import shutil
import subprocess

from conftest import ROOT, TINY, run_script

SCALE = {"--steps": "2000", "--total-timesteps": "300", "--pretrain-steps": "100", "--eval-freq": "100"}


def readme_main_job():
    text = open(os.path.join(ROOT, "README.md")).read()
    block = text.split("<!-- main-job -->", 1)[1]
    command = re.search(r"```bash\n(.+?)\n```", block, re.S).group(1).strip()
    install = "pip install -r requirements.txt && "
    assert command.startswith(install), command
    return command[len(install):]


def test_readme_main_job_runs_offline(tmp_path):
    command = readme_main_job()
    for flag, value in SCALE.items():  # same command, smaller numbers
        command, n = re.subn(rf"{flag} \d+", f"{flag} {value}", command)
        assert n == 1, f"{flag} not in the README command"
    shutil.copy(os.path.join(ROOT, "utils.py"), tmp_path)
    shutil.copy(os.path.join(ROOT, "td3bc_pretrain.py"), tmp_path)
    env = dict(os.environ, MINARI_DATASETS_PATH=str(tmp_path / "minari"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    res = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "wrote local/hopper/random-v0" in res.stdout
    assert "results in runs/" in res.stdout and "--env-id hopper-medium" in res.stdout
    rows = list(csv.DictReader(open(glob.glob(str(tmp_path / "runs" / "*" / "eval.csv"))[0])))
    assert [r["phase"] for r in rows] == ["pretrain", "finetune", "finetune"]


def test_copied_script_runs_in_an_empty_folder(minari_root, tmp_path):
    for name in ("td3bc_pretrain.py", "utils.py"):
        shutil.copy(os.path.join(ROOT, name), tmp_path)
    res = run_script(TINY + ["--total-timesteps", "200", "--pretrain-steps", "100", "--eval-freq", "100"],
                     cwd=str(tmp_path), script=str(tmp_path / "td3bc_pretrain.py"))
    assert res.returncode == 0, res.stderr
    assert len(glob.glob(str(tmp_path / "runs" / "*" / "eval.csv"))) == 1  # runs/ next to the copy


def test_a_renamed_copy_names_its_runs_after_itself(minari_root, tmp_path):
    shutil.copy(os.path.join(ROOT, "utils.py"), tmp_path)
    shutil.copy(os.path.join(ROOT, "td3bc_pretrain.py"), tmp_path / "my_idea.py")
    res = run_script(TINY + ["--total-timesteps", "100", "--pretrain-steps", "50", "--eval-freq", "100"],
                     cwd=str(tmp_path), script=str(tmp_path / "my_idea.py"))
    assert res.returncode == 0, res.stderr
    (run_dir,) = glob.glob(str(tmp_path / "runs" / "hopper-random__my_idea__1__*"))
    import json

    config = json.load(open(os.path.join(run_dir, "config.json")))
    assert config["exp_name"] == "my_idea" and config["script"] == "my_idea.py"  # tools/summarize.py groups by exp_name
