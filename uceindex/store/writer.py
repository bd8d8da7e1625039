"""Writing one data set into a store exactly once, resumable after a kill at any moment.

Protocol (docs/store.md, "Nothing lost"):
1. `begin`: the `datasets` row is written with status `running` (one merge commit).
2. Chunk k: its `rejects` rows are appended, then its `cells` rows (one append each, atomic),
   every row stamped `ingest_chunk = k`. The cells append is the chunk's commit point.
3. `finish`: the row is replaced (one merge commit) with status `complete` and the counts.
On a re-run with the same file and settings, chunks up to the last one with rows in `cells`
are kept; rows of later chunks (in either table) are deleted and those chunks written again,
so a kill between any two commits ends with the rows of an uninterrupted run. A chunk whose
cells were all rejected has no cells rows and is simply written again.

Replacing a data set first marks its row `deleting`, then deletes its rows, then starts
afresh; a kill in between is finished by the next ingest of that id.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal

import numpy as np
import pyarrow as pa

from uceindex.errors import StoreError
from uceindex.io.obs import STRING, ObsColumns, merge_types
from uceindex.store import schema as S
from uceindex.store.store import Store, retry_commit, sql_name, sql_string

KILL_ENV = "UCEINDEX_TEST_KILL_AT"  # tests: "<point>:<chunk>" makes the writer SIGKILL itself
TMP_SUFFIX = "__uceindex_tmp"  # a column being converted to string
VOCABULARY = "vocabulary"  # settings key: the fingerprint of the species' vocabulary


def maybe_die(point: str, chunk: int = -1) -> None:
    """Test hook: SIGKILL this process at a named point (begin, rejects, cells, finish)."""
    want = os.environ.get(KILL_ENV)
    if want and want == f"{point}:{chunk}":
        sigkill_self()


def sigkill_self() -> None:
    """Its own function so that in-process tests can replace this kill alone: patching
    os.kill would also catch the calls of Ray's threads."""
    os.kill(os.getpid(), signal.SIGKILL)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def embedding_array(embeddings: np.ndarray) -> pa.FixedSizeListArray:
    """(n, D) float32 -> fixed_size_list<float32>[D]."""
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1])


def legacy_binding(store: Store, fingerprint: str, legacy: str | None) -> str | None:
    """The refusal for a store bound by an earlier uceindex to the checkpoint-only fingerprint
    `legacy` of the model now given (None when the store is not such a store)."""
    info = store.model_info()
    if info is None or legacy is None or info["model_fingerprint"] != legacy:
        return None
    return (
        f"the store at {store.uri} was made by an earlier uceindex, whose fingerprint "
        f"({legacy}) covered this checkpoint but not the token table, vocabularies or "
        f"chromosome table it was used with; this model directory is fingerprint {fingerprint}: "
        "ingest its data sets again into a new --store (they cannot be proven to match)"
    )


def check_binding(
    store: Store, name: str, fingerprint: str, dim: int, legacy: str | None = None
) -> None:
    """Refuse embeddings of another model (fingerprint) or width than the store holds;
    `legacy`, the given model's checkpoint-only fingerprint, names a store of earlier versions."""
    info = store.model_info()
    if info is None:
        return
    old = legacy_binding(store, fingerprint, legacy)
    if old is not None:
        raise StoreError(old)
    if info["model_fingerprint"] != fingerprint or info["embedding_dim"] != dim:
        raise StoreError(
            f"the store at {store.uri} holds {info['embedding_dim']}-d embeddings of model "
            f"{info['model_name']} (fingerprint {info['model_fingerprint']}); these are "
            f"{dim}-d from {name} (fingerprint {fingerprint}). One store holds one model: "
            "use another --store (or, for --embedding-key, --model-dir of the store's model "
            "if that model made them)"
        )


def recorded_vocabularies(store: Store, species: str, skip: str | None = None) -> dict[str, str]:
    """Vocabulary fingerprint -> a data set that recorded it, over the store's data sets of
    `species` but `skip` (those of earlier versions recorded none)."""
    frame = store.datasets()
    found = {}
    for row in frame[(frame["species"] == species) & (frame["dataset_id"] != skip)].itertuples():
        value = json.loads(row.settings or "{}").get(VOCABULARY)
        if value:
            found.setdefault(str(value), str(row.dataset_id))
    return found


def vocabulary_mismatch(
    store: Store, species: str, fingerprint: str | None, skip: str | None = None
) -> str | None:
    """Why cells of `species` embedded with the vocabulary `fingerprint` do not belong beside
    the store's data sets (but `skip`); None when they do, or when either side recorded none."""
    if not fingerprint:
        return None
    recorded = recorded_vocabularies(store, species, skip)
    others = {fp: ds for fp, ds in recorded.items() if fp != fingerprint}
    if not others:
        return None
    fp, dataset = next(iter(others.items()))
    return (
        f"fingerprint mismatch: the store's {species} data sets (e.g. {dataset!r}) were embedded "
        f"with {species} vocabulary {fp}, this model directory gives {fingerprint} (another "
        "protein-embedding file, offsets or chromosome table): use the model directory that "
        "made the store, or another --store"
    )


class DatasetWriter:
    """Writes the rows of one data set; see the module docstring for the protocol.

    `record` holds the `datasets` columns known before writing (dataset_id, source_path,
    content_hash, species, n_cells, n_genes, genes_matched, model_name, model_fingerprint,
    embedding_dim, embedding_source, seed, settings)."""

    def __init__(self, store: Store, record: dict, obs: ObsColumns, replace: bool = False):
        self.store = store
        self.record = dict(record)
        self.obs = obs
        self.replace = replace
        self.legacy = self.record.pop("legacy_fingerprint", None)  # names older stores
        self.model_dir = self.record.pop("model_dir", None)  # remembered by a new store
        self.dataset_id = record["dataset_id"]
        self.dim = int(record["embedding_dim"])
        self.start_chunk = 0
        self.types: dict[str, pa.DataType] = {}  # store type of each obs column
        self.added_columns: list[str] = []
        self.created_cells = False
        self.twin: str | None = None
        self.warnings: list[str] = []
        self._where = f"dataset_id = {sql_string(self.dataset_id)}"

    # -- begin --------------------------------------------------------------------------------

    def begin(self) -> str:
        """Decide what to do: "skip" (already complete), "resume" (from `start_chunk`),
        "fresh" or "replace". Nothing is written for "skip"."""
        self.store.check_writable()
        self.store.refresh()
        rec = self.record
        check_binding(
            self.store, rec["model_name"], rec["model_fingerprint"], self.dim, self.legacy
        )
        vocab = json.loads(rec["settings"]).get(VOCABULARY)
        mismatch = vocabulary_mismatch(self.store, rec["species"], vocab, self.dataset_id)
        if mismatch is not None:
            raise StoreError(mismatch)
        row = self.store.dataset(self.dataset_id)
        same = row is not None and row["content_hash"] == rec["content_hash"]
        if not self.replace:
            if row is not None and row["status"] == "complete":
                if same:
                    return "skip"
                raise StoreError(
                    f"the store already holds a data set {self.dataset_id!r} from other content "
                    f"({row['source_path']}): pass --replace to replace it, or --dataset-id "
                    "to store this one beside it"
                )
            twin = self._complete_twin()
            if row is None and twin is not None:
                self.twin = twin
                return "skip"
            if row is not None and row["status"] == "running":
                if not same or row["settings"] != rec["settings"]:
                    differs = (
                        f"content (sha256 {row['content_hash'][:12]}… there, "
                        f"{rec['content_hash'][:12]}… now)"
                        if not same
                        else settings_differ(row["settings"], rec["settings"])
                    )
                    raise StoreError(
                        f"an interrupted ingest of {self.dataset_id!r} with other {differs} "
                        "is in the store: re-run it as it was to finish it, or pass --replace "
                        "to start again"
                    )
                self._prepare_columns()
                self.start_chunk = self._resume_point()
                return "resume"
        action = "fresh"
        if row is not None:  # replace, or finish a replace that was interrupted
            self._write_row("deleting", base=row)
            self._delete_rows()
            action = "replace"
        self._prepare_columns()
        maybe_die("begin", 0)
        self._write_row("running", created_at=None)
        return action

    def _complete_twin(self) -> str | None:
        """Another complete data set made from the same bytes, if any."""
        frame = self.store.datasets()
        hit = frame[
            (frame["content_hash"] == self.record["content_hash"])
            & (frame["status"] == "complete")
            & (frame["dataset_id"] != self.dataset_id)
        ]
        return None if hit.empty else str(hit["dataset_id"].iloc[0])

    def _resume_point(self) -> int:
        """First chunk to write: one past the last chunk with cells rows; later rows go."""
        cells = self.store.cells
        done = -1
        if cells is not None:
            chunks = cells.search().where(self._where).select([S.CHUNK]).limit(None).to_arrow()
            if chunks.num_rows:
                done = int(np.max(chunks.column(S.CHUNK).to_numpy()))
        later = f"{self._where} AND {S.CHUNK} > {done}"
        if cells is not None:
            retry_commit(cells.delete, later)
        retry_commit(self.store.rejects.delete, later)
        return done + 1

    def _delete_rows(self) -> None:
        if self.store.cells is not None:
            retry_commit(self.store.cells.delete, self._where)
        retry_commit(self.store.rejects.delete, self._where)

    def _write_row(self, status: str, base: dict | None = None, **values) -> None:
        """Insert or replace this data set's `datasets` row in one commit."""
        now = _now()
        row = {name: None for name in S.core_names(S.DATASETS)}
        row.update(base or self.record)
        row.update(status=status, updated_at=now, n_embedded=None, n_rejected=None)
        row.update(values)
        row["created_at"] = row["created_at"] or now
        table = pa.Table.from_pylist([row], schema=S.schema(S.DATASETS))
        datasets = self.store.datasets_table
        retry_commit(
            lambda: (
                datasets.merge_insert("dataset_id")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute(table)
            )
        )

    # -- columns ------------------------------------------------------------------------------

    def _prepare_columns(self) -> None:
        """Create `cells` (binding the store to the model) or widen it for these obs columns."""
        db = self.store._db
        if self.store.cells is None:
            rec = self.record
            meta = {
                S.META_MODEL_NAME: rec["model_name"],
                S.META_FINGERPRINT: rec["model_fingerprint"],
                S.META_DIM: str(self.dim),
            }
            if self.model_dir:
                meta[S.META_MODEL_DIR] = str(self.model_dir)
            fields = list(S.schema(S.CELLS, self.dim))
            fields += [pa.field(n, t) for n, t in self.obs.types.items()]
            try:
                db.create_table(S.CELLS, schema=pa.schema(fields, metadata=meta))
                self.created_cells = True
            except (ValueError, RuntimeError) as exc:
                if "already exists" not in str(exc):
                    raise
            self.store.refresh()
            check_binding(self.store, rec["model_name"], rec["model_fingerprint"], self.dim)
        cells = self.store.cells
        self._finish_conversions(cells)
        existing = {f.name: f.type for f in cells.schema}
        new_fields = []
        for name, kind in self.obs.types.items():
            if name not in existing:
                new_fields.append(pa.field(name, kind))
                continue
            merged = merge_types(existing[name], kind)
            if merged != kind:
                self.warnings.append(
                    f"obs column {name!r} is {kind} here but {existing[name]} in the store: "
                    f"stored as {merged}"
                )
            if merged != existing[name]:
                self.warnings.append(
                    f"obs column {name!r} of the store changes from {existing[name]} to {merged} "
                    "to take this data set"
                )
                self._convert(cells, name, merged)
        if new_fields:
            cells.add_columns(new_fields)
            self.added_columns = [f.name for f in new_fields]
        self.store.refresh()
        self.types = {f.name: f.type for f in self.store.cells.schema}

    def _convert(self, cells, name: str, kind: pa.DataType) -> None:
        """Change the type of a stored column (to float64 or string): copy, drop, rename."""
        sql = "DOUBLE" if kind != STRING else "STRING"
        cells.add_columns({name + TMP_SUFFIX: f"CAST({sql_name(name)} AS {sql})"})
        self._finish_conversions(cells)

    def _finish_conversions(self, cells) -> None:
        """Complete a column conversion that a kill interrupted (or the one just begun)."""
        names = set(cells.schema.names)
        for tmp in [n for n in names if n.endswith(TMP_SUFFIX)]:
            name = tmp[: -len(TMP_SUFFIX)]
            if name in names:
                cells.drop_columns([name])
            cells.alter_columns({"path": tmp, "name": name})

    # -- chunks -------------------------------------------------------------------------------

    def write(
        self,
        chunk: int,
        obs_names: np.ndarray,
        obs_arrays: dict[str, pa.Array],
        embeddings: np.ndarray,
        reasons: np.ndarray,
        species: str,
    ) -> tuple[int, int]:
        """Write one chunk (`chunk_tables`): its rejects, then its cells.
        Returns (cells written, rejects written)."""
        cells, rejects = chunk_tables(
            self.store.cells.schema,
            self.dataset_id,
            chunk,
            obs_names,
            obs_arrays,
            embeddings,
            reasons,
            species,
        )
        if rejects is not None:
            self.store.rejects.add(rejects)
        maybe_die("rejects", chunk)
        if cells is not None:
            self.store.cells.add(cells)
        maybe_die("cells", chunk)
        return (0 if cells is None else cells.num_rows), (
            0 if rejects is None else rejects.num_rows
        )

    # -- end ----------------------------------------------------------------------------------

    def counts(self) -> tuple[int, int]:
        """(cells rows, rejects rows) of this data set in the store now."""
        n_cells = self.store.cells.count_rows(self._where) if self.store.cells is not None else 0
        return n_cells, self.store.rejects.count_rows(self._where)

    def finish(self) -> tuple[int, int]:
        """Check every cell is accounted for and mark the data set complete."""
        n_ok, n_rej = self.counts()
        expected = int(self.record["n_cells"])
        if n_ok + n_rej != expected:
            raise StoreError(
                f"{self.dataset_id}: {n_ok} cells and {n_rej} rejects are stored for {expected} "
                "cells in the file; the store changed during the ingest: run it again with --replace"
            )
        maybe_die("finish", 0)
        row = self.store.dataset(self.dataset_id)
        self._write_row("complete", created_at=row["created_at"], n_embedded=n_ok, n_rejected=n_rej)
        change = self._change()
        self.store.record_version(
            change, f"data set {self.dataset_id} {change}: {n_ok:,} cells", self.dataset_id
        )
        return n_ok, n_rej

    def _change(self) -> str:
        """ "replaced" when the history's last word on this data set is that it was stored."""
        said = [v.action for v in self.store.history() if v.dataset_id == self.dataset_id]
        return "replaced" if said and said[-1] in ("added", "replaced") else "added"

    def rollback(self) -> None:
        """Undo this data set after a refused input: its rows, its datasets row and the obs
        columns this ingest added to `cells` (type conversions stay)."""
        self.store.refresh()
        self._delete_rows()
        retry_commit(self.store.datasets_table.delete, self._where)
        cells = self.store.cells
        if cells is not None and self.created_cells and cells.count_rows() == 0:
            self.store._db.drop_table(S.CELLS)  # the store was not bound before this ingest
            cells = None
        if cells is not None and self.added_columns:
            present = set(cells.schema.names)
            drop = [c for c in self.added_columns if c in present]
            if (
                drop
                and cells.count_rows(" OR ".join(f"{sql_name(c)} IS NOT NULL" for c in drop)) == 0
            ):
                cells.drop_columns(drop)
        self.store.record_version(
            "rolled back", f"data set {self.dataset_id} refused and removed", self.dataset_id
        )


def chunk_tables(
    schema: pa.Schema,
    dataset_id: str,
    chunk: int,
    obs_names: np.ndarray,
    obs_arrays: dict[str, pa.Array],
    embeddings: np.ndarray,
    reasons: np.ndarray,
    species: str,
) -> tuple[pa.Table | None, pa.Table | None]:
    """The (cells, rejects) rows of one chunk, None where it has none: cells with a None
    reason go to `cells` (typed as `schema`, the cells table's), the others to `rejects`.

    `obs_arrays` are the chunk's obs columns, already typed; `embeddings` (n, D) float32
    unit rows (anything in rejected rows)."""
    rejected = np.asarray([r is not None for r in reasons], dtype=bool)
    ids = np.char.add(f"{dataset_id}/", np.asarray(obs_names, dtype=str)).astype(object)
    n_rej = int(rejected.sum())
    rejects = None
    if n_rej:
        rejects = pa.table(
            {
                "cell_id": pa.array(ids[rejected], pa.string()),
                "dataset_id": pa.array([dataset_id] * n_rej, pa.string()),
                "obs_name": pa.array(np.asarray(obs_names, dtype=object)[rejected], pa.string()),
                "reason": pa.array([str(r) for r in reasons[rejected]], pa.string()),
                S.CHUNK: pa.array(np.full(n_rej, chunk, np.int32)),
            },
            schema=S.schema(S.REJECTS),
        )
    keep = ~rejected
    n_ok = int(keep.sum())
    if not n_ok:
        return None, rejects
    columns = {
        "cell_id": pa.array(ids[keep], pa.string()),
        "dataset_id": pa.array([dataset_id] * n_ok, pa.string()),
        "species": pa.array([species] * n_ok, pa.string()),
        S.CHUNK: pa.array(np.full(n_ok, chunk, np.int32)),
    }
    index = pa.array(np.flatnonzero(keep))
    for name, array in obs_arrays.items():
        target = schema.field(name).type
        array = array.take(index)
        columns[name] = array if array.type == target else array.cast(target)
    columns[S.EMBEDDING] = embedding_array(embeddings[keep])
    fields = [schema.field(n) for n in columns]
    return pa.table(columns, schema=pa.schema(fields)), rejects


def settings_differ(stored: str | None, now: str) -> str:
    """What differs between two `settings_json` texts, each setting with both values:
    "settings (gene_filter: 'reference' there, 'per-cell' now)"."""
    old, new = json.loads(stored or "{}"), json.loads(now)
    keys = [k for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]

    def shown(value) -> str:
        text = repr(value) if value is not None else "unset"
        return text if len(text) <= 80 else text[:79] + "…"

    parts = [f"{k}: {shown(old.get(k))} there, {shown(new.get(k))} now" for k in keys]
    return f"settings ({'; '.join(parts)})"


def settings_json(settings: dict) -> str:
    """Settings as the canonical JSON stored in `datasets.settings` (compared on resume)."""
    return json.dumps(settings, sort_keys=True, default=str)
