"""The service's own refusals, and every error as JSON.

Every error is `{"error": {"type", "message"}}` with a proper status: a `UceIndexError` keeps
its `http_status` (400 unless it says otherwise), a malformed body is 422, an unknown route
404, anything else 500 ("see the server log"). Every message goes out through `sanitise`
(and `redact`): no server path, source location or traceback reaches a client, whatever
Lance, DuckDB or Python put in it.
"""

from __future__ import annotations

import os
import re
from pathlib import PurePosixPath

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from uceindex.errors import QueryError, StoreError, UceIndexError
from uceindex.store.options import redact


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


def require(condition: bool, message: str) -> None:
    """A check on a request: QueryError (400) with `message` when it fails."""
    if not condition:
        raise QueryError(message)


HIDDEN_PATH = "<path>"

_TRACEBACK = re.compile(r"Traceback \(most recent call last\).*", re.DOTALL)
# Rust source locations, e.g. /root/.cargo/registry/src/.../filtered_read.rs:1639:33
_SOURCE = re.compile(r"[^\s'\"`(),;]*\.rs:\d+(?::\d+)?")
# Absolute paths of two segments or more (so a route such as /health stays), file:// URIs,
# Windows drive paths; not the tail of a URL or of a relative path (a/b/c).
_PART = r"[^\s:/'\"`,;()\[\]{}<>|]"
_PATH = re.compile(
    rf"file://(?:/{_PART}+)+|(?<![\w.:/~@-])/{_PART}+(?:/{_PART}*)+"
    rf"|\b[A-Za-z]:\\[^\s'\"`,;()<>|]+"
)
_RULER = re.compile(r"[~^=]{3,}")  # the underlines of Lance's and DuckDB's multi-line errors


def sanitise(message: str, store_uri: str | None = None) -> str:
    """`message` as a client may see it: one line, the store's location (`store_uri`, also
    resolved against this process's directory) shown as the store's name, every other
    absolute path as <path>, no source location or traceback."""
    text = _TRACEBACK.sub("", message)
    if store_uri:
        uri = store_uri.rstrip("/")
        name = PurePosixPath(uri.split("://", 1)[-1]).name or "the store"
        forms = {uri} if "://" in uri else {uri, os.path.abspath(uri), os.path.realpath(uri)}
        for form in sorted(forms | {f"file://{f}" for f in forms}, key=len, reverse=True):
            text = text.replace(form, name)
    text = _SOURCE.sub("", text)
    text = _PATH.sub(HIDDEN_PATH, text)
    text = " ".join(_RULER.sub(" ", text).split())
    return re.sub(r"\s*,\s*([)\]]|$)", r"\1", text) or "the request failed"


def error_response(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status)


def status_of(exc: UceIndexError) -> int:
    if isinstance(exc, StoreError) and "no cell" in str(exc):
        return 404
    return exc.http_status


def add_handlers(app: FastAPI) -> None:
    """Answer every error of `app` as JSON."""

    def answer(request: Request, status: int, kind: str, message: str) -> JSONResponse:
        view = request.app.state.view  # the store's location and its secrets never go out
        return error_response(
            status, kind, sanitise(redact(message, view.storage_options), view.uri)
        )

    @app.exception_handler(UceIndexError)
    async def _uceindex_error(request: Request, exc: UceIndexError):
        return answer(request, status_of(exc), type(exc).__name__, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        wrong = [
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e['msg']}"
            for e in exc.errors()[:3]
        ]
        return answer(request, 422, "ValidationError", "; ".join(wrong) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return answer(request, exc.status_code, "HTTPError", str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):
        return error_response(500, "InternalError", "internal error: see the server log")
