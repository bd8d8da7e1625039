"""Options several commands share, declared once so that their names and help agree."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from uceindex.io.genes import GeneFilter

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
PrecisionOpt = Annotated[str, typer.Option(help="auto (bf16 on GPU), float32 or bfloat16.")]
ModeOpt = Annotated[
    str, typer.Option(help="fast, or reference to reproduce the reference code's padding.")
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


def store_uri(store: str | None) -> str:
    """--store, else the default store."""
    from uceindex.store.store import default_store_uri

    return store or default_store_uri()
