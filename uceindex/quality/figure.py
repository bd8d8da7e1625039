"""The quality report as one PNG: cosine histograms, mixing per data set, label confusions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

MAX_DATASETS_DRAWN = 20  # histograms and bars beyond it are left out (the JSON has them all)


def plot_qc(report: dict, path: str | Path) -> Path:
    """Draw `qc`'s report at `path` (parent folder must exist); returns the path. The Agg
    canvas directly, never pyplot: no display, no global matplotlib state (safe in the
    service)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # a dependency; loaded when used
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 5), layout="constrained")
    FigureCanvasAgg(fig)
    cosine, mixing, confused = fig.subplots(1, 3)
    datasets = report["datasets"][:MAX_DATASETS_DRAWN]
    _histograms(cosine, report, datasets)
    _mixing(mixing, report, datasets)
    _confusions(confused, report)
    sample = report["sample"]
    fig.suptitle(
        f"{report['store']}: {sample['cells']:,} sampled cells (seed {sample['seed']}), "
        f"k = {sample['k']}",
        fontsize=10,
    )
    path = Path(path)
    fig.savefig(path, format="png", dpi=110)
    return path


def _histograms(ax, report: dict, datasets: list[dict]) -> None:
    edges = np.asarray(report["cosine_bins"])
    centres = (edges[1:] + edges[:-1]) / 2
    for name, part in [("all", report["overall"]), *((d["dataset_id"], d) for d in datasets)]:
        counts = np.asarray(part["cosine"]["histogram"], dtype=np.float64)
        if counts.sum() > 0:
            ax.plot(centres, counts / counts.sum(), drawstyle="steps-mid", label=str(name))
    ax.axvline(report["thresholds"]["collapse_mean_cosine"], color="red", ls="--", lw=1)
    ax.set_xlabel("cosine of random cell pairs")
    ax.set_ylabel("share of pairs")
    ax.set_title("collapse: pairwise cosine (red: alarm on the mean)", fontsize=9)
    if ax.lines[1:]:  # the threshold line has no label
        ax.legend(fontsize=7)


def _mixing(ax, report: dict, datasets: list[dict]) -> None:
    names = [str(d["dataset_id"]) for d in datasets]
    scores = [d["mixing"]["score"] for d in datasets]
    if report["overall"]["datasets"] < 2 or all(s is None for s in scores):
        ax.text(0.5, 0.5, "one data set: nothing to mix", ha="center", va="center")
        ax.set_axis_off()
        return
    ax.bar(range(len(names)), [s or 0.0 for s in scores])
    ax.axhline(report["thresholds"]["poor_mixing"], color="red", ls="--", lw=1)
    ax.axhline(1.0, color="grey", ls=":", lw=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("mixing score (1: random mixing)")
    ax.set_title("batch mixing among neighbours (red: poor)", fontsize=9)


def _confusions(ax, report: dict) -> None:
    label = report["label"]
    pairs = report["overall"]["confusions"].get(label, []) if label else []
    if not pairs:
        ax.text(0.5, 0.5, "no labels confused" if label else "no label column", ha="center")
        ax.set_axis_off()
        return
    names = sorted({n for p in pairs for n in p["labels"]})
    at = {n: i for i, n in enumerate(names)}
    matrix = np.zeros((len(names), len(names)))
    for p in pairs:
        a, b = (at[n] for n in p["labels"])
        matrix[a, b] = matrix[b, a] = p["share"]
    image = ax.imshow(matrix, cmap="viridis", vmin=0.0, interpolation="nearest")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_title(f"{label}: most confused pairs (share of their neighbour slots)", fontsize=9)
    ax.figure.colorbar(image, ax=ax)
