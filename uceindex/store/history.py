"""The store's history: versions over all its tables, tags that keep them, reading as of one.

Lance versions each table on its own, at every commit; a version of the store must be one
point over all of them. So each change that leaves the store consistent (created, a data set
added, replaced or rolled back, the index changed) appends one row to the `history` table:
when, what, and the Lance version of each table then. Version N of the store is the N-th row:
rows are only ever appended, and appends keep their order and never conflict, so two writers
finishing at once get two numbers. A tag NAME is a Lance tag NAME on each table at those
versions. Lance never cleans up a tagged version (`prune` asks it to skip them rather than
fail), so a tagged state reads the same for as long as the tag exists. Reading as of a version
checks every table out at it; a checked-out table refuses writes.

Functions of a lancedb connection `db`; `Store` is their face (`Store.open(uri, as_of=...)`,
`store.history()`, `store.tag(...)`).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, replace

import pyarrow as pa

from uceindex.errors import StoreError
from uceindex.store import schema as S

HISTORY = "history"
KEEP_UNTAGGED = dt.timedelta(days=7)  # `prune` removes untagged versions older than this
NEVER = dt.timedelta(days=36_500)  # an age Lance's optimize() prunes nothing at: `prune` does
# A letter first (never a version number); dots only between parts (Lance's refs rules).
TAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*")
TAG_MAX = 100
SNAPSHOT = "snapshot"  # the action of a state recorded because a tag asked for it
_LANCE_ERRORS = (ValueError, RuntimeError, OSError)  # what lancedb raises for a missing version


def _column(table: str) -> str:
    return f"{table}_version"


@dataclass(frozen=True)
class Version:
    """One version of the store. `tables`: the Lance version of each table (None: absent then).
    `number` is None only for a tag that no listed version matches (tagged by hand)."""

    number: int | None
    time: dt.datetime | None
    action: str
    dataset_id: str | None
    detail: str
    tables: dict
    uceindex_version: str | None = None
    tags: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {
            "version": self.number,
            "time": self.time.isoformat() if self.time else None,
            "action": self.action,
            "dataset_id": self.dataset_id,
            "detail": self.detail,
            "tags": list(self.tags),
            "tables": dict(self.tables),
            "uceindex_version": self.uceindex_version,
        }

    @property
    def label(self) -> str:
        return str(self.number) if self.number is not None else repr(self.tags[0])


def table_versions(tables: dict) -> dict[str, int | None]:
    """The Lance version of each of the store's tables (`tables`: name -> lancedb table)."""
    return {name: (tables[name].version if name in tables else None) for name in S.TABLES}


def _history_table(db, create: bool = False):
    if HISTORY in set(db.list_tables().tables):
        return db.open_table(HISTORY)
    if not create:
        return None
    return db.create_table(HISTORY, schema=S.schema(HISTORY), exist_ok=True)


def entries(db) -> list[Version]:
    """The versions of the store, oldest first, without their tags ([] for a store made
    before uceindex kept a history)."""
    table = _history_table(db)
    if table is None:
        return []
    return [
        Version(
            number=i + 1,
            time=row["time"],
            action=row["action"],
            dataset_id=row["dataset_id"],
            detail=row["detail"],
            tables={name: row[_column(name)] for name in S.TABLES},
            uceindex_version=row["uceindex_version"],
        )
        for i, row in enumerate(table.to_arrow().to_pylist())
    ]


def _tags(db) -> dict[str, dict[str, int]]:
    """tag -> {table: Lance version} over the store's tables."""
    present = set(db.list_tables().tables)
    found: dict[str, dict[str, int]] = {}
    for name in S.TABLES:
        if name in present:
            for tag, info in db.open_table(name).tags.list().items():
                found.setdefault(tag, {})[name] = int(info["version"])
    return found


def _state(held: dict) -> tuple:
    return tuple(held.get(name) for name in S.TABLES)


def versions(db) -> list[Version]:
    """The versions of the store, oldest first, each with the tags that hold it."""
    by_state: dict[tuple, list[str]] = {}
    for tag, held in _tags(db).items():
        by_state.setdefault(_state(held), []).append(tag)
    return [replace(v, tags=tuple(sorted(by_state.get(_state(v.tables), [])))) for v in entries(db)]


def record(db, tables: dict, action: str, detail: str, dataset_id: str | None = None) -> Version:
    """Append the state of `tables` (the store's, at their latest) as a new version, unless
    the last version is that state already; return the version."""
    from uceindex import __version__

    state = table_versions(tables)
    history = _history_table(db, create=True)
    known = entries(db)
    if known and known[-1].tables == state:
        return known[-1]
    row = {
        "time": dt.datetime.now(dt.timezone.utc),
        "action": action,
        "dataset_id": dataset_id,
        "detail": detail,
        **{_column(name): state[name] for name in S.TABLES},
        "uceindex_version": __version__,
    }
    history.add(pa.Table.from_pylist([row], schema=S.schema(HISTORY)))
    # Another writer may have appended meanwhile: this state's row is the one to return.
    return next(v for v in reversed(entries(db)) if v.tables == state)


def _listing(uri: str) -> str:
    return f"`uceindex versions --store {uri}` lists them"


def resolve(db, uri: str, as_of: int | str) -> Version:
    """The version `as_of` names: a version number (1, 2, ...) or a tag."""
    text = str(as_of).strip()
    if text.isascii() and text.isdigit():
        known = versions(db)
        number = int(text)
        if not 1 <= number <= len(known):
            have = f"its versions are 1 to {len(known)}" if known else "it has no versions yet"
            raise StoreError(
                f"the store at {uri} has no version {number} ({have}): {_listing(uri)}"
            )
        return known[number - 1]
    held = _tags(db).get(text)
    if held is None:
        raise StoreError(f"the store at {uri} has no version or tag {text!r}: {_listing(uri)}")
    state = {name: held.get(name) for name in S.TABLES}
    for version in entries(db):
        if version.tables == state:
            return replace(version, tags=(text,))
    return Version(None, None, "tagged", None, f"tag {text}", state, tags=(text,))


def _gone(uri: str, version: Version, table: str) -> StoreError:
    return StoreError(
        f"version {version.label} of the store at {uri} was cleaned up (its `{table}` table "
        f"keeps no version {version.tables[table]}): `uceindex index` keeps untagged versions "
        f"for {KEEP_UNTAGGED.days} days; tag a version to keep it (uceindex tag NAME --version N)"
    )


def checkout(db, uri: str, as_of: int | str) -> tuple[Version, dict]:
    """The version `as_of` names and the store's tables as they were then (name -> lancedb
    table checked out at its Lance version, so read-only); a table absent then is left out."""
    version = resolve(db, uri, as_of)
    tables = {}
    for name, number in version.tables.items():
        if number is None:
            continue
        try:
            table = db.open_table(name)
            table.checkout(number)
        except _LANCE_ERRORS:
            raise _gone(uri, version, name) from None
        tables[name] = table
    return version, tables


def tag(db, uri: str, name: str, tables: dict, version: int | None = None) -> Version:
    """Tag version `version` (None: the store's latest state, `tables`, recorded as a version
    when it is not one) as `name`, on each of the store's tables; return that version."""
    if not TAG_NAME.fullmatch(name or "") or len(name) > TAG_MAX or name.endswith(".lock"):
        raise StoreError(
            f"tag {name!r}: a tag is letters, digits, '_', '-' and single dots between them, "
            f"starting with a letter (at most {TAG_MAX} characters, not ending in .lock)"
        )
    if name in _tags(db):
        raise StoreError(
            f"the store at {uri} already has a tag {name!r}: choose another name, or remove it "
            f"first (uceindex tag {name} --delete)"
        )
    if version is None:
        target = record(db, tables, SNAPSHOT, "the state of the store when it was tagged")
    else:
        target, _ = checkout(db, uri, int(version))  # StoreError when it was cleaned up
    created = []
    for table, number in target.tables.items():
        if number is None:
            continue
        try:
            db.open_table(table).tags.create(name, number)
        except _LANCE_ERRORS as exc:
            for done in created:
                db.open_table(done).tags.delete(name)
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(
                f"cannot tag version {target.label} of the store at {uri} as {name!r}: {why}"
            ) from None
        created.append(table)
    return replace(target, tags=tuple(sorted({*target.tags, name})))


def untag(db, uri: str, name: str) -> Version:
    """Remove the tag `name` from every table (its versions may then be cleaned up); return
    the version it held."""
    held = _tags(db).get(name)
    if held is None:
        raise StoreError(f"the store at {uri} has no tag {name!r}: {_listing(uri)}")
    version = resolve(db, uri, name)
    for table in held:
        db.open_table(table).tags.delete(name)
    return version


def prune(table) -> None:
    """Clean up the versions of a lancedb `table` older than KEEP_UNTAGGED, except tagged
    ones (Lance would otherwise refuse the whole clean-up once a tag is that old)."""
    table.to_lance().cleanup_old_versions(
        older_than=KEEP_UNTAGGED, error_if_tagged_old_versions=False
    )
