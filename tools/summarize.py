"""Summarize benchmark runs: a Markdown table, efficiency ratios and PNG curves from the runs' CSVs.

    python tools/summarize.py bench/runs --out bench

Reads every `<root>/**/config.json` + `eval.csv` written by the *_pretrain.py scripts. Groups by
dataset (env_id), algorithm (exp_name) and pretraining (pretrain_steps > 0), over seeds.
- final score: the last evaluation of each run; mean +- std over seeds.
- window score: the mean of the evaluations in the run's --score-window (or in --window START
  END, which applies to every run: e.g. the last 20% of a MuJoCo run); mean +- std over seeds.
- efficiency: threshold = 90% of the scratch runs' mean final score; for pretrained and scratch,
  the first update at which the seed-mean curve reaches it, and the seed-mean wall-clock seconds
  at that update; ratio = pretrained / scratch (below 1: pretraining got there sooner).
- sustained efficiency: the same, with the first update from which the seed-mean curve stays at
  or above the threshold until the run's end (a lucky early evaluation does not count); with
  --allow-dips K, up to K later evaluations may fall below it (one bad evaluation at the end of a
  long plateau does not erase the plateau).
- --together: also one plot per dataset with every group's seed-mean curve (e.g. Appendix C's
  modes).
- --figure2: the paper's Figure 2 for the grid (rows the algorithms, columns the datasets; mean and
  95% t-interval over seeds, pretrained and scratch, the y-axis spanning the seeds' scores; x
  updates in figure2_updates.png, wall-clock in figure2_wall.png), the reach table (per panel:
  updates and wall-clock, pretraining counted, for each pretrained seed to first reach 90% / 95% of
  the scratch seeds' mean final score, with how many seeds reached it; no ratio where the scratch
  curve has not plateaued) and, across datasets, rliable's (Agarwal et al., 2021) interquartile mean
  with stratified-bootstrap 95% CIs of the final and window scores, the probability of improvement
  P(pretrained > scratch) with its CI, and IQM curves over updates (figure2_iqm.png). The final
  score of a run is its --final-episodes mean where it wrote final_returns.csv, else its last
  evaluation. A panel with fewer seeds than the grid's says which.
- --switch SPAN: per pretrained run, the score at the switch to RL, the lowest in the SPAN updates
  after it and its share of the switch score ("kept"), the final score, and the panel's scratch
  final (the floor)."""

import argparse
import csv
import glob
import json
import os
import sys
from collections import defaultdict
from functools import partial

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import utils  # noqa: E402


def load_runs(root, window=None):
    runs = []
    for config_path in sorted(glob.glob(os.path.join(root, "**", "config.json"), recursive=True)):
        run_dir = os.path.dirname(config_path)
        csv_path = os.path.join(run_dir, "eval.csv")
        if not os.path.exists(csv_path) or not os.path.exists(os.path.join(run_dir, "summary.csv")):
            continue  # not finished (see in_progress)
        with open(config_path) as f:
            config = json.load(f)
        with open(csv_path) as f:
            rows = list(csv.DictReader(f))
        if not rows:
            continue
        final_path = os.path.join(run_dir, "final_returns.csv")
        final = None
        if os.path.exists(
            final_path
        ):  # --final-episodes: the mean of its episodes is the run's final score
            with open(final_path) as f:
                final = float(np.mean([float(r["normalized"]) for r in csv.DictReader(f)]))
        runs.append(
            {
                "final": final if final is not None else float(rows[-1]["normalized_mean"]),
                "final_episodes": final is not None,
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


def in_progress(root):
    """Run directories under root that have started (config.json) but have no summary.csv."""
    configs = glob.glob(os.path.join(root, "**", "config.json"), recursive=True)
    dirs = [os.path.dirname(c) for c in configs]
    return sorted(d for d in dirs if not os.path.exists(os.path.join(d, "summary.csv")))


def duplicates(runs):
    """The first arm and seed with two finished runs (a grid summarized with a copy of its runs, or
    two pretraining lengths in one arm), or None."""
    seen = {}
    for run in runs:
        key = (run["dataset"], run["algorithm"], run["pretrained"], run["seed"])
        if key in seen:
            arm = "pretrained" if key[2] else "scratch"
            return (
                f"two finished runs of {key[0]} {key[1]} {arm} seed {key[3]}: "
                f"{seen[key]} and {run['run_dir']}"
            )
        seen[key] = run["run_dir"]
    return None


BASE = {
    "edac_bc_pretrain": "edac_pretrain",
    "td3bc_cql_pretrain": "td3bc_pretrain",
}  # a hybrid, the script it extends


def group(runs):
    """{(dataset, algorithm, pretrained): runs}. A hybrid with pretrained runs only on a dataset
    (the figure2 profile's EDAC+BC) is compared with its base script's scratch runs there: they
    fill its scratch group."""
    groups = defaultdict(list)
    for run in runs:
        groups[(run["dataset"], run["algorithm"], run["pretrained"])].append(run)
    for dataset, algorithm, pretrained in list(groups):
        base = (dataset, BASE.get(algorithm), False)
        if pretrained and (dataset, algorithm, False) not in groups and base in groups:
            groups[(dataset, algorithm, False)] = groups[base]
    return groups


def borrowed(groups, dataset, algorithm):
    """Whether the scratch runs of (dataset, algorithm) are its base script's (see group)."""
    return any(r["algorithm"] != algorithm for r in groups.get((dataset, algorithm, False), []))


def panel_name(groups, dataset, algorithm):
    return (
        f"{algorithm} vs {BASE[algorithm]}'s scratch"
        if borrowed(groups, dataset, algorithm)
        else algorithm
    )


def mean_curve(runs):
    """Seed-mean score and wall-clock over the updates that every run evaluated."""
    common = sorted(set.intersection(*(set(r["update"].tolist()) for r in runs)))
    score = np.array([[r["score"][list(r["update"]).index(u)] for u in common] for r in runs])
    wall = np.array([[r["wall_s"][list(r["update"]).index(u)] for u in common] for r in runs])
    return np.array(common), score.mean(0), score.std(0), wall.mean(0)


def window_score(run):
    """The run's mean score over its window (utils.window_score, as in its summary.csv)."""
    if not run["window"]:
        return float("nan")
    return utils.window_score(run["update"], run["score"], run["window"])


def first_reach(updates, score, wall, threshold):
    hit = np.nonzero(score >= threshold)[0]
    return (int(updates[hit[0]]), float(wall[hit[0]])) if hit.size else (None, None)


def first_sustained(updates, score, wall, threshold, dips=0):
    """First evaluation at or above threshold after which at most `dips` fall below it."""
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
        threshold = 0.9 * float(np.mean([r["final"] for r in scratch]))
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


def switch_markdown(groups, span):
    """--switch SPAN: does the pretrained score carry over the switch to RL? Per pretrained run:
    its score at the switch (the last evaluation of pretraining), the lowest in the SPAN updates
    after it (at least the first evaluation after) and where, that low as a share of the switch
    score, its final score; beside it the scratch runs' mean final score (the floor)."""
    lines = [
        f"| dataset | algorithm | seed | switch | at the switch | lowest in the next {span} "
        "(update) | kept | final | scratch final (seeds) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (dataset, algorithm, pretrained), runs in sorted(groups.items()):
        scratch = groups.get((dataset, algorithm, False), []) if pretrained else []
        floor = f"{np.mean([r['final'] for r in scratch]):.1f} ({len(scratch)})" if scratch else "-"
        for run in sorted(runs, key=lambda r: r["seed"]) if pretrained else []:
            switch, update, score = run["pretrain_steps"], run["update"], run["score"]
            if not (update <= switch).any() or not (update > switch).any():
                continue
            first = update[update > switch][0]  # at least the first evaluation after the switch
            after = (update > switch) & (update <= max(switch + span, first))
            at = score[update <= switch][-1]
            low = int(np.argmin(np.where(after, score, np.inf)))
            kept = f"{score[low] / at:.2f}" if at > 0 else "n/a"
            cells = [dataset, algorithm, run["seed"], switch, f"{at:.1f}"]
            cells += [f"{score[low]:.1f} ({update[low]})", kept, f"{run['final']:.1f}", floor]
            lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def fmt(mean, std):
    return "n/a" if np.isnan(mean) else f"{mean:.1f} ± {std:.1f}"


def markdown(groups, ratios, dips=0):
    lines = [
        "| dataset | algorithm | pretraining | seeds | final score | window score |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (dataset, algorithm, pretrained), runs in sorted(groups.items()):
        finals = [r["final"] for r in runs]
        windows = [window_score(r) for r in runs]
        lengths = ", ".join(str(r["pretrain_steps"]) for r in runs)
        how = (
            ("auto: " + lengths if any(r["auto"] for r in runs) else "yes") if pretrained else "no"
        )
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
                + pair(
                    e["pretrained_sustained_updates"],
                    e["scratch_sustained_updates"],
                    e["sustained_update_ratio"],
                )
                + " | "
                + pair(
                    e["pretrained_sustained_wall_s"],
                    e["scratch_sustained_wall_s"],
                    e["sustained_wall_ratio"],
                    "s",
                )
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
                    runs[0]["pretrain_steps"],
                    color=color,
                    linestyle="--",
                    linewidth=1,
                    label="end of pretraining",
                )
        axes[0].xaxis.set_major_formatter(
            matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1000:g}k")
        )
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
    """--together: one figure per dataset with the seed-mean curve of every group (e.g. the Appendix
    C modes)."""
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
            lengths = (
                ", ".join(f"{r['pretrain_steps'] / 1000:g}k" for r in runs)
                if pretrained
                else "none"
            )
            line = ax.plot(
                updates, mean, label=f"{algorithm}, pretraining {lengths} ({len(runs)} seeds)"
            )[0]
            ax.fill_between(updates, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1000:g}k"))
        ax.set_xlabel("updates (pretraining included)")
        ax.set_ylabel("normalized score")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"{dataset} (mean ± std over seeds)")
        paths.append(save(fig, out_dir, f"{dataset.replace('/', '-')}__together.png"))
    return paths


# --figure2: the paper's Figure 2 on a grid, aggregated as the field now reports (rliable)
def t_interval(scores):
    """Mean and 95% Student-t half-width over seeds (axis 0); half-width 0 for one seed."""
    from scipy import stats

    scores = np.asarray(scores, dtype=float)
    n = scores.shape[0]
    half = (
        stats.t.ppf(0.975, n - 1) * scores.std(0, ddof=1) / np.sqrt(n)
        if n > 1
        else np.zeros(scores.shape[1:])
    )
    return scores.mean(0), half


def plateaued(updates, score, share=0.2, tol=0.05):
    """Whether a seed-mean curve has levelled off: the mean of its last `share` of evaluations is
    within `tol` (of the larger magnitude) of the mean of the `share` before it."""
    k = max(1, int(round(share * len(score))))
    if len(score) < 2 * k:
        return False
    last, before = score[-k:].mean(), score[-2 * k : -k].mean()
    return bool(abs(last - before) <= tol * max(abs(last), abs(before), 1e-9))


def reach(groups, fractions=(0.9, 0.95), dips=0):
    """Per (dataset, algorithm) with both variants: for each fraction f, the updates and wall-clock
    from which each pretrained seed's curve stays at or above f x the scratch seeds' mean final
    score to the end of the run (up to `dips` evaluations below it; pretraining counted: updates
    and wall-clock run from the start), how many seeds got there, and the same for the scratch
    seeds; ratios (pretrained / scratch, of the means over the seeds that got there) only where
    scratch has plateaued. `first_{f}`: the first evaluation that touches the threshold, for
    reference (a half-trained BC actor can touch it once during pretraining and fall back)."""
    out = {}
    for (dataset, algorithm, pretrained), runs in sorted(groups.items()):
        scratch = groups.get((dataset, algorithm, False))
        if not pretrained or not scratch:
            continue
        target = float(np.mean([r["final"] for r in scratch]))
        u_s, m_s, _, _ = mean_curve(scratch)
        row = {"scratch_final": target, "scratch_plateaued": plateaued(u_s, m_s)}
        for f in fractions:
            for how, when in (("", partial(first_sustained, dips=dips)), ("first_", first_reach)):
                for name, variant in (("pretrained", runs), ("scratch", scratch)):
                    hits = [when(r["update"], r["score"], r["wall_s"], f * target) for r in variant]
                    hits = [h for h in hits if h[0] is not None]
                    row[f"{how}{name}_{f}"] = {
                        "seeds": len(variant),
                        "reached": len(hits),
                        "updates": float(np.mean([h[0] for h in hits])) if hits else None,
                        "wall_s": float(np.mean([h[1] for h in hits])) if hits else None,
                    }
                p, sc = row[f"{how}pretrained_{f}"], row[f"{how}scratch_{f}"]
                ok = row["scratch_plateaued"] and p["updates"] is not None and sc["updates"]
                row[f"{how}update_ratio_{f}"] = p["updates"] / sc["updates"] if ok else None
                row[f"{how}wall_ratio_{f}"] = (
                    p["wall_s"] / sc["wall_s"] if ok and sc["wall_s"] else None
                )
        out[(dataset, algorithm)] = row
    return out


def score_matrices(groups, algorithm, key):
    """{pretrained: [seeds x datasets] array} of one algorithm's per-run scores (`key`: final or
    window), the datasets that both variants have, seeds truncated to the fewest any dataset has
    (rliable needs a matrix)."""
    datasets = sorted({d for d, a, p in groups if a == algorithm and (d, a, not p) in groups})
    out = {}
    for pretrained in (True, False):
        columns = [
            [
                r["final"] if key == "final" else window_score(r)
                for r in groups[(d, algorithm, pretrained)]
            ]
            for d in datasets
        ]
        n = min((len(c) for c in columns), default=0)
        out[pretrained] = (
            np.array([c[:n] for c in columns]).T if n else np.zeros((0, len(datasets)))
        )
    return out, datasets


def rliable_summary(groups, reps=2000, seed=0):
    """Per algorithm: IQM [CI] of final and window scores for pretrained and scratch, and
    P(pretrained > scratch) [CI], over the datasets (stratified bootstrap, 95%)."""
    import warnings

    from rliable import library as rly
    from rliable import metrics

    warnings.filterwarnings(
        "ignore", "random_state is deprecated", FutureWarning
    )  # arch, called by rliable
    out = {}
    for algorithm in sorted({a for _, a, _ in groups}):
        row = {}
        for key in ("final", "window"):
            scores, datasets = score_matrices(groups, algorithm, key)
            if not datasets or any(m.shape[0] < 1 or np.isnan(m).any() for m in scores.values()):
                continue
            np.random.seed(seed)  # rliable draws some resamples from numpy's global generator
            iqm = lambda m: np.array([metrics.aggregate_iqm(m)])  # noqa: E731
            both = {"pretrained": scores[True], "scratch": scores[False]}
            point, ci = rly.get_interval_estimates(
                both, iqm, reps=reps, random_state=np.random.RandomState(seed)
            )
            row[key] = {
                k: (float(point[k][0]), float(ci[k][0, 0]), float(ci[k][1, 0])) for k in point
            }
            np.random.seed(seed)
            pair = {"p": (scores[True], scores[False])}
            point, ci = rly.get_interval_estimates(
                pair,
                metrics.probability_of_improvement,
                reps=reps,
                random_state=np.random.RandomState(seed),
            )
            p, (low, high) = float(np.ravel(point["p"])[0]), np.ravel(ci["p"]).tolist()
            row[key]["P(pretrained > scratch)"] = (p, float(low), float(high))
            row[key]["datasets"], row[key]["seeds"] = datasets, scores[True].shape[0]
        out[algorithm] = row
    return out


def missing_seeds(groups):
    """{(dataset, algorithm, pretrained): [seeds missing]} against the seeds that any run of the
    grid has."""
    panels = {(d, a) for d, a, _ in groups}
    out = {}
    for d, a in sorted(panels):
        everyone = {
            r["seed"]
            for (_, b, _), runs in groups.items()
            for r in runs
            if b == a == r["algorithm"]
        }
        for p in (True, False):
            if not p and borrowed(groups, d, a):
                continue
            have = {r["seed"] for r in groups.get((d, a, p), [])}
            if everyone - have:
                out[(d, a, p)] = sorted(everyone - have)
    return out


def claim(row, f=0.9):
    """The paper's claim on one panel: pretrained runs reach scratch's asymptote (here: stay at or
    above f x its final score from then on, see reach) in less than half of scratch's updates and
    wall-clock, pretraining counted; every pretrained seed must get there."""
    p, u, w = row[f"pretrained_{f}"], row[f"update_ratio_{f}"], row[f"wall_ratio_{f}"]
    if not row["scratch_plateaued"]:
        return "no verdict: scratch has not plateaued at this budget"
    if p["reached"] < p["seeds"]:
        never = f"{p['seeds'] - p['reached']} of {p['seeds']} pretrained seeds never reach {f:.0%}"
        return f"does not hold: {never}"
    if u is None or w is None:
        return "no verdict: scratch never reached its own threshold"
    verdict = "holds" if u < 0.5 and w < 0.5 else "does not hold"
    return f"{verdict}: {u:.2f} of the updates, {w:.2f} of the wall-clock"


def figure2_markdown(groups, reached, aggregate, dips=0):
    lines = [
        f"Reach: the updates and wall-clock from which a seed's curve stays at or above 90% "
        f"(95%) of the scratch seeds' mean final score to the end ({dips} evaluation(s) below "
        "it allowed), pretraining counted; mean over the seeds that got there (how many in "
        "brackets); ratio pretrained / scratch.",
        "",
        "| dataset | algorithm | final: pretrained / scratch (seeds) "
        "| 90%: updates (seeds), ratio | wall-clock s, ratio "
        "| 95%: updates (seeds), ratio | wall-clock s, ratio "
        "| first touch of 90%: updates (seeds), ratio "
        "| the paper's claim (< 1/2 of the updates and wall-clock to 90%) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def cell(v, ratio, fmt):
        if v["updates"] is None:
            return f"not reached (0/{v['seeds']})", "-"
        return f"{fmt(v)} ({v['reached']}/{v['seeds']})", "n/a" if ratio is None else f"{ratio:.2f}"

    for (dataset, algorithm), row in sorted(reached.items()):
        p, sc = groups[(dataset, algorithm, True)], groups[(dataset, algorithm, False)]
        finals = [
            fmt(
                *[
                    float(x)
                    for x in (np.mean([r["final"] for r in v]), np.std([r["final"] for r in v]))
                ]
            )
            + f" ({len(v)})"
            for v in (p, sc)
        ]
        cells = []
        for f in (0.9, 0.95):
            v = row[f"pretrained_{f}"]
            u, ur = cell(v, row[f"update_ratio_{f}"], lambda v: f"{v['updates']:.0f}")
            w, wr = cell(v, row[f"wall_ratio_{f}"], lambda v: f"{v['wall_s']:.0f}")
            cells += [f"{u}, {ur}", f"{w.split(' (')[0]}, {wr}"]
        u, ur = cell(
            row["first_pretrained_0.9"],
            row["first_update_ratio_0.9"],
            lambda v: f"{v['updates']:.0f}",
        )
        cells.append(f"{u}, {ur}")
        cells.append(claim(row))
        lines.append(
            f"| {dataset} | {panel_name(groups, dataset, algorithm)} | {finals[0]} / {finals[1]} | "
            + " | ".join(cells)
            + " |"
        )
    for key, seeds in missing_seeds(groups).items():
        lines.append(
            f"\nmissing: {key[0]} {key[1]} {'pretrained' if key[2] else 'scratch'}, seed(s) "
            + ", ".join(map(str, seeds))
        )
    for algorithm, row in aggregate.items():
        for key, v in row.items():
            parts = [
                f"{k} {v[k][0]:.1f} [{v[k][1]:.1f}, {v[k][2]:.1f}]"
                for k in ("pretrained", "scratch")
            ]
            p, head = v["P(pretrained > scratch)"], f"{algorithm}, {key} score"
            parts.append(f"P(pretrained > scratch) {p[0]:.2f} [{p[1]:.2f}, {p[2]:.2f}]")
            lines.append(
                f"\n{head} over {len(v['datasets'])} datasets x {v['seeds']} seeds, IQM [95% CI]: "
                + ", ".join(parts)
            )
    return "\n".join(lines)


def readme_table(groups, reached):
    """figure2_table.md: a line per panel (final scores, 90% ratios, verdict), for README."""
    lines = [
        "| dataset | algorithm | final: pretrained / scratch | seeds | updates to 90%: ratio "
        "| wall-clock: ratio "
        "| the paper's claim (< 1/2) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    order = lambda k: (k[0][1] in BASE, not k[0][1].startswith("td3bc"), k[0][1], k[0][0])  # noqa: E731
    for (dataset, algorithm), row in sorted(
        reached.items(), key=order
    ):  # TD3+BC, EDAC, then the hybrids
        p, sc = groups[(dataset, algorithm, True)], groups[(dataset, algorithm, False)]
        final = " / ".join(f"{np.mean([r['final'] for r in v]):.1f}" for v in (p, sc))
        ratios = [
            f"{row[k]:.2f}" if row[k] is not None else "n/a"
            for k in ("update_ratio_0.9", "wall_ratio_0.9")
        ]
        verdict = claim(row)
        verdict = verdict.split(":")[0] if "of the updates" in verdict else verdict
        name, seeds = panel_name(groups, dataset, algorithm), f"{len(p)} / {len(sc)}"
        lines.append(
            f"| {dataset} | {name} | {final} | {seeds} | {ratios[0]} | {ratios[1]} | {verdict} |"
        )
    return "\n".join(lines)


def plot_figure2(groups, out_dir):
    """figure2_updates.png and figure2_wall.png: rows the algorithms, columns the datasets,
    pretrained and scratch seed means with 95% t-intervals; figure2_iqm.png: the IQM over
    datasets and seeds per update."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    kilo = FuncFormatter(
        lambda v, _: f"{v / 1000:g}k"
    )  # 300k, not 300000 (ticks run into each other)
    datasets = sorted({d for d, _, _ in groups})
    algorithms = sorted(
        {a for _, a, _ in groups}, key=lambda a: (not a.startswith("td3bc"), a)
    )  # TD3+BC on top
    # a hybrid compared with its base's scratch runs is drawn in its base's row
    hybrids = {BASE[a]: a for a in algorithms if any(borrowed(groups, d, a) for d in datasets)}
    algorithms = [a for a in algorithms if a not in hybrids.values()]

    def curves(algorithm):  # (algorithm, pretrained, color, label) of a row
        out = [
            (algorithm, True, "tab:blue", "pretrained"),
            (algorithm, False, "tab:orange", "scratch"),
        ]
        if algorithm in hybrids:
            out.insert(
                1, (hybrids[algorithm], True, "tab:green", f"{hybrids[algorithm]}, pretrained")
            )
        return out

    paths = []
    for axis, name in ((0, "updates"), (1, "wall")):
        fig, axes = plt.subplots(
            len(algorithms),
            len(datasets),
            figsize=(4 * len(datasets), 3.2 * len(algorithms)),
            squeeze=False,
        )
        for i, algorithm in enumerate(algorithms):
            for j, dataset in enumerate(datasets):
                ax = axes[i, j]
                seen = []  # every seed's scores: the y-axis spans them, not a 2-seed t-band
                for algo, pretrained, color, label in curves(algorithm):
                    runs = groups.get((dataset, algo, pretrained))
                    if not runs:
                        continue
                    updates, _, _, wall = mean_curve(runs)
                    common = [
                        [r["score"][list(r["update"]).index(u)] for u in updates] for r in runs
                    ]
                    mean, half = t_interval(common)
                    seen += [np.min(common), np.max(common)]
                    x = updates if axis == 0 else wall
                    label = f"{label} ({len(runs)} seeds)"
                    ax.plot(x, mean, color=color, label=label)
                    ax.fill_between(x, mean - half, mean + half, color=color, alpha=0.2)
                    if axis == 0 and pretrained and len({r["pretrain_steps"] for r in runs}) == 1:
                        ax.axvline(
                            runs[0]["pretrain_steps"], color=color, linestyle="--", linewidth=1
                        )
                if seen:
                    margin = 0.05 * (max(seen) - min(seen)) + 1
                    ax.set_ylim(min(seen) - margin, max(seen) + margin)
                ax.set_title(f"{algorithm}: {dataset}", fontsize=9)
                ax.set_xlabel("updates (pretraining included)" if axis == 0 else "wall-clock s")
                if axis == 0:
                    ax.xaxis.set_major_formatter(kilo)
                ax.set_ylabel("normalized score")
                ax.grid(alpha=0.3)
                if ax.lines:
                    ax.legend(fontsize=7)
                else:  # a panel of the grid with no finished run yet
                    ax.text(
                        0.5,
                        0.5,
                        "no finished runs",
                        ha="center",
                        va="center",
                        transform=ax.transAxes,
                    )
                    ax.set_xticks([]), ax.set_yticks([])
        fig.suptitle(
            "mean and 95% CI over seeds, y-axis: the seeds' range"
            + (" (dashed: end of pretraining)" if axis == 0 else "")
        )
        paths.append(save(fig, out_dir, f"figure2_{name}.png"))
    from rliable import metrics

    fig, axes = plt.subplots(1, len(algorithms), figsize=(5 * len(algorithms), 3.4), squeeze=False)
    for ax, algorithm in zip(axes[0], algorithms):
        for algo, pretrained, color, label in curves(algorithm):
            runs = [
                r for (d, a, p), rs in groups.items() if a == algo and p == pretrained for r in rs
            ]
            if not runs:
                continue
            common = sorted(set.intersection(*(set(r["update"].tolist()) for r in runs)))
            iqm = [
                metrics.aggregate_iqm(
                    np.array([[r["score"][list(r["update"]).index(u)]] for r in runs])
                )
                for u in common
            ]
            ax.plot(common, iqm, color=color, label=f"{label} ({len(runs)} runs)")
        ax.set_title(f"{algorithm}: IQM over datasets and seeds", fontsize=9)
        ax.set_xlabel("updates (pretraining included)")
        ax.xaxis.set_major_formatter(kilo)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    paths.append(save(fig, out_dir, "figure2_iqm.png"))
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "root",
        nargs="+",
        help="folder(s) holding the run directories (searched recursively); several grids are "
        "summarized as one (Figure 2's TD3+BC and EDAC rows from two profiles)",
    )
    parser.add_argument(
        "--out", default=None, help="write summary.md and PNG plots here (default: print only)"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument(
        "--together", action="store_true", help="also one plot per dataset with every group's curve"
    )
    parser.add_argument(
        "--figure2", action="store_true", help="Figure 2 panels, reach table, rliable aggregates"
    )
    parser.add_argument("--reps", type=int, default=2000, help="--figure2: bootstrap resamples")
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
        "--switch",
        type=int,
        default=None,
        metavar="SPAN",
        help="also the switch table: each pretrained run's score at the switch and its lowest "
        "in the SPAN updates after",
    )
    parser.add_argument(
        "--allow-dips",
        type=int,
        default=0,
        metavar="K",
        help="sustained efficiency: evaluations that may fall below the threshold after the "
        "plateau starts",
    )
    args = parser.parse_args(argv)
    if args.allow_dips < 0:
        parser.error(f"--allow-dips must be >= 0 (got {args.allow_dips})")
    if args.window and not 0 <= args.window[0] <= args.window[1]:
        parser.error(f"--window needs 0 <= START <= END (got {args.window[0]} {args.window[1]})")
    runs = [run for root in args.root for run in load_runs(root, args.window)]
    unfinished = [d for root in args.root for d in in_progress(root)]
    if unfinished:
        print(
            f"not finished, left out ({len(unfinished)}): "
            + ", ".join(os.path.basename(d) for d in unfinished)
        )
    if not runs:
        raise SystemExit(
            "error: no finished runs (config.json, eval.csv and summary.csv) under "
            + ", ".join(args.root)
        )
    twice = duplicates(runs)
    if twice:
        raise SystemExit(
            f"error: {twice} (summarize one of them: pass folders that do not overlap)"
        )
    groups = group(runs)
    table = markdown(groups, efficiency(groups, args.allow_dips), args.allow_dips)
    if args.figure2:
        reached = reach(groups, dips=args.allow_dips)
        table += "\n\n" + figure2_markdown(
            groups, reached, rliable_summary(groups, args.reps), args.allow_dips
        )
    if args.switch:
        table += "\n\n" + switch_markdown(groups, args.switch)
    print(table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "summary.md"), "w") as f:
            f.write(table + "\n")
        print(f"wrote {os.path.join(args.out, 'summary.md')} (the tables above)")
        if args.figure2:
            path = os.path.join(args.out, "figure2_table.md")
            with open(path, "w") as f:
                f.write(readme_table(groups, reached) + "\n")
            print(f"wrote {path} (README's table: one line per panel with its verdict)")
        if not args.no_plots:
            paths = plot(groups, args.out) + (
                plot_together(groups, args.out) if args.together else []
            )
            for path in paths + (plot_figure2(groups, args.out) if args.figure2 else []):
                print(f"wrote {path}")


if __name__ == "__main__":
    main()
