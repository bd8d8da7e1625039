"""The store over HTTP: a FastAPI app that parses requests, calls the library, returns JSON.

Security: a bearer token (when set) guards every route but /health; request bodies, k,
vectors and SQL rows are capped; every error is JSON `{"error": {"type", "message"}}`
with a proper status and never a traceback or a server path (`errors.py`).
"""

from __future__ import annotations

import ipaddress
import threading
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from uceindex import __version__
from uceindex.errors import InsecureBindError
from uceindex.search import prewarm_index
from uceindex.service import routes, web_routes
from uceindex.service.deps import StoreView, check_token
from uceindex.service.errors import add_handlers
from uceindex.service.jobs import Jobs
from uceindex.service.limits import JOB_TTL_S, BodyCap, Limits

TOKEN_ENV = "UCEINDEX_TOKEN"  # where `uceindex serve` takes the token from


def check_bind(host: str, token: str | None) -> None:
    """InsecureBindError when `host` is not loopback and no token guards the app: it would
    serve the store to anyone who can reach the address."""
    if token is None and not _is_loopback(host):
        raise InsecureBindError(
            f"refusing to serve on {host} without a token: set {TOKEN_ENV}=<secret> "
            "(clients send `Authorization: Bearer <secret>`), or bind 127.0.0.1"
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(
    store_uri: str,
    *,
    token: str | None = None,
    model_dir=None,
    limits: Limits = Limits(),
    storage_options: dict | None = None,
    prewarm: bool = False,
    job_ttl_s: float = JOB_TTL_S,
    show_paths: bool = False,
) -> FastAPI:
    """The app for one store (`storage_options` as `Store.open` takes them). `token` None
    means no authentication (loopback use). prewarm: load the vector index into memory
    before the first request (`prewarm_index`), for stores on object storage. Jobs' results
    are kept `job_ttl_s` seconds. `show_paths`: `GET /datasets` and the SQL view `datasets`
    include each data set's source path on the server (left out by default)."""
    view = StoreView(store_uri, storage_options)
    if prewarm:
        prewarm_index(view.get())
    jobs = Jobs(ttl_s=job_ttl_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        jobs.close()
        view.close()

    app = FastAPI(
        title="uceindex",
        version=__version__,
        description="Universal Cell Embeddings atlas: search, annotate, match and SQL over one store.",
        lifespan=lifespan,
    )
    app.state.view = view
    app.state.token = token
    app.state.limits = limits
    app.state.show_paths = show_paths
    app.state.model_dir = model_dir
    app.state.model = None  # loaded on the first upload that needs embedding
    app.state.model_lock = threading.Lock()
    app.state.sql = None  # (store versions, SqlSession) of the latest snapshot
    app.state.sql_lock = threading.Lock()
    app.state.past_sql = {}  # (table versions) -> SqlSession of a store read as of a version
    app.state.jobs = jobs

    app.add_middleware(BodyCap, max_bytes=limits.max_upload_bytes)
    app.include_router(routes.public)
    app.include_router(routes.private, dependencies=[Depends(check_token)])
    app.include_router(web_routes.public)
    app.include_router(web_routes.private, dependencies=[Depends(check_token)])
    add_handlers(app)
    return app
