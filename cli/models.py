"""`uceindex models`: fetch and inspect the official UCE model files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from cli.options import JsonOpt, choices
from cli.render import console, handle_errors, print_json, progress_bar
from uceindex.model.files import CHECKPOINTS, DEFAULT_MODEL, TRAINING_SPECIES

app = typer.Typer(help="Fetch and inspect the official UCE model files.", no_args_is_help=True)
ModelName = choices("ModelName", CHECKPOINTS)
TrainingSpecies = choices("TrainingSpecies", TRAINING_SPECIES)

ModelDirArg = Annotated[
    Optional[Path],
    typer.Argument(
        help="Model directory (default: --model-dir, $UCEINDEX_MODEL_DIR, ~/.cache/uceindex/4layer)."
    ),
]


@app.command(
    "download",
    epilog="Example: uceindex models download 4layer --dir ~/.cache/uceindex/4layer",
)
@handle_errors
def download(
    name: Annotated[ModelName, typer.Argument(help="The official model to fetch.")] = DEFAULT_MODEL,
    dir: Annotated[
        Optional[Path],
        typer.Option("--dir", help="Where to put the files (default: ~/.cache/uceindex/NAME)."),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Download the official model files from Figshare (resumable, checksummed)."""
    from uceindex import download_model

    with progress_bar(f"downloading {name.value}", unit="bytes", quiet=json) as update:
        path = download_model(
            name.value,
            dir,
            progress=lambda file, done, total: update(done, total or done, label=file),
        )
    if json:
        print_json({"model_dir": str(path)})
    else:
        console.print(f"model files in [bold]{path}[/bold]")


@app.command("info", epilog="Example: uceindex models info ~/.cache/uceindex/4layer")
@handle_errors
def info(model_dir: ModelDirArg = None, json: JsonOpt = False) -> None:
    """Layers, sizes, species with their gene counts, and the fingerprint of a model directory."""
    from uceindex import UCEModel

    described = UCEModel(model_dir).describe()
    if json:
        print_json(described)
        return
    table = Table(title=f"UCE model {described['name']}", show_header=False)
    for key, value in described.items():
        if key != "species":
            table.add_row(key, str(value))
    for species, n in described["species"].items():
        table.add_row(f"species: {species}", f"{n:,} genes")
    console.print(table)


@app.command(
    "tiny",
    epilog="Example: uceindex models tiny ./tiny-model --genes-from data/pbmc700.h5ad "
    "--species human --species mouse",
)
@handle_errors
def tiny(
    dir: Annotated[Path, typer.Argument(help="Where to write the model directory.")],
    genes_from: Annotated[
        Path, typer.Option(help="An .h5ad whose var_names become the species' genes.")
    ],
    species: Annotated[
        Optional[list[TrainingSpecies]],
        typer.Option(help="Species to file the genes under (default human); repeat for several."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
) -> None:
    """Write a small RANDOM model in the official formats, to try the pipeline offline.

    Its embeddings mean nothing biologically: for real ones run `uceindex models download`."""
    from uceindex import write_tiny_model
    from uceindex.io.h5ad import read_h5ad

    genes = list(read_h5ad(genes_from, backed=True).var_names)
    names = list(dict.fromkeys(s.value for s in species or [TrainingSpecies.human]))
    write_tiny_model(dir, dict.fromkeys(names, genes), seed=seed)
    console.print(
        f"random tiny model with {len(genes):,} genes for {', '.join(names)} in [bold]{dir}[/bold]"
    )
