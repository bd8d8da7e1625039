"""Caps on what one request to the service may ask for (`uceindex serve --max-...`), and the
body cap that enforces `max_upload_bytes` on every route."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from uceindex.service.errors import TooLarge, error_response


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 512 * 1024 * 1024
    max_k: int = 1000
    max_queries: int = 10_000  # vectors or cells in one search / annotate request
    max_rows: int = 10_000  # rows a SQL request returns
    sql_timeout_s: float = 30.0


JOB_TTL_S = 3600.0  # seconds a finished job's result stays downloadable (`--job-ttl`)


class BodyCap:
    """ASGI middleware: a request body over `max_bytes` is answered 413. A declared
    Content-Length over it is refused before anything is read; otherwise the bytes are
    counted as the app reads them (chunked bodies too, which declare no length), and the
    read that goes over raises TooLarge. Whatever the app answers after that (FastAPI turns
    an error while it parses a body into a 400) is replaced by the 413."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    @property
    def message(self) -> str:
        return f"request body over the limit of {self.max_bytes:,} bytes: send less per request"

    def refusal(self):
        return error_response(413, TooLarge.__name__, self.message)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await self.refusal()(scope, receive, send)
        read = 0
        refused = False

        async def counted() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > self.max_bytes:
                    raise TooLarge(self.message)
            return message

        async def answer(message: Message) -> None:
            nonlocal refused
            if read <= self.max_bytes:
                return await send(message)
            if not refused:  # the app's answer to the TooLarge, whatever it was
                refused = True
                await self.refusal()(scope, receive, send)

        await self.app(scope, counted, answer)
