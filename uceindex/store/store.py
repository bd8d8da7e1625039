"""A uceindex store: one LanceDB database holding the tables `cells`, `datasets`, `rejects`.

A store is a local directory or any LanceDB URI (`s3://bucket/atlas`, ...; the storage options
of object stores are `uceindex.store.options`). It is bound to
one model: the first data set written creates `cells` with that model's embedding width
and records the model in the table's schema metadata; later data sets must match it.

Reads see a snapshot: the tables are opened when the store is, and stay at those versions
(other processes' commits included) until `refresh()`. Opened `as_of` a version of its history
(`uceindex.store.history`), a store reads every table as it was then, and refuses writes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa

from uceindex.errors import StoreError
from uceindex.store import history as H
from uceindex.store import integrity
from uceindex.store import options as O
from uceindex.store import schema as S
from uceindex.store.lock import creation_lock

STORE_ENV = "UCEINDEX_STORE"  # default store URI, set once by the user
DEFAULT_STORE = "~/.local/share/uceindex/atlas"  # used when UCEINDEX_STORE is unset
COMMIT_RETRIES = 20  # attempts for an update/delete that meets a concurrent commit
OPEN_RETRIES = 20  # attempts to open a table another process is creating


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


def sql_name(column: str) -> str:
    """A column name quoted for a Lance filter or SQL expression: in backticks, a backtick
    inside doubled, so that spaces, quotes and keywords (`select`, `from`) are names."""
    return "`" + column.replace("`", "``") + "`"


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

    def __init__(
        self, uri: str, db, storage_options: dict | None = None, as_of: int | str | None = None
    ):
        self.uri = uri
        self.storage_options = dict(storage_options or {})  # as resolved; never shown as is
        self._db = db
        self._tables: dict = {}
        self._closed = False
        self.as_of: H.Version | None = None  # the version read, when opened as of one
        if as_of is None:
            self.refresh()
        else:
            self.as_of, self._tables = H.checkout(db, uri, as_of)

    # -- life cycle ---------------------------------------------------------------------------

    @classmethod
    @contextmanager
    def using(
        cls,
        store: Store | str | os.PathLike | None,
        create: bool = False,
        storage_options: dict | None = None,
        as_of: int | str | None = None,
    ) -> Iterator[Store]:
        """The one way library calls take "a Store or a URI": a Store passed in is used as is
        and stays open; a URI (or None: `default_store_uri()`) is opened here, with `create`,
        `storage_options` and `as_of` as `open` takes them, and closed when the block ends."""
        if isinstance(store, Store):
            with store.reading():
                yield store
            return
        opened = cls.open(store, create=create, storage_options=storage_options, as_of=as_of)
        try:
            with opened.reading():
                yield opened
        finally:
            opened.close()

    @contextmanager
    def reading(self) -> Iterator[None]:
        """A Lance error in the block that says a file is missing or garbled becomes one
        StoreDamagedError line (files on object storage are only found missing when read)."""
        try:
            yield
        except Exception as exc:
            if integrity.is_damage(exc):
                raise integrity.read_error(self.uri, exc) from None
            raise

    @classmethod
    def open(
        cls,
        uri: str | os.PathLike | None = None,
        create: bool = False,
        storage_options: dict | None = None,
        as_of: int | str | None = None,
        verify: bool = True,
    ) -> Store:
        """Open the store at `uri` (default: `default_store_uri()`).

        create=True makes the directory and the `datasets`/`rejects` tables as needed; without
        it a missing store raises StoreError. `storage_options` (endpoint, region, keys) are
        for object-store URIs, over $UCEINDEX_STORAGE_OPTIONS (`options.resolve`); a store
        that cannot be reached fails within seconds, its error free of credentials.
        as_of: a version number of the store's history or a tag; the store is then read as
        it was at that version, read-only (StoreError when it has no such version).
        A damaged store raises StoreDamagedError (`verify()`) unless verify=False (`uceindex check`)."""
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
        if S.DATASETS not in names and S.CELLS in names:
            raise integrity.damaged(
                uri,
                "it has a `cells` table but no `datasets` table, so its cells cannot be traced "
                "to their files and nothing can be added",
                "ingest the files again into a new --store (Lance has no copy of `datasets`)",
            )
        if S.DATASETS not in names:
            if not create:
                raise StoreError(
                    f"{uri} is not a uceindex store (it has no `datasets` table): "
                    "pass the store's directory, or ingest into it to create one"
                )
            cls._create_tables(uri, db, options)
        store = cls(uri, db, options, as_of=as_of)
        if verify:
            store.verify()
        return store

    @classmethod
    def _create_tables(cls, uri: str, db, options: dict) -> None:
        """The empty tables of a new store, and its first version; another process may be
        creating the same store right now, so this waits for it and then finds its tables."""
        with creation_lock(uri):
            names = set(db.list_tables().tables)
            for name in (S.DATASETS, S.REJECTS):
                if name not in names:
                    db.create_table(name, schema=S.schema(name))
            cls(uri, db, options).record_version("created", "an empty store")

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
        """Move every table to its latest version (a new snapshot); a store opened as of a
        version stays at it. `datasets` is opened first: a data set it records complete has
        all its rows in the tables opened after it."""
        self._check_open()
        if self.as_of is not None:
            return
        names = set(self._db.list_tables().tables)
        order = (S.DATASETS, S.CELLS, S.REJECTS)
        self._tables = {n: self._open_table(n) for n in order if n in names}

    def _open_table(self, name: str):
        """A listed table; one listed while another process creates it has its directory but
        not yet its first manifest, and is waited for (a second at most)."""
        for attempt in range(OPEN_RETRIES):
            try:
                return self._db.open_table(name)
            except Exception as exc:
                being_made = "was not found" in str(exc)
                if being_made and attempt < OPEN_RETRIES - 1:
                    time.sleep(0.05)
                    continue
                if not (being_made or integrity.is_damage(exc)):
                    raise
                raise integrity.read_error(self.uri, exc, name) from None

    def verify(self, attempts: int = 5) -> None:
        """Raise StoreDamagedError when a table's files are missing or its rows disagree with
        `datasets` (`integrity.first_problem`, cheap). A disagreement that another process's
        commit explains (`datasets` moved on since this snapshot) is checked again, refreshed."""
        for _ in range(attempts):
            if S.DATASETS not in self._tables:
                return
            with self.reading():
                problem = integrity.first_problem(self._tables)
                if problem is None:
                    return
                latest = self._db.open_table(S.DATASETS).version
            if latest == self._tables[S.DATASETS].version:
                break
            self.refresh()
        raise integrity.damaged(self.uri, problem)

    def __repr__(self) -> str:
        as_of = f", as_of={self.as_of.label}" if self.as_of is not None else ""
        return f"Store({self.uri!r}{as_of}{', closed' if self._closed else ''})"  # no options

    # -- history ------------------------------------------------------------------------------

    def check_writable(self) -> None:
        """StoreError when the store is read as of a version (its past cannot change)."""
        self._check_open()
        if self.as_of is not None:
            raise StoreError(
                f"the store at {self.uri} is open as of version {self.as_of.label}, which is "
                "read-only: open it without --as-of (as_of) to change it"
            )

    def record_version(self, action: str, detail: str, dataset_id: str | None = None):
        """Record the store's latest state as a version of its history (after a change that
        left it consistent); returns that `history.Version`. The store is refreshed."""
        self.check_writable()
        self.refresh()
        return H.record(self._db, self._tables, action, detail, dataset_id)

    def resolve(self, as_of: int | str):
        """The `history.Version` a version number or tag names (StoreError when none)."""
        self._check_open()
        return H.resolve(self._db, self.uri, as_of)

    def past(self, as_of: int | str) -> Store:
        """The store as of a version number or tag, read-only, over this store's connection."""
        self._check_open()
        return Store(self.uri, self._db, self.storage_options, as_of=as_of)

    def history(self) -> list:
        """The store's versions (`history.Version`), oldest first, with their tags."""
        self._check_open()
        return H.versions(self._db)

    def tag(self, name: str, version: int | None = None):
        """Tag a version (None: the latest state) so that it is kept and can be read by name."""
        self.check_writable()
        self.refresh()
        return H.tag(self._db, self.uri, name, self._tables, version)

    def untag(self, name: str):
        """Remove a tag; the versions it held may then be cleaned up."""
        self.check_writable()
        return H.untag(self._db, self.uri, name)

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
        # counts stay integers (Int64) where some are unset, not floats (700.0)
        ints = {pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype()}
        frame = table.to_arrow().to_pandas(types_mapper=ints.get) if table is not None else None
        if frame is None:
            frame = pd.DataFrame()
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

    def reject_reasons(self, dataset_id: str | None = None) -> dict[str, dict[str, int]]:
        """{dataset_id: {reason: cells}} of the `rejects` table (of one data set when given)."""
        query = self.rejects.search().select(["dataset_id", "reason"]).limit(None)
        if dataset_id is not None:
            query = query.where(f"dataset_id = {sql_string(dataset_id)}")
        frame = query.to_arrow().to_pandas()
        out: dict[str, dict[str, int]] = {}
        for (dataset, reason), n in frame.value_counts(["dataset_id", "reason"]).items():
            out.setdefault(str(dataset), {})[str(reason)] = int(n)
        return out

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
        frame = frame.where(frame.notna(), None)  # NA of unset counts -> None
        return {
            "store": store.uri,
            "model": store.model_info(),
            "cells": store.count(),
            "datasets": frame.to_dict(orient="records"),
        }


def list_versions(
    store: Store | str | os.PathLike | None, storage_options: dict | None = None
) -> dict:
    """What `uceindex versions` shows: the store and its versions, oldest first, each with
    its time, what changed, its tags and the Lance version of each table."""
    with Store.using(store, storage_options=storage_options) as store:
        return {"store": store.uri, "versions": [v.as_dict() for v in store.history()]}


def tag_version(
    store: Store | str | os.PathLike | None,
    name: str,
    version: int | None = None,
    *,
    delete: bool = False,
    storage_options: dict | None = None,
) -> dict:
    """What `uceindex tag` does: tag `version` (None: the latest state) as `name`, so that it
    is never cleaned up and `as_of=name` reads it; delete=True removes the tag instead.
    Returns the version tagged (or untagged) as a dict."""
    with Store.using(store, storage_options=storage_options) as store:
        if delete:
            return {"store": store.uri, "deleted": name, **store.untag(name).as_dict()}
        return {"store": store.uri, "tagged": name, **store.tag(name, version).as_dict()}
