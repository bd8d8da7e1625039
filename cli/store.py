"""`uceindex ingest`, `datasets`, `export`: files into the store and back; `versions`, `tag`:
its history."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from cli.options import (
    AsOfOpt,
    DeviceOpt,
    EmbeddingKeyOpt,
    GeneFilterOpt,
    JsonOpt,
    LabelMapOpt,
    LayerOpt,
    MinGenesOpt,
    ModelDirOpt,
    OneDatasetOpt,
    PrecisionOpt,
    SeedOpt,
    StorageOpt,
    StoreOpt,
    opened_store,
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
CHECK_EPILOG = "Example: uceindex check --store ./atlas --repair"
EXPORT_EPILOG = "Example: uceindex export --store ./atlas --dataset pbmc out.h5ad"
VERSIONS_EPILOG = "Example: uceindex versions --store ./atlas  (then: uceindex query ... --as-of 3)"
TAG_EPILOG = (
    "Example: uceindex tag paper-2026 --store ./atlas  (the latest version; --version 3 for "
    "another; then: uceindex query new.h5ad --as-of paper-2026 ...)"
)
LABELS_EPILOG = "Example: uceindex labels --store ./atlas --label-map labels.csv"


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
    label_map: LabelMapOpt = None,
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
            label_map=label_map,
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
        if d["labels"]:
            n, mapped = d["labels"]["cells"], d["labels"]["mapped_cells"]
            console.print(
                f"{d['dataset_id']}: {mapped:,} of {n:,} cells labelled with a Cell Ontology "
                f"term ({d['labels']['cell_ontology']})",
                highlight=False,
            )


@handle_errors
def labels(
    store: StoreOpt = None,
    storage_option: StorageOpt = None,
    dataset: OneDatasetOpt = None,
    label_map: LabelMapOpt = None,
    json: JsonOpt = False,
) -> None:
    """List the cell_type labels of a store, the Cell Ontology term each maps to, and the unmapped."""
    from uceindex import label_map_of, label_report

    data = label_report(
        store_uri(store),
        dataset,
        label_map=label_map_of(label_map),
        storage_options=storage_options(storage_option),
    )
    if data is None:
        raise _no_labels(dataset)
    if json:
        print_json(data)
        return
    title = (
        f"{data['cells']:,} cells{f' of {dataset}' if dataset else ''}: {data['mapped_cells']:,} "
        f"mapped to {data['terms']:,} terms, {data['unmapped_cells']:,} unmapped "
        f"({data['cell_ontology']})"
    )
    table = Table(title=title)
    for column in ("label", "term", "term label", "mapped by", "cells"):
        table.add_column(column, justify="right" if column == "cells" else "left")
    for row in data["labels"]:
        table.add_row(
            str(row["label"]),
            row["term_id"] or "-",
            row["term_label"] or "-",
            row["mapping"] or "-",
            f"{row['cells']:,}",
        )
    console.print(table)
    if data["unmapped"]:
        console.print(
            f"{len(data['unmapped'])} labels unmapped: add them to a CSV (label,term_id) and "
            "pass it with --label-map to labels (to check) and ingest --replace (to store)",
            highlight=False,
        )


def _no_labels(dataset: str | None):
    from uceindex.errors import QueryError

    where = f"data set {dataset}" if dataset else "store"
    return QueryError(f"the {where} has no cell_type labels and no Cell Ontology ids to list")


@handle_errors
def datasets(
    store: StoreOpt = None,
    storage_option: StorageOpt = None,
    as_of: AsOfOpt = None,
    json: JsonOpt = False,
) -> None:
    """List the data sets in a store, with the model it is bound to."""
    from uceindex import list_datasets

    with opened_store(store, storage_option, as_of) as opened:
        data = list_datasets(opened)
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
    as_of: AsOfOpt = None,
    json: JsonOpt = False,
) -> None:
    """Write one data set of a store as .h5ad: its obs columns and obsm['X_uce']."""
    from uceindex import export as run_export

    with opened_store(store, storage_option, as_of) as opened:
        summary = run_export(opened, dataset, output)
    if json:
        print_json(summary)
        return
    console.print(
        f"{summary['cells']:,} cells of {summary['dataset_id']} -> {summary['output']} "
        f"(obsm['{summary['obsm']}'], {summary['embedding_dim']}-d, "
        f"{len(summary['obs_columns'])} obs columns)",
        highlight=False,
    )


def _when(version: dict) -> str:
    return version["time"][:19].replace("T", " ") + " UTC" if version["time"] else "-"


@handle_errors
def versions(
    store: StoreOpt = None,
    storage_option: StorageOpt = None,
    json: JsonOpt = False,
) -> None:
    """List the versions of a store: when, what changed, tags; --as-of VERSION|TAG reads one."""
    from uceindex import list_versions

    data = list_versions(store_uri(store), storage_options(storage_option))
    if json:
        print_json(data)
        return
    table = Table(title=f"versions of {data['store']}")
    for column in ("version", "time", "change", "tags"):
        table.add_column(column, justify="right" if column == "version" else "left")
    for v in data["versions"]:
        table.add_row(str(v["version"]), _when(v), v["detail"], ", ".join(v["tags"]))
    console.print(table)
    if not data["versions"]:
        console.print("no versions recorded yet: the store changes nothing until written")


@handle_errors
def tag(
    name: Annotated[str, typer.Argument(help="The tag: letters, digits, . _ -; a letter first.")],
    store: StoreOpt = None,
    storage_option: StorageOpt = None,
    version: Annotated[
        Optional[int],
        typer.Option(min=1, help="The version to tag (default: the store as it is now)."),
    ] = None,
    delete: Annotated[
        bool, typer.Option("--delete", help="Remove the tag; its versions may be cleaned up.")
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Tag a version of a store: it is kept for good, and --as-of NAME reads it."""
    from uceindex import tag_version

    if delete and version is not None:
        raise typer.BadParameter("--delete takes no --version", param_hint="--version")
    data = tag_version(
        store_uri(store),
        name,
        version,
        delete=delete,
        storage_options=storage_options(storage_option),
    )
    if json:
        print_json(data)
        return
    verb = "removed the tag" if delete else "tagged"
    console.print(
        f"{verb} {name}: version {data['version']} of {data['store']} "
        f"({_when(data)}, {data['detail']})",
        highlight=False,
    )


@handle_errors
def check(
    store: StoreOpt = None,
    storage_option: StorageOpt = None,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair", help="Restore each table to the store's newest consistent version."
        ),
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Verify a whole store: tables readable, rows per data set as recorded, model, indexes."""
    from uceindex import check_store

    report = check_store(
        store_uri(store), repair=repair, storage_options=storage_options(storage_option)
    )
    data = report.as_dict()
    if json:
        print_json(data)
    else:
        _render_check(data)
    if not data["ok"]:
        raise typer.Exit(1)


def _render_check(data: dict) -> None:
    tables = Table(title=f"check of {data['store']}")
    for column in ("table", "version", "rows", "readable"):
        tables.add_column(column)
    for name, t in data["tables"].items():
        tables.add_row(name, str(t["version"]), f"{t['rows']:,}", "yes" if t["readable"] else "NO")
    console.print(tables)
    if data["datasets"]:
        sets = Table()
        for column in ("data set", "status", "cells", "embedded (stored)", "rejected (stored)"):
            sets.add_column(column)
        for d in data["datasets"]:
            (emb, rej), (have_emb, have_rej) = d["recorded"], d["stored"]
            sets.add_row(
                d["dataset_id"],
                d["status"],
                f"{d['n_cells']:,}",
                f"{'-' if emb is None else f'{emb:,}'} ({have_emb:,})",
                f"{'-' if rej is None else f'{rej:,}'} ({have_rej:,})",
            )
        console.print(sets)
    for i in data["indexes"]:
        covered = (
            f"{i['indexed_rows']:,} rows indexed, {i['unindexed_rows']:,} not"
            if i["problem"] is None
            else "unreadable"
        )
        console.print(f"index {i['name']} ({i['type']}): {covered}", highlight=False)
    for line in data["repaired"]:
        console.print(f"repaired: {line}", highlight=False)
    for line in data["notes"]:
        console.print(f"note: {line}", highlight=False)
    for line in data["problems"]:
        err_console.print(f"[red]problem:[/red] {line}", highlight=False, soft_wrap=True)
    if data["ok"]:
        console.print("the store is consistent", highlight=False)
    elif data["problems"]:
        hint = "" if data["repaired"] else f" (uceindex check --store {data['store']} --repair)"
        err_console.print(f"the store is damaged{hint}", highlight=False)
