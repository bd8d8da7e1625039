"""`uceindex species`: add a species to a model directory from its proteome, list species."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from cli.options import DeviceOpt, JsonOpt, ModelDirOpt, choices
from cli.render import console, handle_errors, print_json, progress_bar
from uceindex.species.esm_numerics import DEFAULT_PRECISION, PRECISIONS, TOKENS_PER_BATCH

app = typer.Typer(
    help="Add species to a model directory (gene tokens from a proteome with ESM-2), list them.",
    no_args_is_help=True,
)

EsmPrecision = choices("EsmPrecision", PRECISIONS)


@app.command(
    "add",
    epilog="Example: uceindex species add chicken --proteome Gallus_gallus.GRCg7b.pep.all.fa "
    "--taxonomy-id 9031 --esm-weights esm2_t48_15B_UR50D.pt --model-dir ~/.cache/uceindex/4layer",
)
@handle_errors
def add(
    name: Annotated[str, typer.Argument(help="Short name used by --species, e.g. chicken.")],
    proteome: Annotated[
        Path, typer.Option(help="Ensembl *.pep.all.fa (or .fa.gz) of the species.")
    ],
    taxonomy_id: Annotated[
        int, typer.Option(help="NCBI Taxonomy id (chicken 9031); seeds the chromosome tokens.")
    ],
    esm_weights: Annotated[
        Optional[Path],
        typer.Option(help="fair-esm weights file; esm2_t48_15B_UR50D.pt for the official models."),
    ] = None,
    protein_embeddings: Annotated[
        Optional[Path],
        typer.Option(help="Precomputed .pt dict gene symbol -> tensor, instead of running ESM."),
    ] = None,
    model_dir: ModelDirOpt = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Overwrite an added species of the same name.")
    ] = False,
    device: DeviceOpt = None,
    precision: Annotated[
        EsmPrecision, typer.Option(help="Numbers of ESM; float32 as the official tokens.")
    ] = DEFAULT_PRECISION,
    batch_tokens: Annotated[
        Optional[int],
        typer.Option(
            help=f"Residues per ESM batch (default {TOKENS_PER_BATCH['cuda']} on GPU, "
            f"{TOKENS_PER_BATCH['cpu']} on CPU)."
        ),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Add a species: embed its proteins with ESM-2, place its genes, register it beside the official files.

    An interrupted run resumes where it stopped: run the same command again."""
    from uceindex import add_species

    quiet = json or protein_embeddings is not None  # no ESM run, nothing to show
    with progress_bar(f"ESM on {name} proteins", unit="proteins", quiet=quiet) as update:
        report = add_species(
            name,
            proteome,
            taxonomy_id=taxonomy_id,
            model_dir=model_dir,
            esm_weights=esm_weights,
            protein_embeddings=protein_embeddings,
            replace=replace,
            device=device,
            precision=precision.value,
            tokens_per_batch=batch_tokens,
            progress=update,
        )
    summary = report.as_dict()
    if json:
        print_json(summary)
        return
    p = summary["proteome"]
    table = Table(
        title=f"species {name} {'replaced' if report.replaced else 'added'}", show_header=False
    )
    table.add_row("files in", summary["directory"])
    table.add_row(
        "gene tokens", f"{summary['genes']:,} ({summary['token_dim']}-d, {summary['source']})"
    )
    table.add_row(
        "genes placed", f"{summary['genes_placed']:,} on {summary['chromosomes']:,} chromosomes"
    )
    table.add_row("proteins read", f"{p['proteins']:,}")
    for key, label in [
        ("no_symbol", "skipped: no gene symbol"),
        ("no_chromosome", "skipped: no chromosome"),
        ("stop_codon", "not embedded: stop codon"),
        ("duplicate_id", "skipped: duplicate id"),
    ]:
        if p[key]:
            table.add_row(label, f"{p[key]:,}")
    if summary["esm"]:
        e = summary["esm"]
        table.add_row("ESM", f"{e['computed']:,} computed, {e['from_cache']:,} from the cache")
        if e["truncated"]:
            table.add_row(
                "truncated", f"{e['truncated']:,} proteins to {e['max_residues']} residues"
            )
    console.print(table)
    console.print(f"embed with: uceindex embed IN.h5ad OUT.h5ad --species {name}")


@app.command("list", epilog="Example: uceindex species list --model-dir ~/.cache/uceindex/4layer")
@handle_errors
def list_(model_dir: ModelDirOpt = None, json: JsonOpt = False) -> None:
    """The species of a model directory: official ones and those added, with their gene counts."""
    from uceindex import list_species

    species = list_species(model_dir)
    if json:
        print_json(species)
        return
    table = Table(title="species")
    for column in ("species", "kind", "genes", "taxonomy id", "problem"):
        table.add_column(column)
    for s in species:
        table.add_row(
            s["species"],
            s["kind"],
            "" if s["genes"] is None else f"{s['genes']:,}",
            "" if s["taxonomy_id"] is None else str(s["taxonomy_id"]),
            s["problem"] or "",
        )
    console.print(table)
