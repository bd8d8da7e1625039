"""Options several commands share, declared once so that their names and help agree."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

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
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


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


def store_uri(store: str | None) -> str:
    """--store, else the default store."""
    from uceindex.store.store import default_store_uri

    return store or default_store_uri()


def storage_options(values: list[str] | None) -> dict[str, str]:
    """--storage-option KEY=VALUE items as the dict the library takes."""
    from uceindex.store.options import parse_pairs

    return parse_pairs(values)
