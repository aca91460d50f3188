"""Summarize benchmark runs: a Markdown table, efficiency ratios and PNG curves from the runs' CSVs.

    python tools/summarize.py bench/runs --out bench

Reads every `<root>/**/config.json` + `eval.csv` written by the *_pretrain.py scripts. Groups by
dataset (env_id), algorithm (exp_name) and pretraining (pretrain_steps > 0), over seeds.
- final score: the last evaluation of each run; mean +- std over seeds.
- window score: the mean of the evaluations in the run's --score-window (or in --window START END,
  which applies to every run: e.g. the last 20% of a MuJoCo run); mean +- std over seeds.
- efficiency: threshold = 90% of the scratch runs' mean final score; for pretrained and scratch,
  the first update at which the seed-mean curve reaches it, and the seed-mean wall-clock seconds at
  that update; ratio = pretrained / scratch (below 1: pretraining got there sooner).
- sustained efficiency: the same, with the first update from which the seed-mean curve stays at or
  above the threshold until the run's end (a lucky early evaluation does not count); with
  --allow-dips K, up to K later evaluations may fall below it (one bad evaluation at the end of a
  long plateau does not erase the plateau).
- --together: also one plot per dataset with every group's seed-mean curve (e.g. Appendix C's modes).
"""

import argparse
import csv
import glob
import json
import os
from collections import defaultdict

import numpy as np


def load_runs(root, window=None):
    runs = []
    for config_path in sorted(glob.glob(os.path.join(root, "**", "config.json"), recursive=True)):
        run_dir = os.path.dirname(config_path)
        csv_path = os.path.join(run_dir, "eval.csv")
        if not os.path.exists(csv_path):
            continue
        with open(config_path) as f:
            config = json.load(f)
        with open(csv_path) as f:
            rows = list(csv.DictReader(f))
        if not rows:
            continue
        runs.append(
            {
                "dataset": config["env_id"],
                "algorithm": config["exp_name"],
                "pretrained": config["pretrain_steps"] == "auto" or config["pretrain_steps"] > 0,
                "pretrain_steps": config.get(
                    "pretrain_steps_chosen", config["pretrain_steps"]
                ),  # auto: the length it chose
                "auto": config["pretrain_steps"] == "auto",
                "seed": config["seed"],
                "window": window or config.get("score_window"),
                "run_dir": run_dir,
                "update": np.array([int(r["update"]) for r in rows]),
                "wall_s": np.array([float(r["wall_s"]) for r in rows]),
                "score": np.array([float(r["normalized_mean"]) for r in rows]),
            }
        )
    return runs


def group(runs):
    groups = defaultdict(list)
    for run in runs:
        groups[(run["dataset"], run["algorithm"], run["pretrained"])].append(run)
    return groups


def mean_curve(runs):
    """Seed-mean score and wall-clock over the updates that every run evaluated."""
    common = sorted(set.intersection(*(set(r["update"].tolist()) for r in runs)))
    score = np.array([[r["score"][list(r["update"]).index(u)] for u in common] for r in runs])
    wall = np.array([[r["wall_s"][list(r["update"]).index(u)] for u in common] for r in runs])
    return np.array(common), score.mean(0), score.std(0), wall.mean(0)


def window_score(run):
    if not run["window"]:
        return float("nan")
    start, end = run["window"]
    inside = run["score"][(run["update"] >= start) & (run["update"] <= end)]
    return float(inside.mean()) if inside.size else float("nan")


def first_reach(updates, score, wall, threshold):
    hit = np.nonzero(score >= threshold)[0]
    return (int(updates[hit[0]]), float(wall[hit[0]])) if hit.size else (None, None)


def first_sustained(updates, score, wall, threshold, dips=0):
    """First evaluation at or above threshold after which at most `dips` evaluations fall below it."""
    below = score < threshold
    below_from = np.cumsum(below[::-1])[::-1]  # evaluations below the threshold from each index on
    ok = np.nonzero(~below & (below_from <= dips))[0]
    return (int(updates[ok[0]]), float(wall[ok[0]])) if ok.size else (None, None)


def ratio(a, b):
    return a / b if a is not None and b else None


def efficiency(groups, dips=0):
    """{(dataset, algorithm): dict} for every pair that has both pretrained and scratch runs."""
    out = {}
    for (dataset, algorithm, pretrained), runs in groups.items():
        if not pretrained or (dataset, algorithm, False) not in groups:
            continue
        scratch = groups[(dataset, algorithm, False)]
        threshold = 0.9 * float(np.mean([r["score"][-1] for r in scratch]))
        u_p, m_p, _, w_p = mean_curve(runs)
        u_s, m_s, _, w_s = mean_curve(scratch)
        up, wp = first_reach(u_p, m_p, w_p, threshold)
        us, ws = first_reach(u_s, m_s, w_s, threshold)
        sup, swp = first_sustained(u_p, m_p, w_p, threshold, dips)
        sus, sws = first_sustained(u_s, m_s, w_s, threshold, dips)
        out[(dataset, algorithm)] = {
            "threshold": threshold,
            "pretrained_updates": up,
            "scratch_updates": us,
            "pretrained_wall_s": wp,
            "scratch_wall_s": ws,
            "update_ratio": ratio(up, us),
            "wall_ratio": ratio(wp, ws),
            "pretrained_sustained_updates": sup,
            "scratch_sustained_updates": sus,
            "pretrained_sustained_wall_s": swp,
            "scratch_sustained_wall_s": sws,
            "sustained_update_ratio": ratio(sup, sus),
            "sustained_wall_ratio": ratio(swp, sws),
        }
    return out


def fmt(mean, std):
    return "n/a" if np.isnan(mean) else f"{mean:.1f} ± {std:.1f}"


def markdown(groups, ratios, dips=0):
    lines = [
        "| dataset | algorithm | pretraining | seeds | final score | window score |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (dataset, algorithm, pretrained), runs in sorted(groups.items()):
        finals = [r["score"][-1] for r in runs]
        windows = [window_score(r) for r in runs]
        lengths = ", ".join(str(r["pretrain_steps"]) for r in runs)
        how = ("auto: " + lengths if any(r["auto"] for r in runs) else "yes") if pretrained else "no"
        final, window = fmt(np.mean(finals), np.std(finals)), fmt(np.mean(windows), np.std(windows))
        lines.append(f"| {dataset} | {algorithm} | {how} | {len(runs)} | {final} | {window} |")
    if ratios:
        lines += [
            "",
            "| dataset | algorithm | 90% of scratch final | updates: pretrained / scratch (ratio) "
            "| wall-clock s: pretrained / scratch (ratio) "
            f"| stays above{f' (<= {dips} dips)' if dips else ''} from, updates (ratio) "
            f"| stays above{f' (<= {dips} dips)' if dips else ''} from, wall-clock s (ratio) |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for (dataset, algorithm), e in sorted(ratios.items()):

            def pair(a, b, r, unit=""):
                if a is None or b is None:
                    a, b = (f"{x:.0f}{unit}" if x is not None else "not reached" for x in (a, b))
                    return f"{a} / {b}"
                return f"{a:.0f}{unit} / {b:.0f}{unit} ({r:.2f})"

            lines.append(
                f"| {dataset} | {algorithm} | {e['threshold']:.1f} | "
                f"{pair(e['pretrained_updates'], e['scratch_updates'], e['update_ratio'])} | "
                f"{pair(e['pretrained_wall_s'], e['scratch_wall_s'], e['wall_ratio'], 's')} | "
                + pair(e["pretrained_sustained_updates"], e["scratch_sustained_updates"], e["sustained_update_ratio"])
                + " | "
                + pair(e["pretrained_sustained_wall_s"], e["scratch_sustained_wall_s"], e["sustained_wall_ratio"], "s")
                + " |"
            )
    return "\n".join(lines)


def plot(groups, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    paths = []
    for dataset, algorithm in sorted({(d, a) for d, a, _ in groups}):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for pretrained, color in ((True, "tab:blue"), (False, "tab:orange")):
            runs = groups.get((dataset, algorithm, pretrained))
            if not runs:
                continue
            updates, mean, std, wall = mean_curve(runs)
            label = f"{'pretrained' if pretrained else 'scratch'} ({len(runs)} seeds)"
            for ax, x in zip(axes, (updates, wall)):
                ax.plot(x, mean, color=color, label=label)
                ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2)
            if pretrained and len({r["pretrain_steps"] for r in runs}) == 1:
                axes[0].axvline(
                    runs[0]["pretrain_steps"], color=color, linestyle="--", linewidth=1, label="end of pretraining"
                )
        axes[0].xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1000:g}k"))
        axes[0].set_xlabel("updates (pretraining included)")
        axes[1].set_xlabel("wall-clock seconds")
        for ax in axes:
            ax.set_ylabel("normalized score")
            ax.grid(alpha=0.3)
        axes[0].legend()
        fig.suptitle(f"{dataset}: {algorithm} (mean ± std over seeds)")
        paths.append(save(fig, out_dir, f"{dataset.replace('/', '-')}__{algorithm}.png"))
    return paths


def save(fig, out_dir, name):
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_together(groups, out_dir):
    """--together: one figure per dataset with the seed-mean curve of every group (e.g. the Appendix C modes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    paths = []
    for dataset in sorted({d for d, _, _ in groups}):
        fig, ax = plt.subplots(figsize=(7, 4))
        for (d, algorithm, pretrained), runs in sorted(groups.items()):
            if d != dataset:
                continue
            updates, mean, std, _ = mean_curve(runs)
            lengths = ", ".join(f"{r['pretrain_steps'] / 1000:g}k" for r in runs) if pretrained else "none"
            line = ax.plot(updates, mean, label=f"{algorithm}, pretraining {lengths} ({len(runs)} seeds)")[0]
            ax.fill_between(updates, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1000:g}k"))
        ax.set_xlabel("updates (pretraining included)")
        ax.set_ylabel("normalized score")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"{dataset} (mean ± std over seeds)")
        paths.append(save(fig, out_dir, f"{dataset.replace('/', '-')}__together.png"))
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="folder holding the run directories (searched recursively)")
    parser.add_argument("--out", default=None, help="write summary.md and PNG plots here (default: print only)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--together", action="store_true", help="also one plot per dataset with every group's curve")
    parser.add_argument(
        "--window",
        type=int,
        nargs=2,
        metavar=("START", "END"),
        default=None,
        help="window score over evaluations with START <= update <= END for every run "
        "(default: each run's own --score-window, n/a where it has none)",
    )
    parser.add_argument(
        "--allow-dips",
        type=int,
        default=0,
        metavar="K",
        help="sustained efficiency: evaluations that may fall below the threshold after the plateau starts",
    )
    args = parser.parse_args(argv)
    if args.allow_dips < 0:
        parser.error(f"--allow-dips must be >= 0 (got {args.allow_dips})")
    if args.window and not 0 <= args.window[0] <= args.window[1]:
        parser.error(f"--window needs 0 <= START <= END (got {args.window[0]} {args.window[1]})")
    runs = load_runs(args.root, args.window)
    if not runs:
        raise SystemExit(f"error: no finished runs (config.json + eval.csv) under {args.root}")
    groups = group(runs)
    table = markdown(groups, efficiency(groups, args.allow_dips), args.allow_dips)
    print(table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "summary.md"), "w") as f:
            f.write(table + "\n")
        if not args.no_plots:
            for path in plot(groups, args.out) + (plot_together(groups, args.out) if args.together else []):
                print(f"wrote {path}")


if __name__ == "__main__":
    main()
