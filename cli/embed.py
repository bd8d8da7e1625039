"""`uceindex embed`: one .h5ad in, the same cells with obsm["X_uce"] out."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from cli.render import console, handle_errors, print_json, progress_bar

EPILOG = "Example: uceindex embed pbmc.h5ad pbmc_uce.h5ad --species human --model-dir ~/.cache/uceindex/4layer"


@handle_errors
def embed(
    input: Annotated[
        Path,
        typer.Argument(help="The .h5ad to embed (raw counts in X, layers['counts'] or raw.X)."),
    ],
    output: Annotated[Path, typer.Argument(help="Where to write the .h5ad with obsm['X_uce'].")],
    species: Annotated[
        str, typer.Option(help="Species of the cells, e.g. human, mouse.")
    ] = "human",
    model_dir: Annotated[
        Optional[Path],
        typer.Option(
            help="Model directory (default $UCEINDEX_MODEL_DIR or ~/.cache/uceindex/4layer)."
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of the cell sentences; same seed, same embeddings.")
    ] = 0,
    layer: Annotated[
        Optional[str],
        typer.Option(
            help="Take counts from this layer instead of searching X, layers['counts'], raw.X."
        ),
    ] = None,
    min_genes: Annotated[
        int, typer.Option(help="Reject cells with fewer expressed genes known to the model.")
    ] = 25,
    device: Annotated[
        Optional[str], typer.Option(help="cpu, cuda, cuda:1... (default: cuda when available).")
    ] = None,
    precision: Annotated[
        str, typer.Option(help="auto (bf16 on GPU), float32 or bfloat16.")
    ] = "auto",
    mode: Annotated[
        str, typer.Option(help="fast, or reference to reproduce the reference code's padding.")
    ] = "fast",
    json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Embed every cell of an .h5ad with UCE; cells that cannot be embedded get a NaN row and a reason."""
    import uceindex
    from uceindex.io.h5ad import read_h5ad

    adata = read_h5ad(input)
    with progress_bar("embedding", quiet=json) as update:
        uceindex.embed(
            adata,
            species,
            model_dir,
            seed=seed,
            layer=layer,
            min_genes=min_genes,
            device=device,
            precision=precision,
            mode=mode,
            progress=update,
        )
    partial = output.with_name(output.name + ".partial")
    adata.write_h5ad(partial)
    os.replace(partial, output)  # never a half-written output
    summary = {**dict(adata.uns["uce"]), "output": str(output)}
    if json:
        print_json(summary)
        return
    table = Table(title=f"{input.name} -> {output.name}", show_header=False)
    table.add_row("model", summary["model"])
    table.add_row("cells embedded", f"{summary['embedded']:,} of {summary['cells']:,}")
    genes = summary["genes"]
    table.add_row(
        "genes matched",
        f"{genes['genes_matched']:,} of {genes['genes_in_file']:,} ({genes['share_matched']:.0%}, from {genes['symbols_from']})",
    )
    for reason, n in summary["reject_reasons"].items():
        table.add_row("rejected", f"{n:,}: {reason}")
    console.print(table)
