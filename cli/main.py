"""The `uceindex` command: one Typer app, one module per group of commands.

Commands only parse options, call the library and render; the work lives in `uceindex`.
"""

from __future__ import annotations

import typer

from cli import embed, models, qc, serve, species
from cli import search as search_commands
from cli import sql as sql_command
from cli import store as store_commands

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
app.command("ingest", epilog=store_commands.INGEST_EPILOG)(store_commands.ingest)
app.command("datasets", epilog=store_commands.DATASETS_EPILOG)(store_commands.datasets)
app.command("check", epilog=store_commands.CHECK_EPILOG)(store_commands.check)
app.command("export", epilog=store_commands.EXPORT_EPILOG)(store_commands.export)
app.command("versions", epilog=store_commands.VERSIONS_EPILOG)(store_commands.versions)
app.command("tag", epilog=store_commands.TAG_EPILOG)(store_commands.tag)
app.command("labels", epilog=store_commands.LABELS_EPILOG)(store_commands.labels)
app.command("serve", epilog=serve.EPILOG)(serve.serve)
app.command("sql", epilog=sql_command.EPILOG)(sql_command.sql)
app.command("index", epilog=search_commands.INDEX_EPILOG)(search_commands.index)
app.command("annotate", epilog=search_commands.ANNOTATE_EPILOG)(search_commands.annotate)
app.command("query", help=search_commands.QUERY_HELP, epilog=search_commands.QUERY_EPILOG)(
    search_commands.annotate
)
app.command("similar", epilog=search_commands.SIMILAR_EPILOG)(search_commands.similar)
app.command("match", epilog=search_commands.MATCH_EPILOG)(search_commands.match)
app.command("qc", epilog=qc.EPILOG)(qc.qc)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
