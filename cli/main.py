"""The `uceindex` command: one Typer app, one module per group of commands.

Commands only parse options, call the library and render; the work lives in `uceindex`.
"""

from __future__ import annotations

import typer

from cli import embed, models, species

app = typer.Typer(
    name="uceindex",
    help="Universal Cell Embeddings (UCE) for every cell, in a searchable atlas.\n\n"
    "Example: uceindex embed pbmc.h5ad pbmc_uce.h5ad --species human",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.add_typer(models.app, name="models")
app.add_typer(species.app, name="species")
app.command("embed", epilog=embed.EPILOG)(embed.embed)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
