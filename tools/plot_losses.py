"""Plot logged values (losses.csv) and the score (eval.csv) of one or more runs against updates.

    python tools/plot_losses.py runs/A runs/B \
        --names diagnostics/action_distance diagnostics/q_pi_std \
        --start 5500 --end 9000 --out switch.png

One panel per name plus one for the normalized score; one line per run, labelled by its directory
(or --labels). A dashed line marks the end of pretraining when the runs share it.
"""

import argparse
import csv
import json
import os
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_run(run_dir):
    values = defaultdict(list)
    with open(os.path.join(run_dir, "losses.csv")) as f:
        for row in csv.DictReader(f):
            values[row["name"]].append((int(row["update"]), float(row["value"])))
    with open(os.path.join(run_dir, "eval.csv")) as f:
        values["eval/normalized_score"] = [
            (int(r["update"]), float(r["normalized_mean"])) for r in csv.DictReader(f)
        ]
    with open(os.path.join(run_dir, "config.json")) as f:
        pretrain_steps = json.load(f).get("pretrain_steps")
    return values, pretrain_steps


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "runs", nargs="+", help="run directories (each with losses.csv, eval.csv, config.json)"
    )
    parser.add_argument(
        "--names", nargs="+", required=True, help="logged names, e.g. losses/critic_td"
    )
    parser.add_argument(
        "--labels", nargs="+", help="one label per run (default: the run directories)"
    )
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--end", type=int, default=None)
    parser.add_argument("--out", default="losses.png")
    args = parser.parse_args(argv)
    labels = args.labels or args.runs
    if len(labels) != len(args.runs):
        parser.error("--labels needs one label per run")
    runs = [read_run(r) for r in args.runs]
    names = [*args.names, "eval/normalized_score"]
    for name in args.names:
        if not any(name in values for values, _ in runs):
            parser.error(
                f"no run logged '{name}'; logged: "
                + ", ".join(sorted(set().union(*(v for v, _ in runs))))
            )
    fig, axes = plt.subplots(
        len(names), 1, figsize=(7, 2.2 * len(names)), sharex=True, squeeze=False
    )
    for ax, name in zip(axes[:, 0], names):
        for (values, _), label in zip(runs, labels):
            points = [
                (u, v)
                for u, v in values.get(name, [])
                if u >= args.start and (args.end is None or u <= args.end)
            ]
            if points:
                ax.plot(
                    *zip(*points), label=label, marker="." if name.startswith("eval/") else None
                )
        ends = {p for _, p in runs}
        if len(ends) == 1 and ends != {None}:
            ax.axvline(ends.pop(), color="gray", linestyle="--", linewidth=1)
        ax.set_ylabel(name.split("/")[-1], fontsize=8)
    axes[0, 0].legend(fontsize=7)
    axes[-1, 0].set_xlabel("update")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
