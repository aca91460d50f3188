"""tools/summarize.py --figure2 on synthetic grids with known answers: rliable's IQM and its CI, the probability
of improvement, the reach table, missing seeds, the final-episodes score and the figures."""

import json
import os
import sys

import pytest
from conftest import ROOT, flags

sys.path.insert(0, os.path.join(ROOT, "tools"))
import summarize  # noqa: E402


def write_run(root, dataset, algorithm, pretrained, seed, scores, walls=None, final_episodes=None):
    run_dir = os.path.join(
        root, f"{dataset.replace('/', '-')}__{algorithm}__{int(pretrained)}__{seed}"
    )
    os.makedirs(run_dir)
    config = {
        "env_id": dataset,
        "exp_name": algorithm,
        "pretrain_steps": 100 if pretrained else 0,
        "seed": seed,
    }
    json.dump(
        {**config, "score_window": [300, 400]}, open(os.path.join(run_dir, "config.json"), "w")
    )
    walls = walls or [10 * (i + 1) for i in range(len(scores))]
    with open(os.path.join(run_dir, "eval.csv"), "w") as f:
        f.write(
            "update,phase,wall_s,train_s,updates_per_s,return_mean,return_std,normalized_mean,normalized_std\n"
        )
        for i, (score, wall) in enumerate(zip(scores, walls)):
            f.write(f"{100 * (i + 1)},finetune,{wall},{wall},1,{score},0,{score},0\n")
    if final_episodes is not None:
        with open(os.path.join(run_dir, "final_returns.csv"), "w") as f:
            f.write("episode,seed,return,normalized\n")
            f.writelines(f"{i},{2_000_000 + i},{s},{s}\n" for i, s in enumerate(final_episodes))
    open(os.path.join(run_dir, "summary.csv"), "w").write(
        f"final_update\n{100 * len(scores)}\n"
    )  # finished
    return run_dir


def groups_of(root):
    return summarize.group(summarize.load_runs(root))


def test_iqm_of_known_values_and_probability_of_improvement(tmp_path):
    """Pretrained finals 1..12 over 3 datasets x 4 seeds: IQM = mean of 4..9 = 6.5; scratch all 0, so
    P(pretrained > scratch) = 1 with CI [1, 1]."""
    value = iter(range(1, 13))
    for d in ("a/x-v0", "b/x-v0", "c/x-v0"):
        for seed in (1, 2, 3, 4):
            v = next(value)
            write_run(tmp_path, d, "algo", True, seed, [0, 0, v, v])
            write_run(tmp_path, d, "algo", False, seed, [0, 0, 0, 0])
    out = summarize.rliable_summary(groups_of(tmp_path), reps=200)["algo"]["final"]
    assert out["pretrained"][0] == pytest.approx(6.5)
    assert out["pretrained"][1] <= 6.5 <= out["pretrained"][2]
    assert out["scratch"] == (0.0, 0.0, 0.0)
    assert out["P(pretrained > scratch)"] == (1.0, 1.0, 1.0)
    assert out["datasets"] == ["a/x-v0", "b/x-v0", "c/x-v0"] and out["seeds"] == 4


def test_reach_on_hand_made_curves(tmp_path):
    """Scratch plateaus at 40 (final mean 40); 90% = 36, 95% = 38. Pretrained seed 1 reaches 36 at update 200
    (wall 20), seed 2 at 300 (wall 30): mean 250 vs scratch's 700 -> ratio 250/700; 38: seed 1 at 300, seed 2
    never (1 of 2 seeds)."""
    scratch = [0, 10, 20, 30, 35, 39, 40, 40, 40, 40, 40, 40]
    write_run(tmp_path, "a/x-v0", "algo", False, 1, scratch)
    write_run(tmp_path, "a/x-v0", "algo", False, 2, scratch)
    write_run(tmp_path, "a/x-v0", "algo", True, 1, [10, 36, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38])
    write_run(tmp_path, "a/x-v0", "algo", True, 2, [10, 20, 37, 37, 37, 37, 37, 37, 37, 37, 37, 37])
    row = summarize.reach(groups_of(tmp_path))[("a/x-v0", "algo")]
    assert row["scratch_final"] == 40 and row["scratch_plateaued"]
    assert row["pretrained_0.9"] == {"seeds": 2, "reached": 2, "updates": 250.0, "wall_s": 25.0}
    assert row["scratch_0.9"]["updates"] == 600.0  # 36 first reached at update 600 (39)
    assert row["update_ratio_0.9"] == pytest.approx(250 / 600) and row[
        "wall_ratio_0.9"
    ] == pytest.approx(25 / 60)
    assert row["pretrained_0.95"]["reached"] == 1 and row["pretrained_0.95"]["updates"] == 300.0
    table = summarize.figure2_markdown(
        groups_of(tmp_path), summarize.reach(groups_of(tmp_path)), {}
    )
    assert "250 (2/2), 0.42" in table and "300 (1/2), 0.50" in table


def test_no_ratio_where_scratch_still_climbs(tmp_path):
    write_run(tmp_path, "a/x-v0", "algo", False, 1, [0, 10, 20, 30, 40, 50, 60, 70, 80, 90])
    write_run(tmp_path, "a/x-v0", "algo", True, 1, [50, 90, 90, 90, 90, 90, 90, 90, 90, 90])
    groups = groups_of(tmp_path)
    row = summarize.reach(groups)[("a/x-v0", "algo")]
    assert not row["scratch_plateaued"] and row["update_ratio_0.9"] is None
    assert (
        row["pretrained_0.9"]["updates"] == 200.0
    )  # reached, but no ratio against a climbing scratch
    table = summarize.figure2_markdown(groups, summarize.reach(groups), {})
    assert "no verdict: scratch has not plateaued at this budget" in table


def test_missing_seed_is_reported_and_final_episodes_score_the_run(tmp_path):
    for seed in (1, 2, 3):
        write_run(tmp_path, "a/x-v0", "algo", False, seed, [0, 20, 40, 40], final_episodes=[30, 50])
    for seed in (1, 2):  # seed 3 of the pretrained runs is missing
        write_run(tmp_path, "a/x-v0", "algo", True, seed, [40, 40, 40, 40])
    groups = groups_of(tmp_path)
    assert summarize.missing_seeds(groups) == {("a/x-v0", "algo", True): [3]}
    assert [r["final"] for r in groups[("a/x-v0", "algo", False)]] == [
        40.0,
        40.0,
        40.0,
    ]  # mean of 30 and 50
    table = summarize.figure2_markdown(groups, summarize.reach(groups), {})
    assert "missing: a/x-v0 algo pretrained, seed(s) 3" in table
    assert "40.0 ± 0.0 (2) / 40.0 ± 0.0 (3)" in table


def test_figure2_command_writes_the_figures(tmp_path):
    root = tmp_path / "runs"
    for d in ("a/x-v0", "b/x-v0"):
        for algorithm in ("td3bc_pretrain", "edac_pretrain"):
            for seed in (1, 2):
                write_run(root, d, algorithm, True, seed, [30, 40, 40, 40, 40, 40])
                write_run(root, d, algorithm, False, seed, [0, 20, 38, 40, 40, 40])
    summarize.main([str(root), "--out", str(tmp_path / "out"), "--figure2", "--reps", "100"])
    for name in ("figure2_updates.png", "figure2_wall.png", "figure2_iqm.png"):
        assert os.path.getsize(tmp_path / "out" / name) > 5000, name
    rows = open(tmp_path / "out" / "figure2_table.md").read().splitlines()[2:]
    assert [r.split(" | ")[:2] for r in rows] == [
        ["| " + d, a] for a in ("td3bc_pretrain", "edac_pretrain") for d in ("a/x-v0", "b/x-v0")
    ]
    table = open(tmp_path / "out" / "summary.md").read()
    assert (
        "td3bc_pretrain, final score over 2 datasets x 2 seeds, IQM [95% CI]: pretrained 40.0"
        in table
    )
    assert "P(pretrained > scratch)" in table


def test_panel_y_axis_spans_the_seeds_not_a_two_seed_band(tmp_path, monkeypatch):
    """Two pretrained seeds 0 and 100 at one evaluation give a t-band of about +-640 there; the panel's y-axis spans
    the seeds' scores (0..100 plus a margin), so the curves stay readable."""
    write_run(tmp_path, "a/x-v0", "algo", True, 1, [40, 0, 45, 50])
    write_run(tmp_path, "a/x-v0", "algo", True, 2, [40, 100, 45, 50])
    write_run(tmp_path, "a/x-v0", "algo", False, 1, [10, 20, 30, 50])
    limits = []
    save = summarize.save
    monkeypatch.setattr(
        summarize, "save", lambda fig, *a: limits.append(fig.axes[0].get_ylim()) or save(fig, *a)
    )
    os.makedirs(tmp_path / "out")
    summarize.plot_figure2(groups_of(tmp_path), str(tmp_path / "out"))
    low, high = limits[0]  # figure2_updates.png; [1] the wall-clock one
    assert -7 < low < 0 and 100 < high < 107 and limits[1] == limits[0]


def test_claim_verdict_per_panel(tmp_path):
    """The paper's claim (< 1/2 of the updates and wall-clock to 90% of scratch's final) per panel: holds where
    pretrained gets there in 250/600 updates; not where it needs 500/600; not where a pretrained seed never does."""
    scratch = [0, 10, 20, 30, 35, 39, 40, 40, 40, 40, 40, 40]  # 90% of 40 = 36, first at update 600
    for d, pretrained in (
        ("a/x-v0", [10, 36] + [38] * 10),
        ("b/x-v0", [10, 20, 30, 30, 37] + [38] * 7),
        ("c/x-v0", [10] * 12),
    ):
        write_run(tmp_path, d, "algo", False, 1, scratch)
        write_run(tmp_path, d, "algo", True, 1, pretrained)
    groups = groups_of(tmp_path)
    rows = summarize.reach(groups)
    assert (
        summarize.claim(rows[("a/x-v0", "algo")])
        == "holds: 0.33 of the updates, 0.33 of the wall-clock"
    )
    assert (
        summarize.claim(rows[("b/x-v0", "algo")])
        == "does not hold: 0.83 of the updates, 0.83 of the wall-clock"
    )
    assert (
        summarize.claim(rows[("c/x-v0", "algo")])
        == "does not hold: 1 of 1 pretrained seeds never reach 90%"
    )
    table = summarize.figure2_markdown(groups, rows, {})
    assert table.count("| holds: ") == 1 and table.count("| does not hold: ") == 2
    short = summarize.readme_table(groups, rows).splitlines()
    assert short[2] == "| a/x-v0 | algo | 38.0 / 40.0 | 1 / 1 | 0.33 | 0.33 | holds |"
    assert short[3] == "| b/x-v0 | algo | 38.0 / 40.0 | 1 / 1 | 0.83 | 0.83 | does not hold |"
    assert (
        short[4]
        == "| c/x-v0 | algo | 10.0 / 40.0 | 1 / 1 | n/a | n/a | does not hold: 1 of 1 pretrained seeds never reach 90% |"
    )


def test_unfinished_runs_are_left_out_and_named(tmp_path, capsys):
    """A run without summary.csv (still running, or stopped without a checkpoint) is not summarized: its last
    evaluation is not a final score; the command names it."""
    write_run(tmp_path, "a/x-v0", "algo", False, 1, [0, 40, 40, 40])
    write_run(tmp_path, "a/x-v0", "algo", True, 1, [40, 40, 40, 40])
    partial = write_run(tmp_path, "a/x-v0", "algo", True, 2, [0])
    os.remove(os.path.join(partial, "summary.csv"))
    assert [r["seed"] for r in summarize.load_runs(tmp_path)] == [1, 1]
    assert summarize.in_progress(tmp_path) == [partial]
    summarize.main([str(tmp_path), "--no-plots"])
    assert f"not finished, left out (1): {os.path.basename(partial)}" in capsys.readouterr().out


def test_hybrid_with_pretrained_runs_only_is_compared_with_its_base_scratch(tmp_path):
    """The figure2 profile's EDAC+BC runs (pretrained only) are summarized against edac_pretrain's scratch runs:
    reach row, rliable aggregate (2 hybrid seeds vs 3 scratch seeds), drawn in EDAC's row, no missing seed 3."""
    for d in ("a/x-v0", "b/x-v0"):
        for seed in (1, 2, 3):
            write_run(tmp_path / "runs", d, "edac_pretrain", True, seed, [0, 0, 0, 0])
            write_run(tmp_path / "runs", d, "edac_pretrain", False, seed, [0, 20, 40, 40, 40, 40])
        for seed in (1, 2):
            write_run(
                tmp_path / "runs", d, "edac_bc_pretrain", True, seed, [40, 45, 45, 45, 45, 45]
            )
    groups = groups_of(tmp_path / "runs")
    scratch = groups[("a/x-v0", "edac_bc_pretrain", False)]
    assert [r["algorithm"] for r in scratch] == ["edac_pretrain"] * 3
    assert summarize.borrowed(groups, "a/x-v0", "edac_bc_pretrain") and not summarize.borrowed(
        groups, "a/x-v0", "edac_pretrain"
    )
    row = summarize.reach(groups)[("a/x-v0", "edac_bc_pretrain")]
    assert row["pretrained_0.9"] == {"seeds": 2, "reached": 2, "updates": 100.0, "wall_s": 10.0}
    assert row["update_ratio_0.9"] == pytest.approx(100 / 300)
    assert summarize.missing_seeds(groups) == {}
    out = summarize.rliable_summary(groups, reps=100)["edac_bc_pretrain"]["final"]
    assert (
        out["pretrained"][0] == 45
        and out["scratch"][0] == 40
        and out["P(pretrained > scratch)"][0] == 1
    )
    assert out["seeds"] == 2
    table = summarize.figure2_markdown(groups, summarize.reach(groups), {})
    assert (
        "| a/x-v0 | edac_bc_pretrain vs edac_pretrain's scratch | 45.0 ± 0.0 (2) / 40.0 ± 0.0 (3) |"
        in table
    )
    os.makedirs(tmp_path / "out")
    paths = summarize.plot_figure2(groups, str(tmp_path / "out"))
    assert len(paths) == 3 and all(os.path.getsize(p) > 5000 for p in paths)
    short = summarize.readme_table(groups, summarize.reach(groups)).splitlines()
    assert [line.split(" | ")[1] for line in short[2:]] == ["edac_pretrain"] * 2 + [
        "edac_bc_pretrain vs edac_pretrain's scratch"
    ] * 2


def test_reach_is_where_the_curve_stays_not_a_first_touch(tmp_path):
    """A BC actor that touches the threshold (36) at its first evaluation and falls back does not count: the reach
    is the update from which the curve stays at or above it (800), or with one dip allowed (500); the first touch
    (100) is reported beside it. Scratch gets there at 600 either way."""
    write_run(tmp_path, "a/x-v0", "algo", False, 1, [0, 10, 20, 30, 35, 39, 40, 40, 40, 40, 40, 40])
    write_run(tmp_path, "a/x-v0", "algo", True, 1, [40, 10, 10, 10, 38, 39, 30, 40, 40, 40, 40, 40])
    groups = groups_of(tmp_path)
    strict, lenient = (summarize.reach(groups, dips=k)[("a/x-v0", "algo")] for k in (0, 1))
    assert strict["pretrained_0.9"]["updates"] == 800 and strict[
        "update_ratio_0.9"
    ] == pytest.approx(800 / 600)
    assert lenient["pretrained_0.9"]["updates"] == 500 and lenient[
        "update_ratio_0.9"
    ] == pytest.approx(500 / 600)
    assert (
        strict["first_pretrained_0.9"]["updates"]
        == lenient["first_pretrained_0.9"]["updates"]
        == 100
    )
    assert summarize.claim(strict).startswith("does not hold: 1.33 of the updates")
    table = summarize.figure2_markdown(groups, summarize.reach(groups), {})
    assert "| 100 (1/1), 0.17 |" in table and "(0 evaluation(s) below it allowed)" in table


@pytest.mark.parametrize(
    "grids, page",
    [
        ((("docs", "medium-v1", "figure2"), ("docs", "medium-v1", "edac-switch")), "README.md"),
        ((("docs", "figure2"),), os.path.join("docs", "RESULTS.md")),
    ],
)
def test_tables_are_the_summaries_of_the_tracked_runs(tmp_path, grids, page):
    """README's Figure 2 table (and RESULTS's of the older grid) is figure2_table.md as `bash benchmark.sh
    summarize GRID [MORE]` writes it to GRID from the runs tracked in each grid's runs/, not typed by
    hand (README's: the TD3+BC row's grid and the EDAC row's)."""
    out, grid = tmp_path / "out", grids[0]
    args = flags(out=out, figure2=True, allow_dips=1, plots=False, reps=100)
    summarize.main([*(os.path.join(ROOT, *g, "runs") for g in grids), *args])
    table = open(out / "figure2_table.md").read()
    assert table == open(os.path.join(ROOT, *grid, "figure2_table.md")).read()
    text = open(os.path.join(ROOT, page)).read()
    start, end = "<!-- figure2_table.md -->\n", "<!-- /figure2_table.md -->"
    assert text.count(start) == 1 and text.count(end) == 1, (
        f"{page} lost the markers of its Figure 2 table"
    )
    assert text.split(start)[1].split(end)[0] == table
    if page == "README.md":
        assert "/".join(grid) + "/figure2_updates.png" in text
