"""A uceindex store: one LanceDB database holding the tables `cells`, `datasets`, `rejects`.

A store is a local directory or any LanceDB URI (`s3://bucket/atlas`, ...; the storage options
of object stores are `uceindex.store.options`). It is bound to
one model: the first data set written creates `cells` with that model's embedding width
and records the model in the table's schema metadata; later data sets must match it.

Reads see a snapshot: the tables are opened when the store is, and stay at those versions
(other processes' commits included) until `refresh()`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from uceindex.errors import StoreError
from uceindex.store import options as O
from uceindex.store import schema as S

STORE_ENV = "UCEINDEX_STORE"  # default store URI, set once by the user
DEFAULT_STORE = "~/.local/share/uceindex/atlas"  # used when UCEINDEX_STORE is unset
COMMIT_RETRIES = 20  # attempts for an update/delete that meets a concurrent commit


def default_store_uri() -> str:
    """$UCEINDEX_STORE, else ~/.local/share/uceindex/atlas."""
    return os.environ.get(STORE_ENV) or str(Path(DEFAULT_STORE).expanduser())


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _local_path(uri: str) -> Path:
    return Path(uri.removeprefix("file://")).expanduser()


def sql_string(value: str) -> str:
    """A SQL string literal (for LanceDB filters)."""
    return "'" + str(value).replace("'", "''") + "'"


def retry_commit(fn, *args, **kwargs):
    """Run a delete/update/merge, retrying when another writer committed first.

    Appends never conflict in Lance; deletes, updates and merges of two writers can."""
    for attempt in range(COMMIT_RETRIES):
        try:
            return fn(*args, **kwargs)
        except (RuntimeError, OSError, ValueError) as exc:
            text = str(exc).lower()
            if "conflict" not in text and "retry" not in text:
                raise
            if attempt == COMMIT_RETRIES - 1:
                raise StoreError(
                    f"the store kept changing under this write ({str(exc)[:120]}): try again"
                ) from None
            time.sleep(min(2.0, 0.05 * 2**attempt))


class Store:
    """An opened store. Build it with `Store.open(uri, create=...)`; close it (or use `with`).

    `cells`, `datasets_table` and `rejects` are lancedb tables, or None when absent (`cells`
    appears with the first data set)."""

    def __init__(self, uri: str, db, storage_options: dict | None = None):
        self.uri = uri
        self.storage_options = dict(storage_options or {})  # as resolved; never shown as is
        self._db = db
        self._tables: dict = {}
        self._closed = False
        self.refresh()

    # -- life cycle ---------------------------------------------------------------------------

    @classmethod
    @contextmanager
    def using(
        cls,
        store: Store | str | os.PathLike | None,
        create: bool = False,
        storage_options: dict | None = None,
    ) -> Iterator[Store]:
        """The one way library calls take "a Store or a URI": a Store passed in is used as is
        and stays open; a URI (or None: `default_store_uri()`) is opened here, with `create`
        and `storage_options` as `open` takes them, and closed when the block ends."""
        if isinstance(store, Store):
            yield store
            return
        opened = cls.open(store, create=create, storage_options=storage_options)
        try:
            yield opened
        finally:
            opened.close()

    @classmethod
    def open(
        cls,
        uri: str | os.PathLike | None = None,
        create: bool = False,
        storage_options: dict | None = None,
    ) -> Store:
        """Open the store at `uri` (default: `default_store_uri()`).

        create=True makes the directory and the `datasets`/`rejects` tables as needed; without
        it a missing store raises StoreError. `storage_options` (endpoint, region, keys) are
        for object-store URIs, over $UCEINDEX_STORAGE_OPTIONS (`options.resolve`); a store
        that cannot be reached fails within seconds, its error free of credentials."""
        import lancedb

        uri = str(uri) if uri is not None else default_store_uri()
        if _is_local(uri):
            path = _local_path(uri)
            if not path.exists() and not create:
                raise StoreError(
                    f"no store at {uri}: ingest a file into it first "
                    f"(uceindex ingest FILE --species ... --store {uri})"
                )
            if path.exists() and not path.is_dir():
                raise StoreError(f"{uri} is a file, not a store directory")
            if create:
                path.mkdir(parents=True, exist_ok=True)
            uri = str(path)
        options = O.resolve(uri, storage_options)
        try:
            if options:  # first contact with short timeouts: a dead endpoint fails fast
                lancedb.connect(uri, storage_options=O.resolve(uri, storage_options, probe=True))
            db = lancedb.connect(uri, storage_options=options or None)
            names = set(db.list_tables().tables)
        except Exception as exc:  # lancedb raises many types for an unreachable URI
            raise O.open_error(uri, exc, options) from None
        if S.DATASETS not in names:
            if not create:
                raise StoreError(
                    f"{uri} is not a uceindex store (it has no `datasets` table): "
                    "pass the store's directory, or ingest into it to create one"
                )
            for name in (S.DATASETS, S.REJECTS):
                # exist_ok: another process may be creating the same store right now
                db.create_table(name, schema=S.schema(name), exist_ok=True)
        return cls(uri, db, options)

    def close(self) -> None:
        """Release the tables. Idempotent; the store's methods raise StoreError afterwards."""
        self._tables = {}
        self._db = None
        self._closed = True

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the store at {self.uri} is closed")

    def refresh(self) -> None:
        """Move every table to its latest version (a new snapshot)."""
        self._check_open()
        names = set(self._db.list_tables().tables)
        self._tables = {n: self._db.open_table(n) for n in S.TABLES if n in names}

    def __repr__(self) -> str:
        return f"Store({self.uri!r}{', closed' if self._closed else ''})"  # no options: secrets

    # -- tables -------------------------------------------------------------------------------

    @property
    def cells(self):
        self._check_open()
        return self._tables.get(S.CELLS)

    @property
    def datasets_table(self):
        self._check_open()
        return self._tables.get(S.DATASETS)

    @property
    def rejects(self):
        self._check_open()
        return self._tables.get(S.REJECTS)

    def versions(self) -> dict[str, int]:
        """The version of each table this snapshot reads."""
        self._check_open()
        return {name: table.version for name, table in self._tables.items()}

    # -- reading ------------------------------------------------------------------------------

    def model_info(self) -> dict | None:
        """{model_name, model_fingerprint, embedding_dim} of the model the store is bound to,
        or None while the store holds no cells table."""
        cells = self.cells
        if cells is None:
            return None
        meta = {k.decode(): v.decode() for k, v in (cells.schema.metadata or {}).items()}
        dim = cells.schema.field(S.EMBEDDING).type.list_size
        return {
            "model_name": meta.get(S.META_MODEL_NAME),
            "model_fingerprint": meta.get(S.META_FINGERPRINT),
            "embedding_dim": int(dim),
        }

    def model_dir(self) -> str | None:
        """The model directory the store's first data set was embedded with (None when that
        data set came pre-embedded, or the store is older): `query` and `match` use it when
        no model directory is given."""
        cells = self.cells
        meta = (cells.schema.metadata or {}) if cells is not None else {}
        value = meta.get(S.META_MODEL_DIR.encode())
        return value.decode() if value else None

    def datasets(self) -> pd.DataFrame:
        """One row per data set (the `datasets` table), oldest first."""
        table = self.datasets_table
        frame = table.to_arrow().to_pandas() if table is not None else pd.DataFrame()
        if frame.empty:
            return pd.DataFrame(columns=S.core_names(S.DATASETS))
        return frame.sort_values(["created_at", "dataset_id"]).reset_index(drop=True)

    def dataset(self, dataset_id: str) -> dict | None:
        """The `datasets` row of one data set as a dict, or None."""
        table = self.datasets_table
        rows = table.search().where(f"dataset_id = {sql_string(dataset_id)}").to_arrow().to_pylist()
        return rows[0] if rows else None

    def complete_dataset_ids(self) -> list[str]:
        """Data sets whose ingest finished; rows of others may still be growing."""
        frame = self.datasets()
        return sorted(frame.loc[frame["status"] == "complete", "dataset_id"])

    def count(self, dataset_id: str | None = None) -> int:
        """Rows in `cells` (of one data set when given)."""
        cells = self.cells
        if cells is None:
            return 0
        if dataset_id is None:
            return cells.count_rows()
        return cells.count_rows(f"dataset_id = {sql_string(dataset_id)}")

    def count_rejects(self, dataset_id: str | None = None) -> int:
        rejects = self.rejects
        if dataset_id is None:
            return rejects.count_rows()
        return rejects.count_rows(f"dataset_id = {sql_string(dataset_id)}")

    def obs_columns(self) -> list[str]:
        """Columns of `cells` that came from obs (neither core nor the embedding)."""
        cells = self.cells
        if cells is None:
            return []
        core = set(S.core_names(S.CELLS))
        return [n for n in cells.schema.names if n not in core]


def list_datasets(
    store: Store | str | os.PathLike | None, storage_options: dict | None = None
) -> dict:
    """What `uceindex datasets` shows: the store, its model and its data sets."""
    with Store.using(store, storage_options=storage_options) as store:
        frame = store.datasets().astype(object)
        frame = frame.where(frame.notna(), None)  # NaN of unset counts -> None
        return {
            "store": store.uri,
            "model": store.model_info(),
            "cells": store.count(),
            "datasets": frame.to_dict(orient="records"),
        }
