"""The report's figures (PNG, matplotlib). Optuna's own plots where it has them; ours for the rest.

Each function takes what it draws and a path, writes the PNG and returns the path.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

# pyplot picks its backend when the first figure is drawn, Agg where there is no display: the
# backend of a notebook or a desktop importing nas stays the user's (each figure here is saved, then closed)
import matplotlib.pyplot as plt
import numpy as np
import optuna
import pandas as pd

from nas.files import atomic
from nas.verdict import LAST_K, THRESHOLD


def plain(draw):
    """Draw with matplotlib's default style: Optuna's plots switch the global style to ggplot."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with plt.style.context("default"):
            return draw(*args, **kwargs)

    return wrapper


def _save(fig, path: Path) -> Path:
    try:
        return atomic(path, lambda p: fig.savefig(p, format=path.suffix[1:], dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)


def pareto(frame: pd.DataFrame) -> pd.DataFrame:
    """Completed trials that no other beats on both counts (fewer parameters, higher accuracy)."""
    done = frame.dropna(subset=["value"]).sort_values(["params", "value"], ascending=[True, False])
    best, keep = -np.inf, []
    for i, row in done.iterrows():
        if row["value"] > best:
            best = row["value"]
            keep.append(i)
    return done.loc[keep]


@plain
def params_vs_accuracy(frame: pd.DataFrame, budget: int, path: Path, title: str) -> Path:
    """Validation accuracy against parameters: completed trials, pruned trials (their best epoch,
    faded), the Pareto front, the budget line and the reference baselines named."""
    fig, ax = plt.subplots(figsize=(8, 5))
    pruned = frame[(frame["state"] == "pruned") & frame["best_val"].notna()]
    done = frame.dropna(subset=["value"])
    ax.scatter(pruned["params"], pruned["best_val"], s=14, c="0.75", label="pruned (best epoch so far)")
    ax.scatter(done["params"], done["value"], s=22, c="tab:blue", label=f"completed (worst of last {LAST_K} epochs)")
    front = pareto(frame)
    ax.step(front["params"], front["value"], where="post", c="tab:green", lw=1.5, label="Pareto front")
    for _, row in done[done["baseline"].fillna("") != ""].iterrows():
        ax.scatter(row["params"], row["value"], s=70, marker="*", c="tab:orange", zorder=3)
        ax.annotate(row["baseline"], (row["params"], row["value"]), textcoords="offset points", xytext=(-8, 6),
                    ha="right", fontsize=8)  # fmt: skip
    ax.axvline(budget, c="tab:red", ls="--", lw=1, label=f"budget {budget:,}")
    top = done["value"].max() if len(done) else frame["best_val"].max()
    ax.set_ylim(max(frame["best_val"].min(), top - 3) - 0.1, top + 0.3)
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel("validation accuracy %")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def optuna_plot(kind: str, study: optuna.Study, path: Path, **kwargs) -> Path | None:
    """One of Optuna's matplotlib plots ("optimization_history", "param_importances",
    "intermediate_values"), `kwargs` passed to it; None where the study has too little for it."""
    plot = getattr(optuna.visualization.matplotlib, f"plot_{kind}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
        try:
            ax = plot(study, **kwargs)
        except (ValueError, RuntimeError):  # e.g. importances need 2+ completed trials
            return None
    fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
    fig.set_size_inches(9, 5)
    if kind == "intermediate_values":  # a legend entry per trial and a few diverged runs hide the rest
        if ax.get_legend() is not None:
            ax.get_legend().remove()
        values = np.concatenate([line.get_ydata() for line in ax.get_lines()])
        if len(values):
            ax.set_ylim(np.percentile(values, 10) - 0.5, values.max() + 0.2)
        ax.set_title(f"Intermediate values: validation accuracy % per epoch, {len(ax.get_lines())} trained trials")
    return _save(fig, path)


@plain
def confirmation_curves(runs: dict[str, list[list[float]]], path: Path) -> Path:
    """Test accuracy per epoch of every confirmation run, one panel per configuration, with the
    threshold line: "consistent" means every curve is at or above it in each of the last K epochs."""
    n = len(runs)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False, sharey=True)
    for ax, (name, curves) in zip(axes[0], runs.items(), strict=True):
        for seed, acc in enumerate(curves):
            ax.plot(range(1, len(acc) + 1), acc, marker=".", lw=1, label=f"seed {seed}")
        ax.axhline(THRESHOLD, c="tab:red", ls="--", lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    later = [a for curves in runs.values() for acc in curves for a in acc[len(acc) // 3 :]]  # past the warm-up
    axes[0][0].set_ylim(min(later) - 0.1, max(*later, THRESHOLD) + 0.1)
    axes[0][0].set_ylabel("test accuracy %")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    return _save(fig, path)


@plain
def confusion(matrix: np.ndarray, path: Path, title: str) -> Path:
    """10 x 10 counts, true class by row; the diagonal dimmed so the errors stand out."""
    fig, ax = plt.subplots(figsize=(6, 5.4))
    off = matrix.astype(float).copy()
    np.fill_diagonal(off, np.nan)
    ax.imshow(off, cmap="Reds")
    for i in range(10):
        for j in range(10):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7, color="0.5" if i == j else "black")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


@plain
def misclassified(images: np.ndarray, true: np.ndarray, pred: np.ndarray, path: Path, title: str) -> Path:
    """Every misclassified test digit (up to 100) with its true and predicted label."""
    n = min(len(images), 100)
    cols = 10
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.95, rows * 1.1), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            ax.imshow(images[k], cmap="gray_r")
            ax.set_title(f"{true[k]}→{pred[k]}", fontsize=7)
    fig.suptitle(title + (f" (the first {n} shown)" if len(images) > n else ""), fontsize=9)
    return _save(fig, path)


# single runs published for tiny MNIST networks, for scale (no multi-seed results exist for them):
# the reference's best, and two public networks (docs/results.md names them)
PUBLISHED = [  # (params, lowest and highest test % reported over its last epochs, label): single runs
    (7826, 99.48, 99.48, "reference (reported, 1 run)"),
    (6174, 99.45, 99.45, "public, 1 seed"),
    (5854, 99.40, 99.40, "public, 1 run"),
    (3762, 99.41, 99.52, "adilsammar/woolly-of-cv (1 run, epochs 12-15)"),
]


@plain
def frontier(rows: list[dict], baselines: list[tuple[int, float, str]], path: Path) -> Path:
    """Test accuracy against parameters of each budget's winner on its fresh seeds (mean, 95%
    interval, each seed's worst of the last K epochs), the threshold line, the published points and
    the replayed baselines (params, mean final, label)."""
    fig, ax = plt.subplots(figsize=(8, 5))
    points: dict[tuple, list[dict]] = {}  # one network winning at several budgets: one point, one label
    for r in rows:
        points.setdefault((r["params"], r["mean"]), []).append(r)
    for same in points.values():
        r = same[0]
        ax.errorbar(r["params"], r["mean"], yerr=[[r["mean"] - r["ci95_low"]], [r["ci95_high"] - r["mean"]]],
                    fmt="o", c="tab:blue" if r["consistent"] else "tab:orange", capsize=4)  # fmt: skip
        ax.scatter([r["params"]], [r["worst_last_k"]], marker="v", c="tab:gray", s=18)
        label = ", ".join(f"b{x['budget']}" for x in same)
        ax.annotate(label, (r["params"], r["mean"]), textcoords="offset points", xytext=(6, 6), fontsize=8)
    for params, low, high, label in PUBLISHED:
        ax.scatter([params], [high], marker="*", s=90, c="tab:green")
        if low < high:  # the range its last epochs span
            ax.vlines(params, low, high, colors="tab:green", lw=1.5)
        ax.annotate(label, (params, high), textcoords="offset points", xytext=(6, -10), fontsize=7)
    groups: list[list] = []  # points at one size within 0.02 points share a label: they would overlap
    for params, acc, label in sorted(baselines):
        if groups and groups[-1][0] == params and acc - groups[-1][1] < 0.02:
            groups[-1][2].append(label)
        else:
            groups.append([params, acc, [label]])
    for params, acc, labels in groups:
        ax.annotate(
            ", ".join(labels), (params, acc), textcoords="offset points", xytext=(-6, -3), ha="right", fontsize=7
        )
    if baselines:
        ax.scatter(*zip(*[(p, a) for p, a, _ in baselines], strict=True), marker="s", s=30, c="tab:purple",
                   label="the reference's baselines, replayed (mean final)")  # fmt: skip
    ax.axhline(THRESHOLD, c="tab:red", ls="--", lw=1, label=f"{THRESHOLD:.2f}%")
    ax.set_xlabel("parameters")
    ax.set_ylabel("test accuracy % (fresh seeds)")
    ax.set_title("frontier: mean and 95% interval (blue: consistent), worst of the last epochs (triangles)")
    ax.grid(alpha=0.3)
    ax.margins(x=0.15)  # room for the labels at the smallest and largest sizes
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)
