"""What a request depends on: the store's snapshot, the token check, the limits, SQL.

Routes declare them as parameters (`store: StoreDep`, `limits: LimitsDep`, `session: SqlDep`);
the private router depends on `check_token`. `create_app` puts what they read in
`app.state`: `view` (a StoreView), `token`, `limits`, `sql` (the cached SqlSession).
"""

from __future__ import annotations

import hmac
import threading
import time
from typing import Annotated

from fastapi import Depends, Request

from uceindex.service.errors import Unauthorized
from uceindex.service.limits import Limits
from uceindex.sql import SqlSession
from uceindex.store import Store

SERVER_PATHS = ("source_path",)  # columns of `datasets` that are paths on the server
REFRESH_SECONDS = 1.0  # how stale a request's view of the store may be while ingests run


class StoreView:
    """The service's store, moved to the latest snapshot at most every REFRESH_SECONDS, so
    answers include what a running ingest has committed."""

    def __init__(self, uri: str, storage_options: dict | None = None):
        self.uri = uri
        self._store = Store.open(uri, storage_options=storage_options)
        self.storage_options = self._store.storage_options
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


def store(request: Request) -> Store:
    """The store at its latest snapshot (at most REFRESH_SECONDS old)."""
    return request.app.state.view.get()


def limits(request: Request) -> Limits:
    """The caps `uceindex serve --max-...` set."""
    return request.app.state.limits


StoreDep = Annotated[Store, Depends(store)]
LimitsDep = Annotated[Limits, Depends(limits)]


def check_token(request: Request) -> None:
    """Unauthorized unless the request carries the bearer token (when the service has one)."""
    token = request.app.state.token
    if token is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        raise Unauthorized("missing or wrong bearer token: send `Authorization: Bearer <token>`")


def sql_session(request: Request, store: StoreDep, limits: LimitsDep) -> SqlSession:
    """One read-only SQL session per store snapshot: a new one once an ingest has committed."""
    state = request.app.state
    versions = store.versions()
    with state.sql_lock:
        if state.sql is None or state.sql[0] != versions:
            # The old session is not closed here: a request may still be using it.
            state.sql = (
                versions,
                SqlSession(
                    store,
                    timeout_s=limits.sql_timeout_s,
                    max_rows=limits.max_rows,
                    hidden=() if state.show_paths else SERVER_PATHS,
                ),
            )
        return state.sql[1]


SqlDep = Annotated[SqlSession, Depends(sql_session)]
