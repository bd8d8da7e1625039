"""What every command checks when it opens a store, cheaply: are the tables' files there, and do
the rows agree with what `datasets` recorded? And a Lance read error made into one line.

A damaged store would otherwise answer from what is left: a lost manifest makes Lance serve the
table's previous version without a word, a lost data file fails deep in a search. The counts
come from the manifests (no scan) unless they disagree; the files are checked on local disk
only (one `stat` each), on object storage a missing one shows when it is read.
`uceindex.store.check` is the whole examination and the repair.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.compute as pc

from uceindex.errors import StoreDamagedError
from uceindex.store import schema as S

COMPLETE = "complete"
# Lance's words for a file that is gone, short or garbled (not for a bad filter or a conflict)
_DAMAGE = re.compile(
    r"Not found:|No such file|LanceError\(IO\)|[Cc]orrupt|failed to fill whole buffer|"
    r"file size is too small|sufficient data|Invalid range"
)
_TABLE_IN_PATH = re.compile(r"(\w+)\.lance")


def repair_hint(uri: str) -> str:
    return f"run `uceindex check --store {uri}` to see what is wrong (--repair to fix it)"


def damaged(uri: str, what: str, hint: str | None = None) -> StoreDamagedError:
    """The one line a damaged store gives: what is wrong, and what to do (by default, the
    command that examines and repairs it)."""
    return StoreDamagedError(f"the store at {uri} is damaged: {what}: {hint or repair_hint(uri)}")


def is_damage(exc: BaseException) -> bool:
    """True for a Lance error that says a file of a table is missing or unreadable."""
    return isinstance(exc, (RuntimeError, OSError, ValueError)) and bool(_DAMAGE.search(str(exc)))


def lance_message(exc: BaseException) -> str:
    """Lance's error in one short line, without its source location."""
    text = str(exc).removeprefix("lance error: ").splitlines()[0]
    return re.sub(r", /\S+\.rs:\d+:\d+$", "", text)[:160]


def read_error(uri: str, exc: BaseException, table: str | None = None) -> StoreDamagedError:
    """A Lance read failure as one line naming the table (found in the failing path)."""
    text = lance_message(exc)
    if table is None:
        found = [n for n in _TABLE_IN_PATH.findall(str(exc)) if n in S.TABLES]
        table = found[0] if found else None
    where = f"table `{table}` cannot be read" if table else "a table cannot be read"
    return damaged(uri, f"{where} ({text})")


def missing_files(dataset) -> list[str]:
    """Data and deletion files the manifest of a Lance dataset lists that are absent, or shorter
    or longer than recorded, on local disk (nothing is checked on object storage)."""
    root = Path(dataset.uri)
    if "://" in dataset.uri or not root.is_dir():
        return []
    bad = []
    for fragment in dataset.get_fragments():
        meta = fragment.metadata
        for data in meta.files:
            if data.base_id is not None:  # a file of another base (shallow clone): not ours
                continue
            path = root / "data" / data.path
            size = path.stat().st_size if path.exists() else None
            if size is None or (data.file_size_bytes and size != data.file_size_bytes):
                bad.append(f"data/{data.path}")
        deletion = meta.deletion_file
        if deletion is not None and deletion.base_id is None:
            relative = deletion.path(meta.id)
            if not (root / relative).exists():
                bad.append(relative)
    return bad


def counts_of(ids) -> dict[str, int]:
    """Rows per data set, from a `dataset_id` column (arrow)."""
    counts = pc.value_counts(ids).to_pylist()
    return {str(c["values"]): int(c["counts"]) for c in counts}


def rows_per_dataset(table) -> dict[str, int]:
    """Rows of each data set in a cells or rejects table (lancedb): one scan of `dataset_id`."""
    return counts_of(table.search().select(["dataset_id"]).limit(None).to_arrow()["dataset_id"])


def count_problems(datasets: list[dict], table_name: str, counts: dict[str, int]) -> list[str]:
    """What is wrong with the rows of each data set in `cells` or `rejects` (`counts`, rows per
    data set) against the `datasets` rows: a complete data set holds exactly what it recorded,
    an unfinished one at most its cells, and no rows belong to a data set not recorded."""
    column = "n_embedded" if table_name == S.CELLS else "n_rejected"
    known = {row["dataset_id"]: row for row in datasets}
    problems = []
    for dataset_id, row in known.items():
        have = counts.get(dataset_id, 0)
        if row["status"] == COMPLETE and have != int(row[column] or 0):
            problems.append(
                f"`{table_name}` holds {have:,} rows of data set {dataset_id}, "
                f"whose complete ingest recorded {int(row[column] or 0):,}"
            )
        elif row["status"] != COMPLETE and have > int(row["n_cells"]):
            problems.append(
                f"`{table_name}` holds {have:,} rows of data set {dataset_id}, "
                f"which has {int(row['n_cells']):,} cells"
            )
    orphans = sorted(set(counts) - set(known))
    if orphans:
        n = sum(counts[o] for o in orphans)
        problems.append(
            f"`{table_name}` holds {n:,} rows of data sets `datasets` does not record "
            f"({', '.join(orphans[:3])})"
        )
    return problems


def _plausible(datasets: list[dict], column: str, total: int) -> bool:
    """The manifest's row count fits the records: the complete data sets' counts plus at most
    every cell of the unfinished ones."""
    done = sum(int(r[column] or 0) for r in datasets if r["status"] == COMPLETE)
    pending = sum(int(r["n_cells"]) for r in datasets if r["status"] != COMPLETE)
    return done <= total <= done + pending


def first_problem(tables: dict) -> str | None:
    """The cheap check of an opened snapshot (`tables`: name -> lancedb table): files present,
    rows as recorded. None when it holds; else what is wrong, in words."""
    for name, table in tables.items():
        local = Path(str(getattr(table, "_dataset_uri", ""))).is_dir()
        bad = missing_files(table.to_lance()) if local else []
        if bad:
            return f"{len(bad)} file(s) of table `{name}` are missing or truncated ({bad[0]})"
    columns = ["dataset_id", "status", "n_cells", "n_embedded", "n_rejected"]
    datasets = tables[S.DATASETS].to_arrow().select(columns).to_pylist()
    for name, column in ((S.CELLS, "n_embedded"), (S.REJECTS, "n_rejected")):
        table = tables.get(name)
        total = table.count_rows() if table is not None else 0
        if _plausible(datasets, column, total):
            continue
        counts = rows_per_dataset(table) if table is not None else {}
        problems = count_problems(datasets, name, counts)
        if problems:
            return "; ".join(problems[:2])
    return None
