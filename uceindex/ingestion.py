"""Ingest: .h5ad files -> cells in a store, streamed in chunks, resumable, nothing lost.

`ingest(paths, ...)` is what `uceindex ingest` runs; `ingest_embeddings(...)` writes
precomputed embeddings from Python (tests, notebooks). Each file becomes one data set:
its cells go to `cells` (embedding + every obs column), cells that cannot be embedded go
to `rejects` with the reason, and `datasets` records where the rows came from. The writing
protocol (exactly once across kills) is in uceindex/store/writer.py.

The library never prints: pass `progress(done, total, label)` to follow it.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

import uceindex
from uceindex.errors import InputDataError, StoreError, UceIndexError, UnknownSpeciesError
from uceindex.io.counts import check_chunk
from uceindex.io.genes import (
    EXTERNAL,
    MIN_GENES,
    MIN_MATCHED_SHARE,
    GeneFilter,
    gene_filter_of,
)
from uceindex.io.obs import STRING, ObsColumns, chunk_table, obs_columns, species_of
from uceindex.io.plan import plan_counts
from uceindex.io.stream import H5AD, file_hash
from uceindex.model.files import TRAINING_SPECIES
from uceindex.model.numerics import DEFAULT_MODE, DEFAULT_PRECISION
from uceindex.ontology import LABEL, TERM, TERM_COLUMNS, LabelMapper, cell_ontology, label_map_of
from uceindex.pipeline import ahead, default_threads
from uceindex.store import schema as S
from uceindex.store.labels import label_report
from uceindex.store.lock import ingest_lock
from uceindex.store.store import Store
from uceindex.store.writer import VOCABULARY, DatasetWriter, settings_json
from uceindex.vectors import unit_rows

CHUNK_CELLS_UCE = 4096  # cells per commit when the model embeds (minutes of CPU work at most)
CHUNK_CELLS_OBSM = 16384  # cells per commit for pre-embedded input (~84 MB at 1280-d)
DATASET_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
REASON_NONFINITE = "non-finite values in {where}"
REASON_ZERO = "zero vector in {where}"

Progress = Callable[..., None]  # progress(done, total, label)
# How the chunks (k, start, stop) of a data set still to write get written: by default here,
# one after another; `uceindex.scale` writes them on Ray workers. Yields each chunk's stop
# once its rows are committed.
WriteChunks = Callable[[DatasetWriter, list[tuple[int, int, int]]], Iterator[int]]


class IngestInterrupted(StoreError):
    """The ingest stopped part-way for a reason outside the input (a worker died): what is
    committed stays, and the same command resumes from there."""


@dataclass
class DatasetResult:
    """What happened to one file."""

    dataset_id: str
    source: str | None
    action: str  # ingested, resumed, replaced, skipped
    n_cells: int = 0
    n_embedded: int = 0
    n_rejected: int = 0
    reject_reasons: dict[str, int] = field(default_factory=dict)
    embedding_source: str = "uce"
    genes: dict | None = None
    seconds: float = 0.0
    cells_written: int = 0  # cells processed by this run (less than n_cells after a resume)
    warnings: list[str] = field(default_factory=list)
    note: str = ""
    labels: dict | None = None  # store.labels.label_report of the data set: CL terms, unmapped

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["cells_per_s"] = round(self.cells_written / self.seconds, 1) if self.seconds else None
        d["seconds"] = round(self.seconds, 3)
        return d


@dataclass
class IngestReport:
    """The outcome of one `ingest` call, one entry per file."""

    store: str
    model: dict | None
    datasets: list[DatasetResult] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "store": self.store,
            "model": self.model,
            "datasets": [d.as_dict() for d in self.datasets],
        }


# -- helpers -----------------------------------------------------------------------------------


def default_dataset_id(path: str | os.PathLike) -> str:
    """The file name without .h5ad, with characters other than letters, digits, . _ - as _."""
    stem = Path(path).name.removesuffix(".h5ad")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-") or "dataset"


def check_dataset_id(dataset_id: str) -> str:
    if not DATASET_ID.match(dataset_id or ""):
        raise InputDataError(
            f"dataset id {dataset_id!r} must start with a letter or digit and hold only "
            "letters, digits, '.', '_' and '-'"
        )
    return dataset_id


def normalise(embeddings: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows to unit L2 norm (float32); rows with NaN/inf or zero norm get a reject reason."""
    out, ok = unit_rows(embeddings)
    finite = np.isfinite(np.asarray(embeddings, dtype=np.float32)).all(axis=1)
    reasons = np.full(len(out), None, dtype=object)
    reasons[~finite] = REASON_NONFINITE.format(where=where)
    reasons[finite & ~ok] = REASON_ZERO.format(where=where)
    return out, reasons


def _reserved() -> set[str]:
    return set(S.core_names(S.CELLS))


def _settings(obs: ObsColumns, **values) -> str:
    # obs_columns as [source, store] pairs: JSON objects are written with sorted keys
    pairs = [[source, name] for source, name in obs.names.items()]
    return settings_json({**values, "obs_columns": pairs, "renamed_columns": obs.renamed})


def _with_terms(cols: ObsColumns, chunks, label_map: dict | None) -> tuple[Any, dict]:
    """A data set with a `cell_type` label or CL ids in its obs gets the term columns
    (ontology TERM_COLUMNS: the CL term of each cell, its label, how it was mapped); the obs's
    own `cell_type_ontology_term_id` is replaced by its checked value. Returns the chunk
    reader and the settings that name the ontology and the label map."""
    if LABEL not in cols.names and TERM not in cols.names:
        return chunks, {}
    ontology = cell_ontology()
    mapper = LabelMapper(label_map, ontology)
    for name in TERM_COLUMNS:
        if name not in cols.names:
            cols.add(name, STRING, None, _reserved())
        cols.types[cols.names[name]] = STRING

    def with_terms(start: int, stop: int) -> Chunk:
        names, frame, rows = chunks(start, stop)
        none = np.full(len(frame), None, dtype=object)
        labels = frame[LABEL].to_numpy(dtype=object) if LABEL in frame else none
        given = frame[TERM].to_numpy(dtype=object) if TERM in frame else None
        return names, frame.assign(**mapper.columns(labels, given)), rows

    pairs = sorted((label_map or {}).items())
    digest = hashlib.sha256(repr(pairs).encode()).hexdigest()[:16] if pairs else None
    return with_terms, {"cell_ontology": ontology.version, "label_map": digest}


def _labels_of(store: Store, result: DatasetResult) -> None:
    """The data set's label report, and a warning naming its unmapped labels (none for a
    file skipped as the twin of a data set stored under another id)."""
    if store.dataset(result.dataset_id) is None:
        return
    report = label_report(store, result.dataset_id)
    if report is None:
        return
    result.labels = report
    if report["unmapped_cells"]:
        top = ", ".join(f"{u['label']!r} ({u['cells']})" for u in report["unmapped"][:5])
        result.warnings.append(
            f"{report['unmapped_cells']} cells have no Cell Ontology term (e.g. {top}): "
            "see `uceindex labels`, map them with --label-map"
        )


# -- the chunk loop shared by every source ------------------------------------------------------

# A chunk read ahead of the writer: names, obs, and what `finish` turns into (embeddings, reasons).
Chunk = tuple[np.ndarray, pd.DataFrame, Any]
Finish = Callable[[Any], tuple[np.ndarray, np.ndarray]]


def _as_is(rows):
    return rows


def _write_dataset(
    store: Store,
    record: dict,
    obs: ObsColumns,
    chunks: Callable[[int, int], Chunk],
    chunk_cells: int,
    *,
    finish: Finish = _as_is,
    threads: int = 0,
    replace: bool,
    progress: Progress | None,
    result: DatasetResult,
    write_chunks: WriteChunks | None = None,
) -> DatasetResult:
    """Run the writer over chunk after chunk; roll back on a refused input. `threads` threads
    read chunks ahead of the writer (`chunks`), `finish` (the model) runs in this thread;
    `write_chunks`, when given, writes them instead (elsewhere)."""
    started = time.perf_counter()
    n = int(record["n_cells"])
    writer = DatasetWriter(store, record, obs, replace=replace)
    action = writer.begin()
    result.warnings += obs.warnings + writer.warnings
    if action == "skip":
        row = store.dataset(writer.twin or writer.dataset_id)
        result.action = "skipped"
        result.note = (
            f"already in the store as {writer.twin}" if writer.twin else "already in the store"
        ) + " (same content; --replace to ingest it again)"
        result.n_embedded, result.n_rejected = int(row["n_embedded"]), int(row["n_rejected"])
        return result
    result.action = {"fresh": "ingested", "resume": "resumed", "replace": "replaced"}[action]

    def write_here(writer: DatasetWriter, ranges: list) -> Iterator[int]:
        read = ahead(lambda r: chunks(r[1], r[2]), ranges, threads=threads, depth=threads + 1)
        with closing(read):
            for (k, _, stop), (names, frame, rows) in zip(ranges, read):
                emb, reasons = finish(rows)
                arrays = chunk_table(frame, obs, writer.types)
                writer.write(k, names, arrays, emb, reasons, record["species"])
                yield stop

    try:
        first = writer.start_chunk * chunk_cells
        if progress:
            progress(first, n, result.dataset_id)
        ranges = [
            (k, start, min(start + chunk_cells, n))
            for k, start in enumerate(range(0, n, chunk_cells))
            if k >= writer.start_chunk
        ]
        done = first
        for stop in (write_chunks or write_here)(writer, ranges):
            result.cells_written += stop - done
            done = stop
            if progress:
                progress(stop, n, result.dataset_id)
        n_ok, n_rej = writer.counts()
        if n_ok == 0 and n:
            reasons = store.reject_reasons(writer.dataset_id).get(writer.dataset_id, {})
            raise InputDataError(
                f"none of the {n} cells could be embedded ({'; '.join(reasons)}): "
                "check the input (and --min-genes)"
            )
        result.n_embedded, result.n_rejected = writer.finish()
    except IngestInterrupted:
        raise
    except UceIndexError:
        writer.rollback()
        raise
    except Exception as exc:  # a write Lance refused: one line, and no half data set
        raise _write_failed(writer, action, result, exc) from None
    result.reject_reasons = store.reject_reasons(writer.dataset_id).get(writer.dataset_id, {})
    result.seconds = time.perf_counter() - started
    return result


def _write_failed(
    writer: DatasetWriter, action: str, result: DatasetResult, exc: Exception
) -> StoreError:
    """The error of an ingest stopped by an unexpected failure (a write the store refused).
    Before this run committed a chunk the data set is rolled back (no `running` row, no new
    column left); after, what is committed stays for the same command to resume."""
    why = f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
    if action != "resume" and result.cells_written == 0:
        writer.rollback()
        return StoreError(f"the ingest failed before its first commit ({why}); nothing was kept")
    return StoreError(
        f"the ingest failed after {result.cells_written:,} cells were committed ({why}): run "
        "the same command again to resume, or pass --replace to start again"
    )


# -- Python-side data sets ----------------------------------------------------------------------


def _frame_hash(obs: pd.DataFrame, embeddings: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(embeddings).tobytes())
    h.update("\0".join(map(str, obs.index)).encode())
    h.update(obs.astype(str).to_csv().encode())
    return h.hexdigest()


def ingest_embeddings(
    store: Store | str | os.PathLike | None,
    dataset_id: str,
    obs: pd.DataFrame,
    embeddings: np.ndarray,
    species: str,
    model_name: str,
    model_fingerprint: str,
    *,
    replace: bool = False,
    reasons: np.ndarray | None = None,
    embedding_source: str = "python",
    chunk_cells: int = CHUNK_CELLS_OBSM,
    storage_options: dict | None = None,
    label_map=None,
) -> dict:
    """Write precomputed embeddings as one data set, no file needed.

    obs: one row per cell, index = obs names (unique); every column is stored, typed.
    embeddings: (n_cells, D); rows are L2-normalised here, rows with NaN/inf or zero norm go
    to `rejects` (as do rows whose `reasons` entry is not None). The store is bound to
    (model_name, model_fingerprint, D) by its first data set. Same content again is a no-op
    unless replace=True. storage_options: as `Store.open` takes them. label_map: a label map
    file or dict (label -> CL id) for the `cell_type` labels. Returns
    DatasetResult.as_dict()."""
    with Store.using(store, create=True, storage_options=storage_options) as store:
        check_dataset_id(dataset_id)
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(obs):
            raise InputDataError(
                f"embeddings must be (n_cells, D) with n_cells = len(obs) = {len(obs)}, "
                f"got {embeddings.shape}"
            )
        if not obs.index.is_unique:
            dup = obs.index[obs.index.duplicated()][:3].tolist()
            raise InputDataError(f"obs names are not unique (e.g. {dup}): make them unique")
        cols = obs_columns(obs, _reserved())
        names = np.asarray(obs.index.astype(str), dtype=object)
        given = None if reasons is None else np.asarray(reasons, dtype=object)

        def chunks(start: int, stop: int) -> Chunk:
            emb, why = normalise(embeddings[start:stop], "embeddings")
            if given is not None:
                why = np.where(pd.isna(given[start:stop]), why, given[start:stop])
            return names[start:stop], obs.iloc[start:stop], (emb, why)

        chunks, terms = _with_terms(cols, chunks, label_map_of(label_map))
        record = {
            "dataset_id": dataset_id,
            "source_path": None,
            "content_hash": _frame_hash(obs, embeddings),
            "species": species,
            "n_cells": len(obs),
            "n_genes": None,
            "genes_matched": None,
            "model_name": model_name,
            "model_fingerprint": model_fingerprint,
            "embedding_dim": int(embeddings.shape[1]),
            "embedding_source": embedding_source,
            "seed": None,
            "settings": _settings(cols, chunk_cells=chunk_cells, gene_filter=EXTERNAL, **terms),
            "uceindex_version": uceindex.__version__,
        }
        result = DatasetResult(dataset_id, None, "ingested", n_cells=len(obs))
        result.embedding_source = embedding_source
        with ingest_lock(store.uri, dataset_id, None):
            _write_dataset(
                store,
                record,
                cols,
                chunks,
                chunk_cells,
                replace=replace,
                progress=None,
                result=result,
            )
            _labels_of(store, result)
        return result.as_dict()


# -- files ---------------------------------------------------------------------------------------

Rows = Callable[[int, int], Any]  # (start, stop) -> what `finish` makes (embeddings, reasons) of


@dataclass
class _Embeddings:
    """Where the embeddings of a file come from (the model, or an obsm matrix), checked."""

    rows: Rows  # a row range read (and, for the model, sampled): CPU work, run ahead
    settings: dict  # what a resume must match
    record: dict  # their `datasets` columns: genes, model, width, source, seed
    genes: dict | None = None  # the gene match summary, when the model embeds
    finish: Finish = _as_is  # rows -> unit rows and reject reasons (the model, in one thread)


@dataclass
class _Plan:
    """A file checked and ready to write: its datasets record and how to make its chunks."""

    record: dict
    obs: ObsColumns
    chunks: Callable[[int, int], Chunk]
    chunk_cells: int
    genes: dict | None
    finish: Finish = _as_is


def _infer_species(h5: H5AD) -> str | None:
    organism = None
    if "organism" in h5.file["obs"]:
        import anndata

        organism = anndata.io.read_elem(h5.file["obs"]["organism"])
    return species_of(h5.uns_dict("uce"), organism)


def _read(fn, what: str, path: Path):
    """Run a read of the file, turning an HDF5 failure into one clear error."""
    try:
        return fn()
    except UceIndexError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise InputDataError(
            f"cannot read {what} of {path.name} ({type(exc).__name__}: {str(exc)[:100]}): "
            "is the file complete?"
        ) from None


def _plan_uce(
    h5: H5AD,
    species: str,
    embedder,
    *,
    layer: str | None,
    min_genes: int,
    min_share: float,
    seed: int,
    chunk_cells: int,
    gene_filter: GeneFilter,
) -> _Embeddings:
    """The model embeds the file's raw counts: they are found, and its genes matched (and,
    with the reference's gene filter, counted over the whole file first)."""
    model = embedder.model
    source = h5.find_counts(layer)

    def rows(start: int, stop: int):
        return _read(lambda: source.matrix.rows(start, stop), f"rows {start}-{stop}", h5.path)

    plan = plan_counts(
        source,
        rows,
        model.vocab(species),
        species,
        min_share=min_share,
        gene_filter=gene_filter,
        chunk_cells=chunk_cells,
    )
    match = plan.match

    def embed_rows(start: int, stop: int):
        counts = sp.csr_matrix(rows(start, stop), dtype=np.float64)
        check_chunk(counts, source.name)
        return embedder.prepare(counts, match, seed=seed, min_genes=min_genes)

    settings = {
        "chunk_cells": chunk_cells,
        "counts_from": source.name,
        "gene_filter": gene_filter.value,
        "genes_from": plan.genes_from,
        "min_genes": min_genes,
        "min_share": min_share,
        "mode": embedder.mode,
        "precision": embedder.precision,
        VOCABULARY: model.vocabulary_fingerprint(species),
    }
    record = {
        "n_genes": int(source.matrix.shape[1]),
        "genes_matched": int(match.n_matched_columns),
        "model_name": model.name,
        "model_fingerprint": model.fingerprint,
        "legacy_fingerprint": model.legacy_fingerprint,
        "model_dir": str(model.files.root.resolve()),
        "embedding_dim": int(model.config.output_dim),
        "embedding_source": "uce",
        "seed": int(seed),
    }
    return _Embeddings(embed_rows, settings, record, match.summary(), embedder.embed_prepared)


def _plan_obsm(h5: H5AD, key: str, model, *, chunk_cells: int) -> _Embeddings:
    """obsm[key] is stored as it is, checked and L2-normalised; `model`, when given, names it."""
    matrix = h5.obsm(key)
    n, dim = matrix.shape
    if n != h5.n_obs:
        raise InputDataError(f"obsm[{key!r}] has {n} rows for {h5.n_obs} cells")
    uce = h5.uns_dict("uce") or {}
    if model is not None:
        if dim != model.config.output_dim:
            raise InputDataError(
                f"obsm[{key!r}] is {dim}-d but model {model.name} makes "
                f"{model.config.output_dim}-d embeddings: is it the right key and model?"
            )
        name, fingerprint = model.name, model.fingerprint
    elif uce.get("fingerprint") and uce.get("model") and key == "X_uce":
        name, fingerprint = str(uce["model"]), str(uce["fingerprint"])  # `uceindex embed` output
    else:
        name = fingerprint = f"obsm:{key}"
    made_by = (
        uce.get(VOCABULARY) if key == "X_uce" and fingerprint == uce.get("fingerprint") else None
    )
    known = _obs_reasons(h5) if key == "X_uce" else None
    where = f"obsm[{key!r}]"

    def read_rows(start: int, stop: int):
        block = _read(lambda: matrix.rows(start, stop), f"rows {start}-{stop} of {where}", h5.path)
        emb, reasons = normalise(block, where)
        if known is not None:
            given = known(start, stop)
            reasons = np.where((reasons != None) & pd.notna(given), given, reasons)  # noqa: E711
        return emb, reasons

    settings = {"chunk_cells": chunk_cells, "embedding_key": key, "gene_filter": EXTERNAL}
    if made_by:
        settings[VOCABULARY] = str(made_by)
    record = {
        "n_genes": None,
        "genes_matched": None,
        "model_name": name,
        "model_fingerprint": fingerprint,
        "legacy_fingerprint": model.legacy_fingerprint if model is not None else None,
        "model_dir": str(model.files.root.resolve()) if model is not None else None,
        "embedding_dim": int(dim),
        "embedding_source": f"obsm:{key}",
        "seed": int(uce["seed"]) if str(uce.get("seed", "")).isdigit() else None,
    }
    return _Embeddings(read_rows, settings, record)


def _obs_reasons(h5: H5AD):
    """The reject reasons `uceindex embed` wrote in obs['uce_reject_reason'], chunk by chunk."""
    node = h5.file["obs"].get("uce_reject_reason")
    if node is None or "codes" not in node:
        return None
    categories = np.asarray(node["categories"].asstr()[:], dtype=object)

    def given(start: int, stop: int) -> np.ndarray:
        codes = node["codes"][start:stop].astype(np.int64)
        out = np.full(len(codes), None, dtype=object)
        out[codes >= 0] = categories[codes[codes >= 0]]
        return out

    return given


def plan_file(
    h5: H5AD,
    dataset_id: str,
    species: str | None,
    *,
    embedding_key: str | None,
    model,
    embedder,
    layer: str | None,
    min_genes: int,
    min_share: float,
    seed: int,
    chunk_cells: int | None,
    gene_filter: GeneFilter,
    label_map: dict | None = None,
) -> _Plan:
    """Every check a file can fail before anything is written, and its plan."""
    if h5.n_obs == 0:
        raise InputDataError(f"{h5.path.name} holds no cells")
    species = species or _infer_species(h5)
    if species is None:
        raise InputDataError(
            f"which species are the cells of {h5.path.name}? pass --species (e.g. human, mouse)"
        )
    if embedding_key is None:
        chunk_cells = chunk_cells or CHUNK_CELLS_UCE
        source = _plan_uce(
            h5,
            species,
            embedder,
            layer=layer,
            min_genes=min_genes,
            min_share=min_share,
            seed=seed,
            chunk_cells=chunk_cells,
            gene_filter=gene_filter,
        )
    else:
        if model is not None:
            model.vocab(species)
        elif species not in TRAINING_SPECIES and not re.match(r"^[a-z][a-z0-9_]*$", species):
            raise UnknownSpeciesError(f"unknown species {species!r}: use e.g. human, mouse")
        chunk_cells = chunk_cells or CHUNK_CELLS_OBSM
        source = _plan_obsm(h5, embedding_key, model, chunk_cells=chunk_cells)
    duplicates = _read(h5.duplicate_obs_names, "obs names", h5.path)
    if duplicates:
        raise InputDataError(
            f"obs names of {h5.path.name} are not unique (e.g. {', '.join(duplicates[:3])}); "
            "cell ids must be: run adata.obs_names_make_unique() and write the file again"
        )
    cols = _read(lambda: h5.obs_columns(_reserved()), "obs", h5.path)

    def chunks(start: int, stop: int) -> Chunk:
        names = _read(lambda: h5.obs_names(start, stop), "obs names", h5.path)
        frame = _read(lambda: h5.obs_chunk(start, stop), "obs", h5.path)
        return names, frame, source.rows(start, stop)

    chunks, terms = _with_terms(cols, chunks, label_map)
    record = {
        **source.record,
        "dataset_id": dataset_id,
        "source_path": str(h5.path.resolve()),
        "species": species,
        "n_cells": int(h5.n_obs),
        "settings": _settings(cols, **source.settings, **terms),
        "uceindex_version": uceindex.__version__,
    }
    return _Plan(record, cols, chunks, chunk_cells, source.genes, source.finish)


def ingest(
    paths: str | os.PathLike | list,
    species: str | None = None,
    store: Store | str | os.PathLike | None = None,
    model_dir: str | os.PathLike | None = None,
    *,
    model=None,
    embedding_key: str | None = None,
    dataset_id: str | None = None,
    replace: bool = False,
    seed: int = 0,
    layer: str | None = None,
    min_genes: int = MIN_GENES,
    min_share: float = MIN_MATCHED_SHARE,
    chunk_cells: int | None = None,
    device: str | None = None,
    precision: str = DEFAULT_PRECISION,
    mode: str = DEFAULT_MODE,
    gene_filter: str | GeneFilter = GeneFilter.PER_CELL,
    threads: int | None = None,
    progress: Progress | None = None,
    storage_options: dict | None = None,
    write_chunks: WriteChunks | None = None,
    label_map=None,
) -> IngestReport:
    """Ingest .h5ad files into a store (created if missing), one data set per file.

    Without `embedding_key` the model embeds raw counts (found in X, layers['counts'] or
    raw.X); with it, obsm[embedding_key] is stored as is (checked, L2-normalised) and the
    model is only used, when given, to name the embeddings' model. The data set id is the
    file name without .h5ad unless `dataset_id` (one file only). A file already complete in
    the store is skipped (same bytes) unless `replace`; an interrupted ingest of the same
    file and settings resumes where it stopped. Files are done in order; the first refused
    file raises (its rows are removed; earlier files stay). `threads` threads (default
    `pipeline.default_threads()`, 0 for none) read and sample chunks ahead of the model.
    storage_options: for a store on object storage, as `Store.open` takes them.
    `write_chunks` writes the chunks elsewhere (`uceindex.scale.ingest_on_ray`).

    `gene_filter="reference"` drops the genes detected in fewer than 10 cells of each file
    before embedding it, as the official pipeline does (recorded in the data set's settings;
    pre-embedded data sets record "external").

    Cells with a `cell_type` label (or CELLxGENE's `cell_type_ontology_term_id`) get the
    Cell Ontology columns (docs/ontology.md); `label_map` (a CSV path or a dict label -> CL
    id) maps labels the built-in steps do not."""
    gene_filter = gene_filter_of(gene_filter)
    label_map = label_map_of(label_map)
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise InputDataError("no files to ingest")
    if dataset_id is not None and len(paths) > 1:
        raise InputDataError("--dataset-id names one file; ingest several files without it")
    ids = [check_dataset_id(dataset_id or default_dataset_id(p)) for p in paths]
    if len(set(ids)) < len(ids):
        raise InputDataError(f"two files would get the same dataset id ({ids}): rename one")
    embedder = None
    if model is None and (embedding_key is None or model_dir is not None):
        from uceindex.model.load import UCEModel

        model = UCEModel(model_dir)
    if embedding_key is None:
        from uceindex.embedding import Embedder

        embedder = Embedder(model, device=device, precision=precision, mode=mode)
    if threads is None:  # pre-embedded rows: one thread reads the next chunk while this one writes
        threads = default_threads() if embedding_key is None else 1
    report = IngestReport(store="", model=None)
    with ExitStack() as stack:
        opened: Store | None = None
        for path, ds_id in zip(paths, ids):
            path = Path(path)
            with H5AD(path) as h5:
                try:
                    plan = plan_file(
                        h5,
                        ds_id,
                        species,
                        embedding_key=embedding_key,
                        model=model,
                        embedder=embedder,
                        layer=layer,
                        min_genes=min_genes,
                        min_share=min_share,
                        seed=seed,
                        chunk_cells=chunk_cells,
                        gene_filter=gene_filter,
                        label_map=label_map,
                    )
                    if opened is None:  # created only once a file is known to be usable
                        opened = stack.enter_context(
                            Store.using(store, create=True, storage_options=storage_options)
                        )
                    with ingest_lock(opened.uri, ds_id, str(path.resolve())):
                        if progress:
                            progress(0, h5.n_obs, f"{ds_id}: hashing")
                        plan.record["content_hash"] = file_hash(path)
                        result = DatasetResult(ds_id, str(path), "ingested", n_cells=h5.n_obs)
                        result.embedding_source = plan.record["embedding_source"]
                        result.genes = plan.genes
                        _write_dataset(
                            opened,
                            plan.record,
                            plan.obs,
                            plan.chunks,
                            plan.chunk_cells,
                            finish=plan.finish,
                            threads=threads,
                            replace=replace,
                            progress=progress,
                            result=result,
                            write_chunks=write_chunks,
                        )
                        _labels_of(opened, result)
                except UceIndexError as exc:
                    raise type(exc)(f"{path.name}: {exc}") from None
            report.datasets.append(result)
        report.store = opened.uri
        report.model = opened.model_info()
    return report
