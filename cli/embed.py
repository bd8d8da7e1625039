"""`uceindex embed`: one .h5ad in, the same cells with obsm["X_uce"] out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.options import (
    DeviceOpt,
    GeneFilterOpt,
    JsonOpt,
    LayerOpt,
    MinGenesOpt,
    ModelDirOpt,
    ModeOpt,
    PrecisionOpt,
    SeedOpt,
)
from cli.render import console, handle_errors, print_json, progress_bar
from uceindex.io.genes import MIN_GENES, GeneFilter
from uceindex.model.numerics import DEFAULT_MODE, DEFAULT_PRECISION

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
    model_dir: ModelDirOpt = None,
    seed: SeedOpt = 0,
    layer: LayerOpt = None,
    min_genes: MinGenesOpt = MIN_GENES,
    device: DeviceOpt = None,
    precision: PrecisionOpt = DEFAULT_PRECISION,
    mode: ModeOpt = DEFAULT_MODE,
    gene_filter: GeneFilterOpt = GeneFilter.PER_CELL,
    json: JsonOpt = False,
) -> None:
    """Embed every cell of an .h5ad with UCE; cells that cannot be embedded get a NaN row and a reason."""
    import uceindex
    from uceindex.io.paths import check_output

    check_output(output, (".h5ad",), "OUTPUT")  # before minutes of embedding
    with progress_bar("embedding", quiet=json) as update:
        uns = uceindex.embed_file(
            input,
            output,
            species,
            model_dir,
            seed=seed,
            layer=layer,
            min_genes=min_genes,
            device=device,
            precision=precision.value,
            mode=mode.value,
            gene_filter=gene_filter,
            progress=update,
        )
    summary = {**uns, "output": str(output)}
    if json:
        print_json(summary)
        return
    table = Table(title=f"{input.name} -> {output.name}", show_header=False)
    table.add_row("model", summary["model"])
    table.add_row("gene filter", summary["gene_filter"])
    table.add_row("cells embedded", f"{summary['embedded']:,} of {summary['cells']:,}")
    genes = summary["genes"]
    table.add_row(
        "genes matched",
        f"{genes['genes_matched']:,} of {genes['genes_in_file']:,} ({genes['share_matched']:.0%}, from {genes['symbols_from']})",
    )
    for reason, n in summary["reject_reasons"].items():
        table.add_row("rejected", f"{n:,}: {reason}")
    console.print(table)
