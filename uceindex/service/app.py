"""The store over HTTP: a FastAPI app that parses requests, calls the library, returns JSON.

Security: a bearer token (when set) guards every route but /health; request bodies, k,
vectors and SQL rows are capped; every error is JSON `{"error": {"type", "message"}}`
with a proper status and never a traceback or a server path.
"""

from __future__ import annotations

import hmac
import threading
import time
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from uceindex import __version__
from uceindex.errors import QueryError, StoreError, UceIndexError
from uceindex.service.limits import Limits
from uceindex.store.store import Store

REFRESH_SECONDS = 1.0  # how stale a request's view of the store may be while ingests run


class ServiceError(UceIndexError):
    """A request the service refuses before it reaches the library."""


class Unauthorized(ServiceError):
    """Missing or wrong bearer token."""

    http_status = 401


class TooLarge(ServiceError):
    """A request body over the upload limit."""

    http_status = 413


class NotFound(ServiceError):
    """No such cell, data set or route."""

    http_status = 404


class StoreView:
    """The service's store, moved to the latest snapshot at most every REFRESH_SECONDS, so
    answers include what a running ingest has committed."""

    def __init__(self, uri: str):
        self.uri = uri
        self._store = Store.open(uri)
        self._lock = threading.Lock()
        self._refreshed = time.monotonic()

    def get(self) -> Store:
        with self._lock:
            if time.monotonic() - self._refreshed > REFRESH_SECONDS:
                self._store.refresh()
                self._refreshed = time.monotonic()
            return self._store

    def close(self) -> None:
        self._store.close()


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status)


def _status_of(exc: UceIndexError) -> int:
    if isinstance(exc, StoreError) and "no cell" in str(exc):
        return 404
    return exc.http_status


def create_app(
    store_uri: str, *, token: str | None = None, model_dir=None, limits: Limits = Limits()
) -> FastAPI:
    """The app for one store. `token` None means no authentication (loopback use)."""
    from uceindex.service import routes

    view = StoreView(store_uri)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        view.close()

    app = FastAPI(
        title="uceindex",
        version=__version__,
        description="Universal Cell Embeddings atlas: search, annotate, match and SQL over one store.",
        lifespan=lifespan,
    )
    app.state.view = view
    app.state.limits = limits
    app.state.model_dir = model_dir
    app.state.model_lock = threading.Lock()
    app.state.sql_lock = threading.Lock()

    def check_token(request: Request) -> None:
        if token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            raise Unauthorized(
                "missing or wrong bearer token: send `Authorization: Bearer <token>`"
            )

    @app.middleware("http")
    async def _cap_body(request: Request, call_next):
        """Refuse a declared body over the limit before reading it (uploads re-check as they stream)."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limits.max_upload_bytes:
            return _error(
                413, "TooLarge", f"request body over the limit of {limits.max_upload_bytes:,} bytes"
            )
        return await call_next(request)

    app.include_router(routes.public)
    app.include_router(routes.private, dependencies=[Depends(check_token)])

    @app.exception_handler(UceIndexError)
    async def _uceindex_error(request: Request, exc: UceIndexError):
        return _error(_status_of(exc), type(exc).__name__, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(422, "ValidationError", f"{where or 'body'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, "HTTPError", str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):
        return _error(500, "InternalError", "internal error: see the server log")

    return app


def require(condition: bool, message: str) -> None:
    if not condition:
        raise QueryError(message)
