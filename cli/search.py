"""`uceindex index`, `annotate` (alias `query`), `similar`, `match`: search the store, annotate
and match cells."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from cli.options import (
    AsOfOpt,
    DeviceOpt,
    EmbeddingKeyOpt,
    ExactOpt,
    GeneFilterOpt,
    JsonOpt,
    KOpt,
    LabelOpt,
    MinScoreOpt,
    ModelDirOpt,
    NprobesOpt,
    OntologyOpt,
    StorageOpt,
    StoreOpt,
    WhereOpt,
    choices,
    opened_store,
    store_uri,
)
from cli.render import console, err_console, handle_errors, print_json, progress_bar
from uceindex.io.genes import GeneFilter
from uceindex.search.annotation import K
from uceindex.search.index import KINDS
from uceindex.search.ontology_vote import MIN_SCORE
from uceindex.search.query import LABEL
from uceindex.search.recall import RECALL_SAMPLE
from uceindex.search.similar_cells import SIMILAR_K

INDEX_EPILOG = "Example: uceindex index --store ./atlas --stats"
ANNOTATE_EPILOG = (
    "Example: uceindex annotate new.h5ad --species human --k 50 --label cell_type "
    "--out predictions.csv --store ./atlas  (or --embedding-key X_uce; --out pred.h5ad; "
    "--ontology --min-score 0.5 for Cell Ontology terms)"
)
QUERY_HELP = (
    "Alias of annotate, with the same options: predict a label for every cell of an .h5ad "
    "from its nearest stored cells; flags novel cells."
)
QUERY_EPILOG = (
    "Example: uceindex query new.h5ad --species human --out predictions.csv --store ./atlas"
)
SIMILAR_EPILOG = "Example: uceindex similar --cell-id pbmc/AAACATACAACCAC-1 --k 20 --store ./atlas"
MATCH_EPILOG = (
    "Example: uceindex match mouse.h5ad --species mouse --against human --label cell_type "
    "--plot match.png --out match.csv --store ./atlas  "
    "(--ontology-level 'myeloid cell' --ontology-level lymphocyte: match at Cell Ontology terms)"
)
TOP_LABELS = 15  # rows of the query summary table
IndexKind = choices("IndexKind", KINDS)


@handle_errors
def index(
    store: StoreOpt = None,
    storage_option: StorageOpt = None,
    kind: Annotated[
        IndexKind,
        typer.Option(help="Index kind; auto chooses by table size, flat means no index."),
    ] = "auto",
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Retrain the index even if it is fresh.")
    ] = False,
    partition_size: Annotated[
        Optional[int], typer.Option(help="Rows per IVF partition (default: about sqrt(rows)).")
    ] = None,
    stats: Annotated[
        bool,
        typer.Option("--stats", help="Also measure recall@k on a sample against exact search."),
    ] = False,
    k: KOpt = K,
    sample: Annotated[
        int, typer.Option(help="Stored cells used as queries by --stats.")
    ] = RECALL_SAMPLE,
    json: JsonOpt = False,
) -> None:
    """Build or refresh the vector index of a store (run it after ingesting); --stats measures its recall."""
    from uceindex.search import index_stats, refresh_index

    with opened_store(store, storage_option) as opened:
        report = refresh_index(opened, kind.value, rebuild=rebuild, partition_size=partition_size)
        data = report.as_dict()
        if stats:
            data["recall"] = index_stats(opened, k=k, sample=sample).as_dict()
    if json:
        print_json(data)
        return
    table = Table(title=f"index of {store_uri(store)}", show_header=False)
    table.add_row("action", f"{data['action']} in {data['seconds']:.1f} s")
    table.add_row(
        "kind", data["kind"] + (" (exact search, no index)" if data["kind"] == "flat" else "")
    )
    table.add_row("cells", f"{data['n_rows']:,} ({data['unindexed_rows']:,} not in the index)")
    if data["num_partitions"]:
        table.add_row("partitions", f"{data['num_partitions']:,}")
    if data["scalar_indexes_built"]:
        table.add_row("scalar indexes added", ", ".join(data["scalar_indexes_built"]))
    if stats:
        r = data["recall"]
        settings = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        table.add_row(
            f"recall@{r['k']}",
            f"{r['recall_mean']:.3f} mean, {r['recall_p05']:.3f} 5th percentile, "
            f"{r['recall_min']:.3f} min over {r['sample']} cells ({settings})",
        )
        table.add_row(
            "ms per query (batched)",
            f"{r['index_ms_per_query']:.2f} as searched, {r['exact_ms_per_query']:.2f} exact",
        )
    console.print(table)


@handle_errors
def annotate(
    input: Annotated[Path, typer.Argument(help="The .h5ad of the cells to annotate.")],
    store: StoreOpt = None,
    storage_option: StorageOpt = None,
    species: Annotated[
        Optional[str], typer.Option(help="Species of the query cells (needed to embed them).")
    ] = None,
    k: KOpt = K,
    label: LabelOpt = LABEL,
    where: WhereOpt = None,
    embedding_key: EmbeddingKeyOpt = None,
    model_dir: ModelDirOpt = None,
    out: Annotated[
        Optional[Path],
        typer.Option(
            help="Write the predictions: .csv, .parquet, or .h5ad (the input with obs columns)."
        ),
    ] = None,
    neighbours: Annotated[
        bool, typer.Option("--neighbours", help="Also output the neighbour cell ids.")
    ] = False,
    nprobes: NprobesOpt = None,
    exact: ExactOpt = False,
    device: DeviceOpt = None,
    gene_filter: GeneFilterOpt = GeneFilter.PER_CELL,
    as_of: AsOfOpt = None,
    ontology: OntologyOpt = False,
    min_score: MinScoreOpt = MIN_SCORE,
    json: JsonOpt = False,
) -> None:
    """Predict a label for every cell of an .h5ad from its nearest stored cells; flags novel cells."""
    from uceindex.io.h5ad import read_h5ad
    from uceindex.io.paths import check_output
    from uceindex.search import OUT_SUFFIXES, summarise, write_output
    from uceindex.search import annotate as annotate_cells

    if out is not None:  # before the query is embedded and searched
        check_output(out, OUT_SUFFIXES, "--out")
    adata = read_h5ad(input)
    with (
        opened_store(store, storage_option, as_of) as opened,
        progress_bar("annotating", quiet=json) as update,
    ):
        frame = annotate_cells(
            opened,
            adata,
            label=label,
            k=k,
            where=where,
            species=species,
            embedding_key=embedding_key,
            model_dir=model_dir,
            neighbour_ids=neighbours,
            nprobes=nprobes,
            exact=exact,
            device=device,
            gene_filter=gene_filter,
            progress=update,
            ontology=ontology,
            min_score=min_score,
        )
    if out is not None:
        write_output(frame, out, adata=adata, label=label)
    summary = {**summarise(frame), "output": str(out) if out else None}
    if json:
        print_json(summary)
        return
    _warn(summary["warnings"])
    title = f"{input.name}: {summary['cells']:,} cells, {label} from k={k} neighbours" + (
        f" where {where}" if where else ""
    )
    if summary.get("as_of") is not None:
        title += f", store as of version {summary['as_of']}"
    table = Table(title=title)
    for column in ("predicted", "cells", "mean confidence", "novel"):
        table.add_column(column, justify="left" if column == "predicted" else "right")
    for row in summary["labels"][:TOP_LABELS]:
        table.add_row(
            str(row["predicted"]),
            f"{row['cells']:,}",
            f"{row['mean_confidence']:.2f}",
            f"{row['novel']:,}",
        )
    if len(summary["labels"]) > TOP_LABELS:
        table.add_row(f"... {len(summary['labels']) - TOP_LABELS} more", "", "", "")
    console.print(table)
    line = f"novel: {summary['novel']:,} cells (mean neighbour similarity below {summary['novelty_threshold']:.4f})"
    if summary["not_searched"]:
        line += f"; {summary['not_searched']:,} cells could not be embedded and have no prediction"
    console.print(line, highlight=False)
    if ontology:
        _print_terms(summary)
    if out is not None:
        console.print(f"wrote {out}", highlight=False)


def _print_terms(summary: dict) -> None:
    table = Table(
        title=f"Cell Ontology terms, min score {summary['min_score']} ({summary['cell_ontology']})"
    )
    for column in ("term", "term label", "cells", "mean score"):
        table.add_column(column, justify="right" if column in ("cells", "mean score") else "left")
    for row in summary["terms"][:TOP_LABELS]:
        table.add_row(
            row["term_id"] or "(none reached the min score)",
            row["term_label"] or "",
            f"{row['cells']:,}",
            "" if row["mean_score"] is None else f"{row['mean_score']:.2f}",
        )
    console.print(table)


def _warn(warnings: list[str]) -> None:
    for warning in warnings:
        err_console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)


@handle_errors
def similar(
    cell_id: Annotated[str, typer.Option("--cell-id", help="DATASET/OBS_NAME of a stored cell.")],
    store: StoreOpt = None,
    storage_option: StorageOpt = None,
    k: KOpt = SIMILAR_K,
    where: WhereOpt = None,
    nprobes: NprobesOpt = None,
    exact: ExactOpt = False,
    as_of: AsOfOpt = None,
    json: JsonOpt = False,
) -> None:
    """List the stored cells most similar to one stored cell."""
    from uceindex.search import similar as find_similar

    with opened_store(store, storage_option, as_of) as opened:
        frame = find_similar(opened, cell_id, k, where=where, nprobes=nprobes, exact=exact)
    if json:
        print_json(
            {"cell_id": cell_id, "k": k, "where": where, "neighbours": frame.to_dict("records")}
        )
        return
    table = Table(title=f"cells most similar to {cell_id}" + (f" where {where}" if where else ""))
    for column in frame.columns:
        table.add_column(column, justify="right" if column in ("rank", "similarity") else "left")
    for row in frame.itertuples(index=False):
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row))
    console.print(table)


@handle_errors
def match(
    input: Annotated[Path, typer.Argument(help="The .h5ad of the query cells (one species).")],
    species: Annotated[str, typer.Option(help="Species of the query cells, e.g. mouse.")],
    against: Annotated[
        str, typer.Option(help="Species of the stored reference cells, e.g. human.")
    ],
    store: StoreOpt = None,
    storage_option: StorageOpt = None,
    label: LabelOpt = LABEL,
    query_label: Annotated[
        Optional[str], typer.Option(help="The query's own label column (default: --label).")
    ] = None,
    k: KOpt = K,
    where: WhereOpt = None,
    embedding_key: EmbeddingKeyOpt = None,
    model_dir: ModelDirOpt = None,
    out: Annotated[Optional[Path], typer.Option(help="Write the matching table as CSV.")] = None,
    cells_out: Annotated[
        Optional[Path], typer.Option(help="Write the per-cell predictions (.csv, .parquet, .h5ad).")
    ] = None,
    plot: Annotated[
        Optional[Path], typer.Option(help="Draw the matching matrix as a PNG heatmap.")
    ] = None,
    nprobes: NprobesOpt = None,
    exact: ExactOpt = False,
    device: DeviceOpt = None,
    gene_filter: GeneFilterOpt = GeneFilter.PER_CELL,
    as_of: AsOfOpt = None,
    ontology_level: Annotated[
        Optional[list[str]],
        typer.Option(
            help="Match at these Cell Ontology terms (CL id or label, repeatable, e.g. "
            "'myeloid cell') instead of the stored labels (docs/ontology.md).",
        ),
    ] = None,
    min_score: MinScoreOpt = MIN_SCORE,
    json: JsonOpt = False,
) -> None:
    """Match the labels of query cells of one species to the stored labels of another."""
    from uceindex.io.h5ad import read_h5ad
    from uceindex.io.paths import check_output
    from uceindex.search import OUT_SUFFIXES, write_output
    from uceindex.search import match as run_match

    for path, suffixes, option in (
        (out, (".csv",), "--out"),
        (cells_out, OUT_SUFFIXES, "--cells-out"),
        (plot, (".png",), "--plot"),
    ):
        if path is not None:  # before the query is embedded and searched
            check_output(path, suffixes, option)
    adata = read_h5ad(input)
    with (
        opened_store(store, storage_option, as_of) as opened,
        progress_bar("matching", quiet=json) as update,
    ):
        result = run_match(
            opened,
            adata,
            species=species,
            against=against,
            label=label,
            query_label=query_label,
            k=k,
            where=where,
            embedding_key=embedding_key,
            model_dir=model_dir,
            nprobes=nprobes,
            exact=exact,
            device=device,
            gene_filter=gene_filter,
            progress=update,
            ontology_level=ontology_level,
            min_score=min_score,
        )
    if out is not None:
        result.write_table(out)
    if cells_out is not None:
        write_output(result.cells, cells_out, adata=adata, label=label)
    if plot is not None:
        result.plot(plot)
    if json:
        print_json(
            {
                "species": species,
                "against": against,
                "cells": len(result.cells),
                "table": result.table.to_dict("records"),
                "outputs": [str(p) for p in (out, cells_out, plot) if p is not None],
                "cell_ontology": result.cells.attrs.get("cell_ontology"),
                "warnings": result.cells.attrs["warnings"],
            }
        )
        return
    _warn(result.cells.attrs["warnings"])
    target = f"Cell Ontology terms ({', '.join(ontology_level)})" if ontology_level else label
    table = Table(
        title=f"{input.name}: {species} {query_label or label} -> {against} {target} (k={k})"
    )
    columns = ("query label", "best reference label", "share", "mean similarity", "novel", "cells")
    for column in columns:
        table.add_column(column, justify="left" if "label" in column else "right")
    for row in result.best().itertuples(index=False):
        table.add_row(
            str(row.query_label),
            str(row.reference_label),
            f"{row.share:.2f}",
            f"{row.mean_similarity:.3f}",
            "-" if math.isnan(row.novel_share) else f"{row.novel_share:.0%}",
            f"{row.n_cells:,}",
        )
    console.print(table)
    for path in (out, cells_out, plot):
        if path is not None:
            console.print(f"wrote {path}", highlight=False)
