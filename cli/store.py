"""`uceindex ingest`, `uceindex datasets`, `uceindex export`: files into the store and back."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from cli.options import (
    DeviceOpt,
    EmbeddingKeyOpt,
    GeneFilterOpt,
    JsonOpt,
    LayerOpt,
    MinGenesOpt,
    ModelDirOpt,
    PrecisionOpt,
    SeedOpt,
    StorageOpt,
    StoreOpt,
    storage_options,
    store_uri,
)
from cli.render import (
    console,
    err_console,
    handle_errors,
    per_second,
    print_json,
    progress_bar,
)
from uceindex.ingestion import CHUNK_CELLS_OBSM, CHUNK_CELLS_UCE
from uceindex.io.genes import MIN_GENES, MIN_MATCHED_SHARE, GeneFilter
from uceindex.model.numerics import DEFAULT_PRECISION

INGEST_EPILOG = (
    "Example: uceindex ingest pbmc.h5ad --species human --store ./atlas  "
    "(or --embedding-key X_uce to store embeddings already in the file)"
)
DATASETS_EPILOG = "Example: uceindex datasets --store ./atlas"
EXPORT_EPILOG = "Example: uceindex export --store ./atlas --dataset pbmc out.h5ad"


@handle_errors
def ingest(
    files: Annotated[
        list[Path], typer.Argument(help="The .h5ad files; each becomes one data set.")
    ],
    species: Annotated[
        Optional[str],
        typer.Option(help="Species of the cells, e.g. human, mouse (default: from the file)."),
    ] = None,
    store: StoreOpt = None,
    storage_option: StorageOpt = None,
    model_dir: ModelDirOpt = None,
    embedding_key: EmbeddingKeyOpt = None,
    dataset_id: Annotated[
        Optional[str],
        typer.Option(help="Data set id (one file only; default: the file name without .h5ad)."),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace a data set already in the store.")
    ] = False,
    seed: SeedOpt = 0,
    layer: LayerOpt = None,
    min_genes: MinGenesOpt = MIN_GENES,
    min_share: Annotated[
        float,
        typer.Option(help="Refuse a file when fewer of its genes are in the model's vocabulary."),
    ] = MIN_MATCHED_SHARE,
    chunk_cells: Annotated[
        Optional[int],
        typer.Option(
            help=f"Cells per commit (default {CHUNK_CELLS_UCE} embedding, "
            f"{CHUNK_CELLS_OBSM} with --embedding-key)."
        ),
    ] = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = DEFAULT_PRECISION,
    gene_filter: GeneFilterOpt = GeneFilter.PER_CELL,
    workers: Annotated[
        Optional[int],
        typer.Option(help="Embed on a local Ray with N workers (pip install 'uceindex[scale]')."),
    ] = None,
    ray: Annotated[
        Optional[str],
        typer.Option(
            "--ray", metavar="HOST:PORT", help="Embed on the Ray cluster at HOST:PORT (ray start)."
        ),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Embed .h5ad files (or take their obsm embeddings) into a store; re-run the same command to resume."""
    from uceindex import ingest as run_ingest

    scale = {}
    if workers is not None or ray is not None:
        from uceindex import ingest_on_ray as run_ingest

        scale = {"workers": workers, "address": ray}
    with progress_bar("ingest", quiet=json) as update:
        report = run_ingest(
            [str(f) for f in files],
            species=species,
            store=store_uri(store),
            model_dir=model_dir,
            embedding_key=embedding_key,
            dataset_id=dataset_id,
            replace=replace,
            seed=seed,
            layer=layer,
            min_genes=min_genes,
            min_share=min_share,
            chunk_cells=chunk_cells,
            device=device,
            precision=precision.value,
            gene_filter=gene_filter,
            progress=update,
            storage_options=storage_options(storage_option),
            **scale,
        )
    data = report.as_dict()
    if json:
        print_json(data)
        return
    table = Table(title=f"ingest into {data['store']}")
    for column in (
        "data set",
        "action",
        "cells",
        "embedded",
        "rejected",
        "cells/s",
        "genes matched",
    ):
        table.add_column(column)
    for d in data["datasets"]:
        genes = d["genes"]
        table.add_row(
            d["dataset_id"],
            d["action"],
            f"{d['n_cells']:,}",
            f"{d['n_embedded']:,}",
            f"{d['n_rejected']:,}",
            per_second(d["cells_per_s"]) if d["cells_per_s"] else "-",
            f"{genes['genes_matched']:,}/{genes['genes_in_file']:,} ({genes['share_matched']:.0%})"
            if genes
            else d["embedding_source"],
        )
    console.print(table)
    for d in data["datasets"]:
        for reason, n in d["reject_reasons"].items():
            console.print(f"{d['dataset_id']}: rejected {n:,}: {reason}", highlight=False)
        for warning in d["warnings"]:
            err_console.print(f"[yellow]warning:[/yellow] {d['dataset_id']}: {warning}")
        if d["note"]:
            console.print(f"{d['dataset_id']}: {d['note']}", highlight=False)


@handle_errors
def datasets(
    store: StoreOpt = None,
    storage_option: StorageOpt = None,
    json: JsonOpt = False,
) -> None:
    """List the data sets in a store, with the model it is bound to."""
    from uceindex import list_datasets

    data = list_datasets(store_uri(store), storage_options(storage_option))
    if json:
        print_json(data)
        return
    model = data["model"]
    title = f"{data['store']}: {data['cells']:,} cells" + (
        f", model {model['model_name']} ({model['embedding_dim']}-d)" if model else ""
    )
    table = Table(title=title)
    for column in ("data set", "status", "species", "cells", "embedded", "rejected", "source"):
        table.add_column(column)
    for d in data["datasets"]:
        table.add_row(
            d["dataset_id"],
            d["status"],
            d["species"],
            f"{d['n_cells']:,}",
            "-" if d["n_embedded"] is None else f"{d['n_embedded']:,}",
            "-" if d["n_rejected"] is None else f"{d['n_rejected']:,}",
            d["embedding_source"],
        )
    console.print(table)


@handle_errors
def export(
    output: Annotated[Path, typer.Argument(help="Where to write the .h5ad.")],
    dataset: Annotated[str, typer.Option("--dataset", help="The data set id to export.")],
    store: StoreOpt = None,
    storage_option: StorageOpt = None,
    json: JsonOpt = False,
) -> None:
    """Write one data set of a store as .h5ad: its obs columns and obsm['X_uce']."""
    from uceindex import export as run_export

    summary = run_export(store_uri(store), dataset, output, storage_options(storage_option))
    if json:
        print_json(summary)
        return
    console.print(
        f"{summary['cells']:,} cells of {summary['dataset_id']} -> {summary['output']} "
        f"(obsm['{summary['obsm']}'], {summary['embedding_dim']}-d, "
        f"{len(summary['obs_columns'])} obs columns)",
        highlight=False,
    )
