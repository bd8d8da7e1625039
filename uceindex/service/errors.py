"""The service's own refusals, and every error as JSON.

Every error is `{"error": {"type", "message"}}` with a proper status, never a traceback or a
server path: a `UceIndexError` keeps its `http_status` (400 unless it says otherwise), a
malformed body is 422, an unknown route 404, anything else 500 ("see the server log").
"""

from __future__ import annotations

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


def error_response(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status)


def status_of(exc: UceIndexError) -> int:
    if isinstance(exc, StoreError) and "no cell" in str(exc):
        return 404
    return exc.http_status


def add_handlers(app: FastAPI) -> None:
    """Answer every error of `app` as JSON."""

    @app.exception_handler(UceIndexError)
    async def _uceindex_error(request: Request, exc: UceIndexError):
        options = request.app.state.view.storage_options  # their secrets never go out
        return error_response(status_of(exc), type(exc).__name__, redact(str(exc), options))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error_response(
            422, "ValidationError", f"{where or 'body'}: {first.get('msg', 'invalid')}"
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, "HTTPError", str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):
        return error_response(500, "InternalError", "internal error: see the server log")
