"""`uceindex serve`: the store over HTTP, under uvicorn."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from cli.options import ModelDirOpt, StorageOpt, StoreOpt, storage_options, store_uri
from cli.render import err_console, handle_errors
from uceindex.service.limits import JOB_TTL_S, Limits

EPILOG = (
    "Example: uceindex serve --store ./atlas   (then open http://127.0.0.1:8000/ for the web "
    "page, /docs for the API)"
)


@handle_errors
def serve(
    store: StoreOpt = None,
    storage_option: StorageOpt = None,
    host: Annotated[
        str, typer.Option(help="Address to bind; anything but loopback needs $UCEINDEX_TOKEN.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    model_dir: ModelDirOpt = None,
    max_k: Annotated[
        int, typer.Option(min=1, help="Largest k a request may ask for.")
    ] = Limits.max_k,
    max_queries: Annotated[
        int, typer.Option(min=1, help="Most query vectors or cells in one request.")
    ] = Limits.max_queries,
    max_rows: Annotated[
        int, typer.Option(min=1, help="Most rows one SQL request returns.")
    ] = Limits.max_rows,
    sql_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds one SQL statement may run.")
    ] = Limits.sql_timeout_s,
    max_upload_mb: Annotated[
        int, typer.Option(min=1, help="Largest request body or upload, in MiB.")
    ] = Limits.max_upload_bytes >> 20,
    prewarm: Annotated[
        bool,
        typer.Option(
            "--prewarm",
            help="Load the vector index into memory before serving: the first queries on "
            "a store on object storage then skip hundreds of small reads (memory: the index's size).",
        ),
    ] = False,
    job_ttl: Annotated[
        float,
        typer.Option(min=1, help="Seconds a finished job's result stays downloadable."),
    ] = JOB_TTL_S,
    root_path: Annotated[
        str, typer.Option(help="URL prefix a reverse proxy serves the service under, e.g. /atlas.")
    ] = "",
    show_paths: Annotated[
        bool,
        typer.Option(help="Show each data set's source path on this machine (GET /datasets, SQL)."),
    ] = False,
) -> None:
    """Serve the web page, search, annotate, match and SQL over HTTP (OpenAPI docs at /docs)."""
    import uvicorn

    from uceindex.service.app import TOKEN_ENV, check_bind, create_app

    token = os.environ.get(TOKEN_ENV) or None
    check_bind(host, token)
    uri = store_uri(store)
    limits = Limits(
        max_upload_bytes=max_upload_mb << 20,
        max_k=max_k,
        max_queries=max_queries,
        max_rows=max_rows,
        sql_timeout_s=sql_timeout,
    )
    app = create_app(
        uri,
        token=token,
        model_dir=model_dir,
        limits=limits,
        storage_options=storage_options(storage_option),
        prewarm=prewarm,
        job_ttl_s=job_ttl,
        show_paths=show_paths,
    )
    prefix = root_path.rstrip("/")
    err_console.print(
        f"serving {uri} on http://{host}:{port}{prefix}/ (web page; API docs at "
        f"{prefix}/docs){' with a token' if token else ''}"
    )
    uvicorn.run(app, host=host, port=port, root_path=prefix, log_level="warning")
