"""benchmark.sh (dry run, skip/resume logic) and tools/summarize.py on synthetic runs computed by hand."""

import csv
import glob
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import summarize  # noqa: E402


def write_run(
    root, name, pretrain_steps, seed, scores, walls, window=(200, 300), algo="td3bc_pretrain"
):
    run_dir = os.path.join(root, name, "run")
    os.makedirs(run_dir)
    config = {
        "env_id": "local/hopper/medium-v0",
        "exp_name": algo,
        "pretrain_steps": pretrain_steps,
        "seed": seed,
        "score_window": list(window),
    }
    json.dump(config, open(os.path.join(run_dir, "config.json"), "w"))
    with open(os.path.join(run_dir, "eval.csv"), "w") as f:
        f.write(
            "update,phase,wall_s,train_s,updates_per_s,return_mean,return_std,normalized_mean,normalized_std\n"
        )
        for i, (score, wall) in enumerate(zip(scores, walls)):
            f.write(f"{100 * (i + 1)},finetune,{wall},{wall},1,{score},0,{score},0\n")
    open(os.path.join(run_dir, "summary.csv"), "w").write(
        f"final_update\n{100 * len(scores)}\n"
    )  # finished


@pytest.fixture
def synthetic(tmp_path):
    root = str(tmp_path / "runs")
    write_run(root, "s1", 0, 1, [0, 10, 20, 40], [10, 20, 30, 40])
    write_run(root, "s2", 0, 2, [0, 10, 20, 40], [10, 20, 30, 40])
    write_run(root, "p1", 5000, 1, [10, 40, 40, 40], [12, 24, 36, 48])
    write_run(root, "p2", 5000, 2, [10, 30, 40, 40], [12, 24, 36, 48])
    return root


def test_efficiency_ratios_by_hand(synthetic):
    groups = summarize.group(summarize.load_runs(synthetic))
    e = summarize.efficiency(groups)[("local/hopper/medium-v0", "td3bc_pretrain")]
    # threshold 0.9 * 40 = 36; pretrained seed-mean [10, 35, 40, 40] reaches it at update 300 (wall 36),
    # scratch [0, 10, 20, 40] at update 400 (wall 40)
    assert e["threshold"] == pytest.approx(36.0)
    assert (e["pretrained_updates"], e["scratch_updates"]) == (300, 400)
    assert e["update_ratio"] == pytest.approx(0.75) and e["wall_ratio"] == pytest.approx(0.9)


def test_table_and_window_scores(synthetic, tmp_path):
    summarize.main([synthetic, "--out", str(tmp_path / "out")])
    table = open(tmp_path / "out" / "summary.md").read()
    # pretrained window [200, 300]: seed 1 mean(40, 40) = 40, seed 2 mean(30, 40) = 35 -> 37.5 +- 2.5
    assert (
        "| local/hopper/medium-v0 | td3bc_pretrain | yes | 2 | 40.0 ± 0.0 | 37.5 ± 2.5 |" in table
    )
    assert "| local/hopper/medium-v0 | td3bc_pretrain | no | 2 | 40.0 ± 0.0 | 15.0 ± 0.0 |" in table
    assert "300 / 400 (0.75)" in table and "36s / 40s (0.90)" in table
    assert os.path.getsize(tmp_path / "out" / "local-hopper-medium-v0__td3bc_pretrain.png") > 1000


def test_together_plot(synthetic, tmp_path):
    summarize.main([synthetic, "--out", str(tmp_path / "out"), "--together"])
    assert os.path.getsize(tmp_path / "out" / "local-hopper-medium-v0__together.png") > 1000
    summarize.main([synthetic, "--out", str(tmp_path / "plain")])
    assert not os.path.exists(tmp_path / "plain" / "local-hopper-medium-v0__together.png")


def test_summarize_without_runs_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match="no finished runs"):
        summarize.main([str(tmp_path)])


def test_two_grids_are_summarized_as_one_and_overlaps_refused(synthetic, tmp_path):
    """Figure 2's rows from two profiles (TD3+BC's grid, EDAC's): `benchmark.sh summarize A B`
    writes one table and one figure to A from both grids' runs; a run in both is refused."""
    edac = tmp_path / "edac"
    write_run(str(edac / "runs"), "s1", 0, 1, [0, 5, 10, 20], [1, 2, 3, 4], algo="edac_pretrain")
    write_run(
        str(edac / "runs"), "p1", 200, 1, [10, 20, 20, 20], [1, 2, 3, 4], algo="edac_pretrain"
    )
    grid = tmp_path  # synthetic is tmp_path / "runs": a grid's BENCH_OUT
    res = bench("summarize", str(grid), str(edac))
    assert res.returncode == 0, res.stderr
    table = open(grid / "figure2_table.md").read().splitlines()
    assert [line.split(" | ")[1] for line in table[2:]] == ["td3bc_pretrain", "edac_pretrain"]
    assert "20.0 / 20.0 | 1 / 1 |" in table[3]  # EDAC's row from the second grid's runs alone
    assert not os.path.exists(edac / "figure2_table.md")  # written to the first grid only
    assert os.path.getsize(grid / "figure2_updates.png") > 1000
    one = [str(edac / "runs" / "s1"), "--figure2", "--allow-dips", "1", "--reps", "10"]
    summarize.main([*one, "--no-plots", "--out", str(tmp_path / "one")])  # a scratch run alone
    assert "(1 evaluation(s) below it allowed)" in open(tmp_path / "one" / "summary.md").read()
    write_run(str(edac / "runs"), "copy", 5000, 1, [10, 40, 40, 40], [1, 2, 3, 4])
    with pytest.raises(
        SystemExit, match="two finished runs of local/hopper/medium-v0 td3bc_pretrain"
    ):
        summarize.main([synthetic, str(edac / "runs"), "--no-plots"])
    res = bench("summarize", str(grid), str(tmp_path / "nowhere"))
    assert res.returncode == 2 and "no runs/ folder in" in res.stderr


def bench(*args, env=None, timeout=1800):
    return subprocess.run(
        ["bash", os.path.join(ROOT, "benchmark.sh"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=dict(os.environ, **(env or {})),
        timeout=timeout,
    )


def test_quick_dry_run_lists_the_grid(tmp_path):
    res = bench("quick", "--dry-run", env={"BENCH_OUT": str(tmp_path), "BENCH_JOBS": "2"})
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stdout.splitlines() if line.startswith("would run:")]
    assert len(lines) == 4  # 1 dataset x 2 scripts x 1 seed x {pretrained, scratch}
    assert sum("--pretrain-steps 0 " in line for line in lines) == 2
    assert all(
        line.startswith("would run: OMP_NUM_THREADS=1 python ") and "--save-model" in line
        for line in lines
    )


def test_rerun_skips_finished_and_resumes_interrupted(tmp_path):
    env = {"BENCH_OUT": str(tmp_path), "BENCH_DATASETS": "hopper-random", "BENCH_JOBS": "1"}
    runs = tmp_path / "runs"
    done = runs / "hopper-random__td3bc_pretrain__pretrained__1" / "x"
    done.mkdir(parents=True)
    (done / "summary.csv").write_text("final_update\n1\n")
    half = runs / "hopper-random__td3bc_pretrain__scratch__1" / "y"
    half.mkdir(parents=True)
    (half / "checkpoint.pt").write_text("")
    res = bench("quick", "--dry-run", env=env)
    assert "done already: hopper-random__td3bc_pretrain__pretrained__1" in res.stdout
    assert f"python td3bc_pretrain.py --resume {half}" in res.stdout
    assert "OMP_NUM_THREADS" not in res.stdout  # one job: torch keeps its threads


def test_adroit_and_paper_profiles_and_usage():
    res = bench(
        "adroit",
        "--dry-run",
        env={"BENCH_DATASETS": "pen-human", "BENCH_SEEDS": "1", "BENCH_OUT": "/tmp/x"},
    )
    lines = [line for line in res.stdout.splitlines() if line.startswith("would run:")]
    assert len(lines) == 8 and all(
        "--eval-protocol paper --eval-freq 10000" in line for line in lines
    )
    res = bench("paper", "--dry-run", env={"BENCH_OUT": "/tmp/x"})
    assert (
        len([line for line in res.stdout.splitlines() if line.startswith("would run:")])
        == 3 * 2 * 3 * 2
    )
    assert bench("nope").returncode == 2
    res = bench("speed", "--dry-run")
    assert "tools/speed_reference.py --algo edac --num-critics 50" in res.stdout


def test_figure2_profile_budgets():
    """36 runs: 3 datasets x 2 scripts x 3 seeds x {pretrained, scratch}, TD3+BC 300k (50k pretraining), EDAC
    N=10 60k (20k pretraining); then 6 EDAC+BC runs, pretrained, seeds 1 2, EDAC's budget."""
    res = bench("figure2", "--dry-run", env={"BENCH_OUT": "/tmp/x"})
    lines = [line for line in res.stdout.splitlines() if line.startswith("would run:")]
    assert len(lines) == 42
    td3, edac = (
        [x for x in lines if "td3bc_pretrain.py" in x],
        [x for x in lines if "edac_pretrain.py" in x],
    )
    remedy = [x for x in lines if "edac_bc_pretrain.py" in x]
    assert len(td3) == len(edac) == 18 and len(remedy) == 6 and lines[36:] == remedy
    assert all("--total-timesteps 300000" in x and "--eval-freq 5000" in x for x in td3)
    assert all(
        "--total-timesteps 60000" in x and "--num-critics 10 --eval-freq 2000 --bf16" in x
        for x in edac + remedy
    )
    assert (
        sum("--pretrain-steps 50000" in x for x in td3)
        == sum("--pretrain-steps 20000" in x for x in edac)
        == 9
    )
    assert (
        all("--pretrain-steps 20000" in x for x in remedy)
        and sum("--seed 2 " in x for x in remedy) == 3
    )
    only = bench(
        "figure2",
        "--dry-run",
        env={
            "BENCH_OUT": "/tmp/x",
            "BENCH_SCRIPTS": "edac_bc_pretrain",
            "BENCH_REMEDY_SEEDS": "5",
            "BENCH_DATASETS": "hopper-medium",
        },
    )
    lines = [line for line in only.stdout.splitlines() if line.startswith("would run:")]
    assert len(lines) == 1 and "edac_bc_pretrain.py --env-id hopper-medium --seed 5 " in lines[0]
    assert "datasets: hopper-medium; edac_bc_pretrain: seeds 5, pretrained only\n" in only.stdout
    assert "scratch 1 2 3; edac_bc_pretrain: seeds 1 2, pretrained only\n" in res.stdout
    res = bench(
        "paper", "--dry-run", env={"BENCH_OUT": "/tmp/x", "BENCH_SCRIPTS": "edac_bc_pretrain"}
    )
    assert res.returncode == 2 and "'edac_bc_pretrain' is not in the paper profile" in res.stderr


def test_the_d4rl_made_data_profiles():
    """figure2-v1: TD3+BC at the authors' budgets (hopper, walker2d 500k; halfcheetah 300k), 3 seeds
    x {pretrained, scratch}; edac-switch-v1: EDAC 20k + 20k, pretrained seeds 2 3, scratch seed 1,
    EDAC+BC seed 1 (an empty seed list runs none); appendix-e-v1: the medium-replay sets, 300k, 1 seed each way."""
    runs = lambda res: [x for x in res.stdout.splitlines() if x.startswith("would run:")]
    lines = runs(bench("figure2-v1", "--dry-run", env={"BENCH_OUT": "/tmp/x"}))
    assert len(lines) == 18 and all(
        "td3bc_pretrain.py" in x and "--eval-freq 5000" in x for x in lines
    )
    for x in lines:
        total = 300000 if "halfcheetah" in x else 500000
        assert "local/" in x and "medium-v1" in x and f"--total-timesteps {total} " in x
    assert (
        sum("--pretrain-steps 50000" in x for x in lines)
        == sum("--pretrain-steps 0 " in x for x in lines)
        == 9
    )
    lines = runs(bench("edac-switch-v1", "--dry-run", env={"BENCH_OUT": "/tmp/x"}))
    assert len(lines) == 12 and all(
        "--num-critics 10 --eval-freq 1000 --bf16 --total-timesteps 40000" in x for x in lines
    )
    edac = [x for x in lines if "edac_pretrain.py" in x]
    assert sorted(("--pretrain-steps 0 " in x, x.split("--seed ")[1][0]) for x in edac) == sorted(
        [(True, "1"), (False, "2"), (False, "3")] * 3
    )
    remedy = [x for x in lines if "edac_bc_pretrain.py" in x]
    assert len(remedy) == 3 and all(
        "--seed 1 " in x and "--pretrain-steps 20000" in x for x in remedy
    )
    arm = {"BENCH_SCRATCH_SEEDS": "", "BENCH_REMEDY_SEEDS": "", "BENCH_PRETRAIN": "50000"}
    res = bench("edac-switch-v1", "--dry-run", env={"BENCH_OUT": "/tmp/x", **arm})
    lines = runs(res)
    assert len(lines) == 6 and all(
        "edac_pretrain.py" in x and "--pretrain-steps 50000" in x for x in lines
    )
    assert "seeds: pretrained 2 3, scratch none; edac_bc_pretrain: seeds none," in res.stdout
    lines = runs(bench("appendix-e-v1", "--dry-run", env={"BENCH_OUT": "/tmp/x"}))
    assert len(lines) == 6 and all(
        "medium-replay-v1" in x and "--total-timesteps 300000" in x for x in lines
    )


def test_scripts_total_and_pretrain_overrides():
    env = {
        "BENCH_OUT": "/tmp/x",
        "BENCH_DATASETS": "local/hopper/medium-v0",
        "BENCH_SCRIPTS": "td3bc_pretrain",
        "BENCH_TOTAL": "100000",
        "BENCH_PRETRAIN": "20000",
        "BENCH_JOBS": "2",
    }
    res = bench("paper", "--dry-run", env=env)
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stdout.splitlines() if line.startswith("would run:")]
    assert len(lines) == 3 * 2 and all(
        "python td3bc_pretrain.py " in line for line in lines
    )  # 3 seeds x 2 variants
    assert all(
        line.count("--total-timesteps") == 1 and "--total-timesteps 100000 " in line
        for line in lines
    )
    assert (
        sum("--pretrain-steps 20000 " in line for line in lines) == 3
        and sum("--pretrain-steps 0 " in line for line in lines) == 3
    )
    # without overrides the paper profile keeps its budget
    res = bench(
        "paper", "--dry-run", env={"BENCH_OUT": "/tmp/x", "BENCH_SCRIPTS": "edac_pretrain.py"}
    )
    lines = [line for line in res.stdout.splitlines() if line.startswith("would run:")]
    assert len(lines) == 3 * 3 * 2 and all("python edac_pretrain.py " in line for line in lines)
    assert all("--total-timesteps 1000000 " in line for line in lines)
    assert sum("--pretrain-steps 50000 " in line for line in lines) == 9


def test_bad_overrides_are_refused_with_the_fix():
    res = bench("quick", "--dry-run", env={"BENCH_SCRIPTS": "td3bc_cql_pretrain"})
    assert (
        res.returncode == 2
        and "not in the quick profile (it runs: td3bc_pretrain edac_pretrain)" in res.stderr
    )
    res = bench("quick", "--dry-run", env={"BENCH_TOTAL": "1e5"})
    assert (
        res.returncode == 2
        and "BENCH_TOTAL must be a whole number of updates (got '1e5')" in res.stderr
    )


def test_window_override_applies_to_every_run(synthetic, tmp_path, capsys):
    summarize.main([synthetic, "--window", "300", "400", "--no-plots"])
    table = capsys.readouterr().out
    # scratch [.., 20, 40] -> 30 for both seeds; pretrained seed 1 (40, 40), seed 2 (40, 40) -> 40
    assert "| local/hopper/medium-v0 | td3bc_pretrain | no | 2 | 40.0 ± 0.0 | 30.0 ± 0.0 |" in table
    assert (
        "| local/hopper/medium-v0 | td3bc_pretrain | yes | 2 | 40.0 ± 0.0 | 40.0 ± 0.0 |" in table
    )
    with pytest.raises(SystemExit):
        summarize.main([synthetic, "--window", "400", "300"])
    assert "--window needs 0 <= START <= END (got 400 300)" in capsys.readouterr().err


def test_sustained_efficiency_ignores_a_lucky_early_evaluation(tmp_path):
    root = str(tmp_path / "runs")
    write_run(root, "s1", 0, 1, [10, 20, 30, 50], [10, 20, 30, 40])
    write_run(root, "p1", 5000, 1, [60, 10, 50, 50], [12, 24, 36, 48])
    e = summarize.efficiency(summarize.group(summarize.load_runs(root)))[
        ("local/hopper/medium-v0", "td3bc_pretrain")
    ]
    # threshold 45: the pretrained run first reaches it at update 100 (its BC peak) but stays above only from 300
    assert e["threshold"] == pytest.approx(45.0)
    assert (e["pretrained_updates"], e["scratch_updates"], e["update_ratio"]) == (100, 400, 0.25)
    assert (e["pretrained_sustained_updates"], e["scratch_sustained_updates"]) == (300, 400)
    assert e["sustained_update_ratio"] == pytest.approx(0.75) and e[
        "sustained_wall_ratio"
    ] == pytest.approx(36 / 40)
    write_run(root, "s2", 0, 2, [10, 20, 30, 50], [10, 20, 30, 40])
    write_run(
        root, "p2", 5000, 2, [60, 10, 50, 20], [12, 24, 36, 48]
    )  # seed-mean ends at 35 < 45: never sustained
    e = summarize.efficiency(summarize.group(summarize.load_runs(root)))[
        ("local/hopper/medium-v0", "td3bc_pretrain")
    ]
    assert e["pretrained_sustained_updates"] is None and e["sustained_update_ratio"] is None
    assert "not reached / 400 |" in summarize.markdown(
        summarize.group(summarize.load_runs(root)),
        {("local/hopper/medium-v0", "td3bc_pretrain"): e},
    )


def test_allowed_dips_keep_a_plateau_with_one_bad_evaluation(tmp_path, capsys):
    root = str(tmp_path / "runs")
    write_run(root, "s1", 0, 1, [10, 50, 50, 50], [10, 20, 30, 40])
    write_run(root, "p1", 5000, 1, [50, 50, 30, 50], [12, 24, 36, 48])
    groups = summarize.group(summarize.load_runs(root))
    key = ("local/hopper/medium-v0", "td3bc_pretrain")
    # threshold 45; pretrained dips to 30 at update 300: strict plateau from 400, one dip allowed from 100
    strict, lenient = summarize.efficiency(groups)[key], summarize.efficiency(groups, dips=1)[key]
    assert (strict["pretrained_sustained_updates"], strict["scratch_sustained_updates"]) == (
        400,
        200,
    )
    assert (lenient["pretrained_sustained_updates"], lenient["scratch_sustained_updates"]) == (
        100,
        200,
    )
    assert lenient["sustained_update_ratio"] == pytest.approx(0.5) and lenient[
        "sustained_wall_ratio"
    ] == pytest.approx(0.6)
    summarize.main([root, "--allow-dips", "1", "--no-plots"])
    assert "| stays above (<= 1 dips) from, updates (ratio) |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        summarize.main([root, "--allow-dips", "-1"])
    assert "--allow-dips must be >= 0 (got -1)" in capsys.readouterr().err


def test_bare_command_is_the_paper_profile():
    res = bench("--dry-run", env={"BENCH_OUT": "/tmp/x", "BENCH_JOBS": "2"})
    assert res.returncode == 0, res.stderr
    assert (
        "grid: profile paper; datasets: hopper-medium halfcheetah-medium walker2d-medium; scripts: td3bc_pretrain edac_pretrain; seeds: pretrained 1 2 3, scratch 1 2 3"
        in res.stdout
    )
    assert "runs: 36 (local launcher; output in /tmp/x)" in res.stdout
    lines = [line for line in res.stdout.splitlines() if line.startswith("would run:")]
    assert len(lines) == 36 and all("--total-timesteps 1000000 " in line for line in lines)
    res = bench("quick", "--dry-run", "--bogus")
    assert res.returncode == 2 and "unknown argument '--bogus'" in res.stderr
    res = bench("quick", "--dry-run", env={"BENCH_LAUNCHER": "pbs"})
    assert res.returncode == 2 and "BENCH_LAUNCHER must be local or slurm (got 'pbs')" in res.stderr


def test_slurm_dry_run_prints_the_array_script(tmp_path):
    env = {
        "BENCH_LAUNCHER": "slurm",
        "BENCH_OUT": str(tmp_path / "out"),
        "BENCH_SLURM_ARGS": "--partition gpu --time 2:00:00",
    }
    res = bench("quick", "--dry-run", env=env)
    assert res.returncode == 0, res.stderr
    assert "#SBATCH --array=0-3" in res.stdout  # 1 dataset x 2 scripts x 1 seed x 2 variants
    assert f"#SBATCH --output={tmp_path}/out/logs/slurm-%A_%a.out" in res.stdout
    assert 'bash benchmark.sh quick --task "$SLURM_ARRAY_TASK_ID"' in res.stdout
    assert (
        f"would write {tmp_path}/out/slurm_array.sh and submit: sbatch --partition gpu --time 2:00:00 {tmp_path}/out/slurm_array.sh"
        in res.stdout
    )
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
    for line in (
        "#SBATCH --time=24:00:00",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --requeue",
        "#SBATCH --signal=B:USR1@120",
        "trap requeue USR1",
    ):
        assert line in res.stdout, line
    env.update(BENCH_SLURM_MAX="2", BENCH_SLURM_TIME="1:00:00", BENCH_SLURM_CPUS="4")
    res = bench("quick", "--dry-run", env=env)
    assert (
        "#SBATCH --array=0-3%2" in res.stdout
        and "#SBATCH --time=1:00:00" in res.stdout
        and "#SBATCH --cpus-per-task=4" in res.stdout
    )


def test_slurm_array_with_a_fake_sbatch(minari_root, tmp_path):
    """A fake sbatch records its arguments and runs array tasks 0 and 1 (both runs of a one-seed grid)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$@" > {tmp_path}/sbatch_args\n'
        'for i in 0 1; do SLURM_ARRAY_TASK_ID=$i bash "${@: -1}" || exit 1; done\n'
        "echo Submitted batch job 42\n"
    )
    (bin_dir / "sbatch").chmod(0o755)
    out = tmp_path / "out"
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "BENCH_LAUNCHER": "slurm",
        "BENCH_OUT": str(out),
        "BENCH_SLURM_ARGS": "--partition debug",
        "BENCH_DATASETS": "hopper-random",
        "BENCH_SCRIPTS": "td3bc_pretrain",
        "BENCH_TOTAL": "200",
        "BENCH_PRETRAIN": "100",
        "OMP_NUM_THREADS": "1",
        "BENCH_FLAGS": "--no-compile --batch-size 64 --hidden-dims 32 32 --eval-episodes 2 --eval-freq 100",
    }
    res = bench("quick", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert open(tmp_path / "sbatch_args").read().split() == [
        "--partition",
        "debug",
        str(out / "slurm_array.sh"),
    ]
    assert (
        "Submitted batch job 42" in res.stdout
        and f"bash benchmark.sh summarize {out}" in res.stdout
    )
    for variant in ("pretrained", "scratch"):
        name = f"hopper-random__td3bc_pretrain__{variant}__1"
        assert f"finished: {name}" in res.stdout
        (summary,) = glob.glob(str(out / "runs" / name / "*" / "summary.csv"))
        config = json.load(open(os.path.join(os.path.dirname(summary), "config.json")))
        assert config["total_timesteps"] == 200 and config["pretrain_steps"] == (
            100 if variant == "pretrained" else 0
        )
        assert config["hidden_dims"] == [32, 32]  # BENCH_FLAGS reached the run
        assert os.path.getsize(out / "logs" / f"{name}.log") > 0
    # a task whose run is finished skips it, as the local launcher does
    again = subprocess.run(
        ["bash", str(out / "slurm_array.sh")],
        env=dict(os.environ, **env, SLURM_ARRAY_TASK_ID="0"),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert (
        again.returncode == 0
        and "done already: hopper-random__td3bc_pretrain__pretrained__1" in again.stdout
    )
    res = bench("summarize", str(out))
    assert res.returncode == 0, res.stderr
    assert "| hopper-random | td3bc_pretrain | yes | 1 |" in open(out / "summary.md").read()
    assert bench("summarize", str(tmp_path / "nowhere")).returncode == 2


def test_summary_reports_the_lengths_auto_chose(tmp_path):
    root = str(tmp_path / "runs")
    write_run(root, "s1", 0, 1, [0, 10, 20, 40], [10, 20, 30, 40])
    for name, seed, chosen in (("a1", 1, 12000), ("a2", 2, 15000)):
        write_run(root, name, "auto", seed, [10, 40, 40, 40], [12, 24, 36, 48])
        path = os.path.join(root, name, "run", "config.json")
        config = json.load(open(path))
        json.dump({**config, "pretrain_steps_chosen": chosen}, open(path, "w"))
    summarize.main([root, "--out", str(tmp_path / "out")])
    table = open(tmp_path / "out" / "summary.md").read()
    assert (
        "| local/hopper/medium-v0 | td3bc_pretrain | auto: 12000, 15000 | 2 | 40.0 ± 0.0 |" in table
    )


def test_bench_pretrain_auto_reaches_the_runs(tmp_path):
    env = dict(os.environ, BENCH_PRETRAIN="auto", BENCH_OUT=str(tmp_path / "b"), BENCH_PROBE="0")
    res = subprocess.run(
        ["bash", "benchmark.sh", "quick", "--dry-run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert "--pretrain-steps auto" in res.stdout and "--pretrain-steps 0" in res.stdout
    env["BENCH_PRETRAIN"] = "sometimes"
    res = subprocess.run(
        ["bash", "benchmark.sh", "quick", "--dry-run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert (
        res.returncode == 2
        and "BENCH_PRETRAIN must be a whole number of updates or auto (got 'sometimes')"
        in res.stderr
    )


def test_slurm_task_at_its_time_limit_requeues_and_resumes(minari_root, tmp_path):
    """A fake sbatch starts task 0, sends it SLURM's USR1 once its run has a checkpoint (the time limit is near),
    then starts it again as SLURM does after a requeue: the task called `scontrol requeue`, and the run resumed
    from its checkpoint and finished."""
    bin_dir, out = tmp_path / "bin", tmp_path / "out"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(
        f'#!/usr/bin/env bash\necho "$@" >> {tmp_path}/scontrol_calls\n'
    )
    (bin_dir / "sbatch").write_text(
        "#!/usr/bin/env bash\n"
        "export SLURM_ARRAY_JOB_ID=42 SLURM_ARRAY_TASK_ID=0\n"
        'bash "${@: -1}" & pid=$!\n'
        f'until compgen -G "{out}/runs/*/*/checkpoint.pt" > /dev/null; do sleep 0.2; done\n'
        "kill -USR1 $pid; wait $pid\n"
        'bash "${@: -1}" || exit 1\n'
        "echo Submitted batch job 42\n"
    )
    for tool in ("sbatch", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "BENCH_LAUNCHER": "slurm",
        "BENCH_OUT": str(out),
        "BENCH_DATASETS": "hopper-random",
        "BENCH_SCRIPTS": "td3bc_pretrain",
        "BENCH_TOTAL": "2000",
        "BENCH_PRETRAIN": "100",
        "BENCH_FLAGS": "--no-compile --batch-size 64 --hidden-dims 32 32 --eval-episodes 1 --eval-freq 100",
    }
    res = bench("quick", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert open(tmp_path / "scontrol_calls").read().split() == ["requeue", "42_0"]
    name = "hopper-random__td3bc_pretrain__pretrained__1"
    assert "time limit near: requeue 42_0" in res.stdout and f"finished: {name}" in res.stdout
    log = open(out / "logs" / f"{name}.log").read()  # the second start's log
    assert "resuming " in log
    (run_dir,) = glob.glob(str(out / "runs" / name / "*"))
    updates = [int(r["update"]) for r in csv.DictReader(open(os.path.join(run_dir, "eval.csv")))]
    assert updates == list(range(100, 2001, 100))  # every evaluation once, none lost or repeated


def test_a_missing_dataset_stops_the_grid_before_anything_starts(tmp_path):
    env = {"BENCH_OUT": str(tmp_path / "out"), "MINARI_DATASETS_PATH": str(tmp_path / "empty")}
    env.update(MINARI_REMOTE="gcp://nowhere", BENCH_DATASETS="hopper-medium")  # no download
    res = bench("quick", env=env)
    assert res.returncode == 1, res.stdout
    assert res.stderr.strip().startswith("error: dataset 'mujoco/hopper/medium-v0' is not")
    assert "could not be downloaded" in res.stderr and "start:" not in res.stdout
    assert not (tmp_path / "out" / "runs").exists()  # no run was launched


def test_a_failed_probe_prints_its_reason_and_stops(minari_root, tmp_path):
    env = {"BENCH_OUT": str(tmp_path), "BENCH_DATASETS": "hopper-random", "BENCH_PROBE": "1"}
    res = bench("quick", env={**env, "BENCH_FLAGS": "--batch-size 0"})
    assert res.returncode == 1 and "start:" not in res.stdout
    assert (
        "td3bc_pretrain on hopper-random: probe failed: error: --batch-size must be at least 1"
        in res.stderr
    )


def test_switch_table_by_hand(tmp_path):
    root = str(tmp_path / "runs")
    write_run(root, "p", 200, 1, [10, 40, 5, 30, 35], [1, 2, 3, 4, 5])  # switch after update 200
    write_run(root, "s", 0, 1, [0, 0, 10, 20, 20], [1, 2, 3, 4, 5])
    table = summarize.switch_markdown(summarize.group(summarize.load_runs(root)), span=200)
    row = "| local/hopper/medium-v0 | td3bc_pretrain | 1 | 200 | 40.0 | 5.0 (300) | 0.12 | 35.0 | 20.0 (1) |"
    assert table.splitlines()[2:] == [row]  # the scratch run is the floor, not a row
    table = summarize.switch_markdown(summarize.group(summarize.load_runs(root)), span=1)
    assert "| 40.0 | 5.0 (300) |" in table  # at least the first evaluation after the switch
