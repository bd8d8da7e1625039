"""Ingest on Ray: workers embed chunks and write Lance fragments, the driver commits them.

`ingest_on_ray(paths, ..., workers=N)` starts a local Ray (N CPUs, loopback only) or, with
`address`, joins a running cluster, and runs the ingest of `uceindex.ingestion.ingest` with
the chunks written elsewhere. The driver plans as one process does (`DatasetWriter.begin`:
the `datasets` row, the obs columns, the resume point); each chunk still to write goes to a
Ray task (one GPU each when the cluster has GPUs) that embeds it and writes its `cells` and
`rejects` rows as uncommitted fragment files (`lance.fragment.write_fragments`). The driver
commits them in chunk order, one step (a chunk per worker slot) at a time: the step's rejects
in one transaction, then its cells in one (the step's commit point, stamped with
`uceindex.dataset`/`uceindex.chunks` transaction properties). Rows carry the same
`ingest_chunk` stamps as a single-process ingest, so its resume rule holds unchanged: a kill
of the driver or of a worker at any moment costs the steps in flight, and the same command
ends with the rows of an uninterrupted run. Fragment files of a step never committed are
referenced by no version, so no reader sees them (Lance's
`cleanup_old_versions(delete_unverified=True)` removes them, when no writer is active).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator

import pyarrow as pa

from uceindex.errors import InputDataError, UceIndexError
from uceindex.ingestion import (
    IngestInterrupted,
    IngestReport,
    Progress,
    ingest,
    plan_file,
)
from uceindex.io.genes import MIN_GENES, MIN_MATCHED_SHARE, gene_filter_of
from uceindex.io.obs import chunk_table
from uceindex.io.stream import H5AD
from uceindex.ontology import label_map_of
from uceindex.store import options
from uceindex.store.store import Store, default_store_uri
from uceindex.store.writer import DatasetWriter, chunk_tables, maybe_die

RAY_KILL_ENV = "UCEINDEX_TEST_RAY_KILL_AT"  # tests: "<chunk>": its worker exits once it wrote
CONNECT_TIMEOUT_S = 2.0  # a cluster address that does not answer in this long is refused
# Ray's own waits for a cluster that does not answer add up to 13 minutes; joining, cut them.
_JOIN_ENV = {
    "RAY_gcs_server_port_wait_time_s": "1",
    "RAY_py_gcs_connect_timeout_s": "5",
    "RAY_gcs_rpc_server_connect_timeout_s": "5",
}


class ClusterError(UceIndexError):
    """Ray is missing, or the cluster to join does not answer."""


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ClusterError(
            "Ray is not installed: pip install 'uceindex[scale]' for --workers and --ray"
        ) from None
    return ray


def _check_address(address: str) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--ray {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ClusterError(
            f"no Ray cluster answers at {address} ({exc.strerror or type(exc).__name__}): "
            "start one there with `ray start --head --port PORT`, or use --workers N "
            "for a local one"
        ) from None


def connect(workers: int | None = None, address: str | None = None) -> bool:
    """Join the cluster at `address` or start a local Ray with `workers` CPUs; a Ray already
    started in this process is used as it is. True when this call started it."""
    if address is not None:
        _check_address(address)
        if "ray" not in sys.modules:  # Ray reads these when it is imported
            for name, value in _JOIN_ENV.items():
                os.environ.setdefault(name, value)
    ray = _import_ray()
    if ray.is_initialized():
        return False
    if address is not None:
        try:
            ray.init(address=address, log_to_driver=False)
        except ConnectionError as exc:
            raise ClusterError(f"cannot join the Ray cluster at {address}: {exc}") from None
    else:
        if not workers or workers < 1:
            raise InputDataError("--workers must be 1 or more")
        ray.init(
            num_cpus=workers,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
        )
    return True


# -- the workers --------------------------------------------------------------------------------

_cache: dict = {}  # in each worker process: loaded models, and the file last planned


def _worker_plan(job: dict, record: dict):
    key = tuple(record[k] for k in ("source_path", "dataset_id", "content_hash", "settings"))
    last = _cache.get("plan")
    if last is not None and last[0] == key:
        return last[1]
    if last is not None:
        last[2].close()  # one file open at a time: tasks come file after file
        del _cache["plan"]
    model = embedder = None
    if job["model_dir"] is not None:
        from uceindex.model.load import UCEModel

        model = _cache.get(job["model_dir"]) or UCEModel(job["model_dir"])
        _cache[job["model_dir"]] = model
    if job["embedding_key"] is None:
        from uceindex.embedding import Embedder

        settings = (job["model_dir"], job["device"], job["precision"], job["mode"])
        embedder = _cache.get(settings) or Embedder(
            model, device=job["device"], precision=job["precision"], mode=job["mode"]
        )
        _cache[settings] = embedder
    h5 = H5AD(record["source_path"])
    try:
        plan = plan_file(
            h5,
            record["dataset_id"],
            record["species"],
            embedding_key=job["embedding_key"],
            model=model,
            embedder=embedder,
            layer=job["layer"],
            min_genes=job["min_genes"],
            min_share=job["min_share"],
            seed=job["seed"],
            chunk_cells=job["chunk_cells"],
            gene_filter=gene_filter_of(job["gene_filter"]),
            label_map=job["label_map"],
        )
        if plan.record["settings"] != record["settings"]:
            raise InputDataError(
                f"{h5.path.name} reads differently on a worker than on the driver: "
                "is the same file (and model) at the same path on every machine?"
            )
    except BaseException:
        h5.close()
        raise
    _cache["plan"] = (key, plan, h5)
    return plan


def _full(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Every column of `schema`, nulls where the chunk has none (obs columns of other data sets)."""
    n = table.num_rows
    columns = [
        table.column(f.name) if f.name in table.column_names else pa.nulls(n, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def write_chunk(job: dict, record: dict, target: dict, k: int, start: int, stop: int) -> dict:
    """One Ray task: embed rows start..stop (chunk k) of a file and write its cells and rejects
    rows as uncommitted fragments. Returns {"cells": [...], "rejects": [...]} FragmentMetadata."""
    import lance

    plan = _worker_plan(job, record)
    names, frame, rows = plan.chunks(start, stop)
    embeddings, reasons = plan.finish(rows)
    schema = target["cells_schema"]
    arrays = chunk_table(frame, plan.obs, {f.name: f.type for f in schema})
    cells, rejects = chunk_tables(
        schema, record["dataset_id"], k, names, arrays, embeddings, reasons, record["species"]
    )
    out = {}
    for name, table in (("cells", cells), ("rejects", rejects)):
        if table is not None and name == "cells":
            table = _full(table, schema)
        out[name] = (
            []
            if table is None
            else lance.fragment.write_fragments(
                table,
                target[name],
                schema=table.schema,
                storage_options=job["storage_options"],
            )
        )
    if target["die_at"] == k:
        os._exit(3)
    return out


# -- the driver -----------------------------------------------------------------------------------


def _commit(uri: str, fragments: list, properties: dict, storage_options: dict | None) -> None:
    """One Append of `fragments`: all of their rows become visible at once, or none."""
    import lance
    from lance.dataset import Transaction

    if not fragments:
        return
    base = lance.dataset(uri, storage_options=storage_options)
    transaction = Transaction(
        read_version=base.version,
        operation=lance.LanceOperation.Append(fragments),
        transaction_properties=properties,
    )
    lance.LanceDataset.commit(uri, transaction, storage_options=storage_options)


def _failure(exc: BaseException, ray) -> BaseException:
    """A task's exception as the user sees it: a refused input as itself, else an interruption."""
    cause = getattr(exc, "cause", None)
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(cause, UceIndexError):
        return type(cause)(str(cause))
    return exc


class _RayChunks:
    """`ingestion.WriteChunks` on Ray: every chunk a task, committed in order, step by step."""

    def __init__(self, job: dict, gpus: int, slots: int):
        self.job, self.gpus, self.slots = job, gpus, slots

    def __call__(self, writer: DatasetWriter, ranges: list) -> Iterator[int]:
        ray = _import_ray()
        store = writer.store
        opts = self.job["storage_options"]
        cells, rejects = store.cells.to_lance(), store.rejects.to_lance()
        die = os.environ.get(RAY_KILL_ENV)
        target = {
            "cells": cells.uri,
            "rejects": rejects.uri,
            "cells_schema": cells.schema,
            "die_at": int(die) if die and die.lstrip("-").isdigit() else None,
        }
        task = ray.remote(write_chunk).options(
            num_cpus=0 if self.gpus else 1, num_gpus=1 if self.gpus else 0, max_retries=0
        )
        refs = [task.remote(self.job, writer.record, target, k, a, b) for k, a, b in ranges]
        dataset = writer.dataset_id
        try:
            for s in range(0, len(ranges), self.slots):
                step = ranges[s : s + self.slots]
                written = []
                for ref, (k, a, b) in zip(refs[s : s + self.slots], step):
                    try:
                        written.append(ray.get(ref))
                    except ray.exceptions.RayError as exc:
                        failure = _failure(exc, ray)
                        if isinstance(failure, UceIndexError):
                            raise failure from None
                        reason = str(exc).strip().splitlines()[0][:160]
                        raise IngestInterrupted(
                            f"the Ray task writing chunk {k} (rows {a}-{b}) of {dataset} failed "
                            f"({type(exc).__name__}: {reason}); chunks from {k} on are not "
                            "committed: run the same command again to resume"
                        ) from None
                first, last = step[0][0], step[-1][0]
                properties = {"uceindex.dataset": dataset, "uceindex.chunks": f"{first}-{last}"}
                _commit(
                    target["rejects"], [f for w in written for f in w["rejects"]], properties, opts
                )
                maybe_die("rejects", last)
                _commit(target["cells"], [f for w in written for f in w["cells"]], properties, opts)
                maybe_die("cells", last)
                yield step[-1][2]
        finally:
            for ref in refs:
                ray.cancel(ref)
            store.refresh()


def _worker_options(store, given: dict | None) -> dict | None:
    """The storage options every Lance call of a worker takes: the driver's, resolved once
    (short names, $UCEINDEX_STORAGE_OPTIONS, http endpoints, timeouts)."""
    if isinstance(store, Store):
        return store.storage_options or None
    return options.resolve(str(store or default_store_uri()), given) or None


def ingest_on_ray(
    paths,
    species: str | None = None,
    store: Store | str | os.PathLike | None = None,
    model_dir: str | os.PathLike | None = None,
    *,
    workers: int | None = None,
    address: str | None = None,
    storage_options: dict | None = None,
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
    precision: str = "auto",
    mode: str = "fast",
    gene_filter: str = "per-cell",
    progress: Progress | None = None,
    label_map=None,
) -> IngestReport:
    """`ingestion.ingest` with the chunks embedded and written by Ray workers: a local Ray of
    `workers` CPUs, or the cluster at `address` ("HOST:PORT"). Same rows, same `datasets`
    records, same resume; every machine must read the files and the model at the same paths
    and reach the store (`storage_options` go to every Lance call)."""
    if (workers is None) == (address is None):
        raise InputDataError("give either --workers N (a local Ray) or --ray HOST:PORT")
    started = connect(workers, address)
    ray = _import_ray()
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        slots = gpus or max(1, int(resources.get("CPU", 1)))
        if model is None and (embedding_key is None or model_dir is not None):
            from uceindex.model.load import UCEModel

            model = UCEModel(model_dir)
        device = device or ("cuda" if gpus else "cpu")
        if precision == "auto":  # resolved here: the driver plans on the CPU
            precision = "bfloat16" if device.startswith("cuda") and mode == "fast" else "float32"
        job = {
            "model_dir": None if model is None else str(model.files.root),
            "embedding_key": embedding_key,
            "layer": layer,
            "min_genes": min_genes,
            "min_share": min_share,
            "seed": seed,
            "chunk_cells": chunk_cells,
            "device": device,
            "precision": precision,
            "mode": mode,
            "gene_filter": str(gene_filter_of(gene_filter).value),
            "label_map": label_map_of(label_map),
            # resolved once here (short names, env, timeouts) for every Lance call of a worker
            "storage_options": _worker_options(store, storage_options),
        }
        # the driver's own store: `ingest` opens it (with its storage options)
        extra = {"storage_options": storage_options} if storage_options else {}
        return ingest(
            paths,
            species,
            store,
            model=model,
            embedding_key=embedding_key,
            dataset_id=dataset_id,
            replace=replace,
            seed=seed,
            layer=layer,
            min_genes=min_genes,
            min_share=min_share,
            chunk_cells=chunk_cells,
            device="cpu",
            precision=precision,
            mode=mode,
            gene_filter=gene_filter,
            label_map=job["label_map"],
            threads=0,
            progress=progress,
            write_chunks=_RayChunks(job, gpus, slots),
            **extra,
        )
    finally:
        if started:
            ray.shutdown()
