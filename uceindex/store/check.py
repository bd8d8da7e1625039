"""`uceindex check`: the whole examination of a store, and its repair to the last consistent
version Lance still has.

Every version of a table is a manifest under `<table>.lance/_versions/`; the store's history
is the commits of its three tables in time order. A point of that history is consistent when
each table's version there is readable (manifest, data and deletion files) and the rows agree
with `datasets` (`integrity.count_problems`) and the model the cells are bound to. The repair
takes the newest consistent point and restores each table to its version there (Lance
`restore`: a new version with the old content, so nothing is rewritten or lost); manifests
that cannot be read are moved aside to `<table>.lance/_damaged/` first (local stores).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from uceindex.errors import StoreDamagedError
from uceindex.store import integrity
from uceindex.store import options as O
from uceindex.store import schema as S
from uceindex.store.store import Store, _is_local, _local_path, default_store_uri

DAMAGED_DIR = "_damaged"  # where a repair moves the manifests it cannot read
_V2_BASE = 2**64 - 1  # Lance's V2 manifest names count down from here


@dataclass
class Version:
    """One version of one table as the check found it."""

    table: str
    version: int
    timestamp: object = None
    problem: str | None = None  # why it cannot be read; None when it can
    rows: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # rows per data set (cells, rejects)
    records: list[dict] = field(default_factory=list)  # the rows of `datasets`
    model: dict | None = None  # the binding in the cells schema
    indexes: list[dict] = field(default_factory=list)  # cells: name, indexed, unindexed rows


@dataclass
class CheckReport:
    """What `check` found (and, with repair, did)."""

    store: str
    ok: bool
    problems: list[str]
    tables: dict[str, dict]
    datasets: list[dict]
    indexes: list[dict]
    repaired: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _table_uri(uri: str, name: str) -> str:
    return f"{uri.rstrip('/')}/{name}.lance"


def _manifest_version(path: Path) -> int | None:
    try:
        n = int(path.name.removesuffix(".manifest"))
    except ValueError:
        return None
    return _V2_BASE - n if n > 2**63 else n


class _Table:
    """The versions of one table, examined on demand (each one at most once)."""

    def __init__(self, uri: str, name: str, options: dict | None):
        self.name = name
        self.uri = _table_uri(uri, name)
        self.options = options or None
        self.local = _local_path(self.uri) if _is_local(uri) else None
        self._seen: dict[tuple[int, bool], Version] = {}

    def manifests(self) -> dict[int, Path | None]:
        """Version -> its manifest file (local), or None (object storage, from Lance)."""
        if self.local is not None:
            found = {}
            for path in (self.local / "_versions").glob("*.manifest"):
                version = _manifest_version(path)
                if version is not None:
                    found[version] = path
            return found
        try:
            return {v["version"]: None for v in self._open(None).versions()}
        except Exception as exc:
            if not integrity.is_damage(exc):
                raise
            raise integrity.damaged(
                self.uri,
                f"the versions of `{self.name}` cannot be listed ({integrity.lance_message(exc)})",
                "delete its unreadable manifest by hand (object storage), then run "
                "`uceindex check --repair`",
            ) from None

    def _open(self, version: int | None):
        import lance

        return lance.dataset(self.uri, version=version, storage_options=self.options)

    def version(self, number: int, deep: bool = True) -> Version:
        """Version `number`: readable or not and why; with `deep`, its rows counted."""
        key = (number, deep)
        if key in self._seen:
            return self._seen[key]
        found = Version(self.name, number)
        try:
            ds = self._open(number)
            found.timestamp = ds.get_version()["timestamp"]
            if deep:
                self._read(ds, found)
        except Exception as exc:
            if not integrity.is_damage(exc):
                raise
            found.problem = integrity.lance_message(exc)
        self._seen[key] = found
        return found

    def _read(self, ds, found: Version) -> None:
        missing = integrity.missing_files(ds)
        if missing:
            found.problem = f"{len(missing)} file(s) missing or truncated ({missing[0]})"
            return
        for fragment in ds.get_fragments():  # every data file once: its footer, one row
            fragment.to_table(limit=1)
        found.rows = ds.count_rows()
        if self.name == S.DATASETS:
            found.records = ds.to_table().to_pylist()
            return
        ids = ds.to_table(columns=["dataset_id"]).column("dataset_id")
        found.counts = integrity.counts_of(ids)
        if self.name == S.CELLS:
            meta = {k.decode(): v.decode() for k, v in (ds.schema.metadata or {}).items()}
            found.model = {
                "model_name": meta.get(S.META_MODEL_NAME),
                "model_fingerprint": meta.get(S.META_FINGERPRINT),
                "embedding_dim": int(ds.schema.field(S.EMBEDDING).type.list_size),
            }
            found.indexes = _indexes(ds)


def _indexes(ds) -> list[dict]:
    """Each index of the cells table: rows it covers and rows it does not, or why it fails."""
    os.environ.setdefault("LANCE_INCLUDE_VECTOR_CENTROIDS", "false")
    out = []
    for index in ds.list_indices():
        entry = {"name": index["name"], "type": index["type"], "columns": index["fields"]}
        try:
            stats = ds.stats.index_stats(index["name"])
            entry.update(
                indexed_rows=int(stats["num_indexed_rows"]),
                unindexed_rows=int(stats["num_unindexed_rows"]),
                problem=None,
            )
        except Exception as exc:
            if not integrity.is_damage(exc):
                raise
            entry.update(
                indexed_rows=None, unindexed_rows=None, problem=integrity.lance_message(exc)
            )
        out.append(entry)
    return out


def _disagreements(states: dict[str, Version | None]) -> list[str]:
    """What is wrong between readable versions of the tables (counts, model binding)."""
    records = states[S.DATASETS].records
    problems = []
    for name in (S.CELLS, S.REJECTS):
        state = states.get(name)
        problems += integrity.count_problems(records, name, state.counts if state else {})
    cells = states.get(S.CELLS)
    model = cells.model if cells is not None else None
    for row in records if model else []:
        if (row["model_fingerprint"], int(row["embedding_dim"])) != (
            model["model_fingerprint"],
            model["embedding_dim"],
        ):
            problems.append(
                f"data set {row['dataset_id']} records model fingerprint "
                f"{row['model_fingerprint']} ({row['embedding_dim']}-d) but `cells` is bound to "
                f"{model['model_fingerprint']} ({model['embedding_dim']}-d)"
            )
    return problems


def _problems_of(states: dict[str, Version | None]) -> list[str]:
    unreadable = [
        f"table `{s.table}` (version {s.version}) cannot be read: {s.problem}"
        for s in states.values()
        if s is not None and s.problem
    ]
    return unreadable or _disagreements(states)


def check_store(
    store: str | os.PathLike | None,
    repair: bool = False,
    storage_options: dict | None = None,
) -> CheckReport:
    """Examine the store at `store` (a URI): every table readable at its latest version, rows
    per data set as `datasets` recorded, the model binding, the indexes' coverage. With
    `repair`, bring a damaged store back to its newest consistent point (see the module's
    docstring) and examine it again. The store itself need not open (`Store.open` refuses a
    damaged one); a URI that holds no store is a StoreError."""
    uri, names = _store_tables(store, storage_options)
    options = O.resolve(uri, storage_options)
    tables = {name: _Table(uri, name, options) for name in S.TABLES if name in names}
    report = _examine(uri, tables)
    if repair and not report.ok:
        report.repaired, report.notes = _repair(uri, tables)
        if report.repaired:
            fresh = {name: _Table(uri, name, options) for name in tables}
            again = _examine(uri, fresh)
            again.repaired, again.notes = report.repaired, report.notes
            report = again
    return report


def _store_tables(store, storage_options) -> tuple[str, set[str]]:
    """The store's URI and the tables it holds, found without opening them: `Store.open`
    checks the URI is a store (reachable, a directory) and refuses nothing else here."""
    import lancedb

    uri = str(store) if store is not None else default_store_uri()
    try:
        Store.open(uri, storage_options=storage_options, verify=False).close()
    except StoreDamagedError:
        pass
    if _is_local(uri):
        uri = str(_local_path(uri))
        root = Path(uri)
        return uri, {n for n in S.TABLES if (root / f"{n}.lance" / "_versions").is_dir()}
    options = O.resolve(uri, storage_options)
    return uri, set(lancedb.connect(uri, storage_options=options or None).list_tables().tables)


def _latest(table: _Table, deep: bool = True) -> Version | None:
    numbers = sorted(table.manifests(), reverse=True)
    return table.version(numbers[0], deep) if numbers else None


def _examine(uri: str, tables: dict[str, _Table]) -> CheckReport:
    if S.DATASETS not in tables:
        problem = (
            "Lance holds no readable version of its `datasets` table: what it holds cannot be "
            "traced to its files; ingest the files again into a new store"
        )
        return CheckReport(uri, False, [problem], {}, [], [])
    states = {name: _latest(t) for name, t in tables.items()}
    problems = _problems_of(states)
    summary = {
        name: {"version": s.version, "rows": s.rows, "readable": s.problem is None}
        for name, s in states.items()
        if s is not None
    }
    datasets = []
    for row in states[S.DATASETS].records:
        cells, rejects = states.get(S.CELLS), states.get(S.REJECTS)
        datasets.append(
            {
                "dataset_id": row["dataset_id"],
                "status": row["status"],
                "n_cells": row["n_cells"],
                "recorded": [row["n_embedded"], row["n_rejected"]],
                "stored": [
                    cells.counts.get(row["dataset_id"], 0) if cells else 0,
                    rejects.counts.get(row["dataset_id"], 0) if rejects else 0,
                ],
            }
        )
    cells = states.get(S.CELLS)
    indexes = cells.indexes if cells is not None else []
    problems += [
        f"index {i['name']} cannot be read: {i['problem']}" for i in indexes if i["problem"]
    ]
    return CheckReport(uri, not problems, problems, summary, datasets, indexes)


def _repair(uri: str, tables: dict[str, _Table]) -> tuple[list[str], list[str]]:
    """Restore the newest consistent point; (what was done, what the user should know)."""
    if S.DATASETS not in tables:
        return [], ["nothing to restore: Lance holds no version of `datasets`"]
    done: list[str] = []
    for table in tables.values():  # unreadable manifests stop Lance from committing at all
        done += _move_unreadable(table)
    point = _consistent_point(tables)
    if point is None:
        return done, ["no version of the store is consistent: ingest the files into a new store"]
    notes = []
    for name, state in point.items():
        latest = _latest(tables[name], deep=False)
        if state.version != latest.version:
            tables[name]._open(state.version).restore()
            done.append(f"restored `{name}` to version {state.version} (of {latest.version})")
    for index in point[S.CELLS].indexes if S.CELLS in point else []:
        if index["problem"]:
            tables[S.CELLS]._open(None).drop_index(index["name"])
            done.append(
                f"dropped the unreadable index {index['name']}: build it again with "
                f"`uceindex index --store {uri}`"
            )
    for row in point[S.DATASETS].records:
        if row["status"] != integrity.COMPLETE:
            notes.append(
                f"data set {row['dataset_id']} is unfinished at this version: run its ingest "
                "again to finish it"
            )
    return done, notes


def _move_unreadable(table: _Table) -> list[str]:
    """Move the manifests Lance cannot read out of `_versions` (local stores only)."""
    moved = []
    for number, path in sorted(table.manifests().items()):
        if path is None or table.version(number, deep=False).problem is None:
            continue
        aside = table.local / DAMAGED_DIR
        aside.mkdir(exist_ok=True)
        path.rename(aside / path.name)
        moved.append(f"moved the unreadable manifest of `{table.name}` version {number} aside")
    return moved


def _consistent_point(tables: dict[str, _Table]) -> dict[str, Version] | None:
    """The newest point of the store's history where every table is readable and agrees."""
    history = {
        name: sorted(
            (v for v in (t.version(n, deep=False) for n in t.manifests()) if v.problem is None),
            key=lambda v: v.version,
        )
        for name, t in tables.items()
    }
    moments = sorted({v.timestamp for versions in history.values() for v in versions}, reverse=True)
    for moment in moments:
        point = {}
        for name, versions in history.items():
            before = [v for v in versions if v.timestamp <= moment]
            if not before:
                break
            point[name] = tables[name].version(before[-1].version)
        else:
            if not _problems_of(point):
                return point
    return None
