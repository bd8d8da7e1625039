"""`uceindex qc`: the atlas quality report (collapse, batch mixing, label coherence, ingest)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from cli.options import JsonOpt, OneDatasetOpt, StorageOpt, StoreOpt, storage_options, store_uri
from cli.render import console, err_console, handle_errors, print_json, progress_bar
from uceindex.quality.report import DEFAULT_K, DEFAULT_SAMPLE, MAX_K, MAX_SAMPLE

EPILOG = "Example: uceindex qc --store ./atlas --plot qc.png  (or --dataset pbmc --json)"


def _num(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


@handle_errors
def qc(
    store: StoreOpt = None,
    storage_option: StorageOpt = None,
    dataset: OneDatasetOpt = None,
    sample: Annotated[
        int,
        typer.Option(
            help=f"Cells sampled, balanced over data sets (at most {MAX_SAMPLE:,}).",
            min=2,
            max=MAX_SAMPLE,
        ),
    ] = DEFAULT_SAMPLE,
    k: Annotated[
        int, typer.Option("--k", help="Neighbours per sampled cell.", min=1, max=MAX_K)
    ] = DEFAULT_K,
    label: Annotated[
        Optional[str],
        typer.Option(help="Label column for coherence and mixing (default cell_type, if any)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sample; same seed, same report.")] = 0,
    plot: Annotated[
        Optional[Path], typer.Option(help="Also draw the report as a PNG here.")
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Check a store before trusting its neighbours: collapsed embeddings, data sets that do
    not mix, incoherent labels, and what ingest rejected."""
    from uceindex import plot_qc
    from uceindex import qc as run_qc

    with progress_bar("qc", unit="steps", quiet=json) as update:
        report = run_qc(
            store_uri(store),
            dataset=dataset,
            sample=sample,
            k=k,
            label=label,
            seed=seed,
            storage_options=storage_options(storage_option),
            progress=update,
        )
    if plot is not None:
        plot_qc(report, plot)
    if json:
        print_json(report)
        return
    _render(report)
    if plot is not None:
        console.print(f"plot: {plot}", highlight=False)


def _render(report: dict) -> None:
    s = report["sample"]
    label = report["label"]
    quality = Table(
        title=f"quality of {report['store']} on {s['cells']:,} sampled cells "
        f"(seed {s['seed']}, k = {s['k']}, exact k-NN)"
    )
    for column in ("data set", "sampled", "cosine mean ± sd", "mixing", "coherence (chance)"):
        quality.add_column(column)
    overall = {"dataset_id": "all", "sampled": report["overall"]["cells"], **report["overall"]}
    for d in [overall, *report["datasets"]]:
        quality.add_row(*_quality_row(d, label))
    console.print(quality)
    ingest = Table(title="as ingested")
    for column in ("data set", "cells", "rejected", "genes matched", "seed", "model"):
        ingest.add_column(column)
    for d in report["datasets"]:
        ingest.add_row(
            str(d["dataset_id"]),
            _num(d["n_cells"], ","),
            f"{sum(d['rejects'].values()):,}",
            "-" if d["genes_matched"] is None else f"{d['genes_matched']:,}/{d['n_genes']:,}",
            "-" if d["seed"] is None else str(d["seed"]),
            f"{d['model_name']} {str(d['model_fingerprint'])[:12]}",
        )
    console.print(ingest)
    for d in report["datasets"]:
        for reason, n in d["rejects"].items():
            console.print(f"{d['dataset_id']}: rejected {n:,}: {reason}", highlight=False)
    for column, pairs in report["overall"]["confusions"].items():
        for p in pairs[:5]:
            console.print(
                f"{column} confused: {p['labels'][0]} <-> {p['labels'][1]} "
                f"({p['share']:.1%} of their neighbour slots)",
                highlight=False,
            )
    for f in report["flags"]:
        where = f["dataset_id"] or "all data sets"
        err_console.print(f"[yellow]flag:[/yellow] {where}: {f['message']}", highlight=False)
    if not report["flags"]:
        console.print("no flags (collapse, poor mixing)", highlight=False)


def _quality_row(d: dict, label: str | None) -> list[str]:
    cosine = d["cosine"]
    coherence = d["coherence"].get(label) if label else None
    return [
        str(d["dataset_id"]),
        f"{d['sampled']:,}",
        f"{_num(cosine['mean'], '.3f')} ± {_num(cosine['std'], '.3f')}",
        _num(d["mixing"]["score"]),
        "-" if coherence is None else f"{_num(coherence['share'])} ({_num(coherence['chance'])})",
    ]
