"""What a request depends on: the store's snapshot, the token check, the limits, SQL.

Routes declare them as parameters (`store: StoreDep`, `limits: LimitsDep`, `session: SqlDep`);
the private router depends on `check_token`. `create_app` puts what they read in
`app.state`: `view` (a StoreView), `token`, `limits`, `sql` (the cached SqlSession) and
`past_sql` (those of versions read with `?as_of=`).
"""

from __future__ import annotations

import hmac
import threading
import time
from typing import Annotated

from fastapi import Depends, Query, Request

from uceindex.service.errors import Unauthorized
from uceindex.service.limits import Limits
from uceindex.sql import SqlSession
from uceindex.store import Store

SERVER_PATHS = ("source_path",)  # columns of `datasets` that are paths on the server
REFRESH_SECONDS = 1.0  # how stale a request's view of the store may be while ingests run
PAST_KEPT = 8  # stores (and SQL sessions) of past versions kept open for `?as_of=` requests


class StoreView:
    """The service's store, moved to the latest snapshot at most every REFRESH_SECONDS, so
    answers include what a running ingest has committed; a snapshot that moved is verified
    (`Store.verify`), so a store damaged while served is refused, not served from what is left."""

    def __init__(self, uri: str, storage_options: dict | None = None):
        self.uri = uri
        self._store = Store.open(uri, storage_options=storage_options)
        self.storage_options = self._store.storage_options
        self._lock = threading.Lock()
        self._refreshed = time.monotonic()
        self._past: dict[tuple, Store] = {}  # each table's version -> the store read at them

    def get(self) -> Store:
        with self._lock:
            if time.monotonic() - self._refreshed > REFRESH_SECONDS:
                seen = self._store.versions()
                self._store.refresh()
                if self._store.versions() != seen:
                    self._store.verify()
                self._refreshed = time.monotonic()
            return self._store

    def past(self, as_of: str) -> Store:
        """The store as of a version or tag, read-only; the last PAST_KEPT stay open. The name
        is resolved on every call: a tag may have been deleted or made again since."""
        latest = self.get()
        with self._lock:
            version = latest.resolve(as_of)
            key = tuple(version.tables.items())
            store = self._past.pop(key, None) or latest.past(as_of)
            self._past[key] = store  # the most recently used last
            while len(self._past) > PAST_KEPT:  # not closed: a request may still be using it
                self._past.pop(next(iter(self._past)))
            return store

    def close(self) -> None:
        self._store.close()


AsOf = Annotated[
    str | None,
    Query(
        description="Read the store as it was at this version of its history (a number, "
        "GET /versions lists them) or tag (uceindex tag); the latest when absent."
    ),
]


def store(request: Request, as_of: AsOf = None) -> Store:
    """The store at its latest snapshot (at most REFRESH_SECONDS old), or `as_of` a version."""
    if as_of:  # absent or empty: the latest snapshot
        return request.app.state.view.past(as_of)
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
    if store.as_of is not None:
        return _past_sql_session(state, store, limits)
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


def _past_sql_session(state, store: Store, limits: Limits) -> SqlSession:
    """The SQL session of a store read as of a version; the last PAST_KEPT stay open."""
    key = tuple(sorted(store.versions().items()))
    with state.sql_lock:
        session = state.past_sql.pop(key, None) or SqlSession(
            store, timeout_s=limits.sql_timeout_s, max_rows=limits.max_rows
        )
        state.past_sql[key] = session
        while len(state.past_sql) > PAST_KEPT:  # not closed: a request may still be using it
            state.past_sql.pop(next(iter(state.past_sql)))
        return session
