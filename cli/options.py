"""Options several commands share, declared once so that their names, help and choices agree.

Defaults and choices come from the library's constants; a closed set of values is an Enum,
so that a bad value is a usage error (exit 2) before any file is read.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from uceindex.io.genes import GeneFilter
from uceindex.model.numerics import MODES, PRECISIONS


def choices(name: str, values) -> type[Enum]:
    """An Enum of the library's allowed values (strings), for Typer to offer and check."""
    return Enum(name, {value: value for value in values}, type=str)


StoreOpt = Annotated[
    Optional[str],
    typer.Option(
        "--store",
        help="Store directory or LanceDB URI (default $UCEINDEX_STORE, else ~/.local/share/uceindex/atlas).",
    ),
]
ModelDirOpt = Annotated[
    Optional[Path],
    typer.Option(
        help="Model directory (default $UCEINDEX_MODEL_DIR, else ~/.cache/uceindex/4layer)."
    ),
]
SeedOpt = Annotated[
    int, typer.Option(help="Seed of the cell sentences; same seed, same embeddings.")
]
LayerOpt = Annotated[
    Optional[str],
    typer.Option(help="Take counts from this layer instead of X, layers['counts'], raw.X."),
]
MinGenesOpt = Annotated[
    int, typer.Option(help="Reject cells with fewer expressed genes known to the model.")
]
DeviceOpt = Annotated[
    Optional[str], typer.Option(help="cpu, cuda, cuda:1... (default: cuda when available).")
]
Precision = choices("Precision", PRECISIONS)
PrecisionOpt = Annotated[
    Precision,
    typer.Option(
        help="Numbers of the network; auto: bfloat16 on a GPU in fast mode, else float32."
    ),
]
Mode = choices("Mode", MODES)
ModeOpt = Annotated[
    Mode,
    typer.Option(
        help="fast masks padding exactly; reference reproduces the reference code's padding."
    ),
]
GeneFilterOpt = Annotated[
    GeneFilter,
    typer.Option(
        help="per-cell: a cell's embedding depends on the cell alone; reference: first drop the "
        "genes detected in fewer than 10 cells of the file, as the official pipeline does "
        "(to sit beside official or CELLxGENE Census UCE embeddings).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
OneDatasetOpt = Annotated[  # a report (labels, qc) on one data set instead of the whole store
    Optional[str], typer.Option("--dataset", help="Only this data set's cells.")
]
EmbeddingKeyOpt = Annotated[
    Optional[str],
    typer.Option(help="Take the embeddings from obsm[KEY] instead of running the model."),
]

LabelMapOpt = Annotated[
    Optional[Path],
    typer.Option(
        help="CSV with columns label,term_id: the Cell Ontology term of labels uceindex does "
        "not map itself (docs/ontology.md)."
    ),
]

# search
KOpt = Annotated[int, typer.Option("--k", min=1, help="Neighbours per query cell.")]
LabelOpt = Annotated[str, typer.Option(help="Label column of the stored cells to predict.")]
WhereOpt = Annotated[
    Optional[str],
    typer.Option(help="SQL filter on the stored cells, e.g. \"tissue = 'lung'\"."),
]
NprobesOpt = Annotated[
    Optional[int], typer.Option(help="IVF partitions searched per query (default: by table size).")
]
ExactOpt = Annotated[bool, typer.Option("--exact", help="Exact search, ignoring the index.")]
OntologyOpt = Annotated[
    bool,
    typer.Option(
        "--ontology",
        help="Also call a Cell Ontology term per cell from the neighbours' CL terms, rolled up "
        "to a coarser term when the vote is split (docs/ontology.md).",
    ),
]
MinScoreOpt = Annotated[
    float,
    typer.Option(
        min=0.0,
        max=1.0,
        help="--ontology: the most specific term whose share of the neighbour weight is at "
        "least this.",
    ),
]


def _check_pairs(values: list[str] | None) -> list[str] | None:
    """A malformed --storage-option is a usage error, reported before anything runs."""
    from uceindex.errors import StoreError
    from uceindex.store.options import parse_pairs

    try:
        parse_pairs(values)
    except StoreError as exc:
        raise typer.BadParameter(str(exc).removeprefix("--storage-option ")) from None
    return values


StorageOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--storage-option",
        metavar="KEY=VALUE",
        callback=_check_pairs,
        help="Option of a store on object storage, repeatable: region=, endpoint=, "
        "access_key_id=, secret_access_key=, allow_http=... (over $UCEINDEX_STORAGE_OPTIONS "
        "and AWS_*; see docs/store.md).",
    ),
]


AsOfOpt = Annotated[
    Optional[str],
    typer.Option(
        "--as-of",
        metavar="VERSION|TAG",
        help="Read the store as it was at this version or tag (uceindex versions lists them).",
    ),
]


def opened_store(store: str | None, storage_option: list[str] | None, as_of: str | None = None):
    """The store of --store, --storage-option and --as-of, opened for the `with` block."""
    from uceindex.store import Store

    return Store.using(
        store_uri(store), storage_options=storage_options(storage_option), as_of=as_of
    )


def store_uri(store: str | None) -> str:
    """--store, else the default store."""
    from uceindex.store import default_store_uri

    return store or default_store_uri()


def storage_options(values: list[str] | None) -> dict[str, str]:
    """--storage-option KEY=VALUE items as the dict the library takes."""
    from uceindex.store.options import parse_pairs

    return parse_pairs(values)
