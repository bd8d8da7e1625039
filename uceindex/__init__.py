"""uceindex: Universal Cell Embeddings for every cell, in a searchable atlas.

Names are imported on first use, so `import uceindex.errors` (or a CLI's --help) does not
pay for torch.
"""

import os
from importlib import import_module

# The cores this process may run on (CPU affinity, as `taskset` or a container sets it).
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

# Lance computes on all cores but two (kept for I/O): on a machine of 2-3 cores every
# search runs on one core. Searches here are compute-bound over cached pages: 1.5x the
# batch rate on 2 cores (BENCHMARKS.md, "Search"). A value the user set is kept; Lance
# reads it when it first computes, so it applies if uceindex is imported before that.
os.environ.setdefault("LANCE_CPU_THREADS", str(CORES))

__version__ = "0.1.0"

_EXPORTS = {
    # errors
    "UceIndexError": "uceindex.errors",
    "StoreDamagedError": "uceindex.errors",
    # the model and embedding cells
    "embed": "uceindex.embedding",
    "embed_file": "uceindex.embedding",
    "Embedder": "uceindex.embedding",
    "GeneFilter": "uceindex.io.genes",
    "UCEModel": "uceindex.model.load",
    "load_model": "uceindex.model.load",
    "download_model": "uceindex.model.download",
    "write_tiny_model": "uceindex.model.tiny",
    "add_species": "uceindex.species.register",
    "list_species": "uceindex.species.register",
    # the store and ingest
    "Store": "uceindex.store",
    "ingest": "uceindex.ingestion",
    "ingest_embeddings": "uceindex.ingestion",
    "ingest_on_ray": "uceindex.scale",
    "export_dataset": "uceindex.store.export",
    "export": "uceindex.store.export",
    "list_datasets": "uceindex.store.store",
    "list_versions": "uceindex.store.store",
    "tag_version": "uceindex.store.store",
    "check_store": "uceindex.store.check",
    "label_report": "uceindex.store.labels",
    # the Cell Ontology
    "cell_ontology": "uceindex.ontology",
    "LabelMapper": "uceindex.ontology",
    "label_map_of": "uceindex.ontology",
    "read_label_map": "uceindex.ontology",
    # search
    "annotate": "uceindex.search",
    "summarise": "uceindex.search",
    "similar": "uceindex.search",
    "match": "uceindex.search",
    "cell_map": "uceindex.search",
    "MatchResult": "uceindex.search",
    "write_output": "uceindex.search",
    "add_to_obs": "uceindex.search",
    "refresh_index": "uceindex.search",
    "index_stats": "uceindex.search",
    # the quality report
    "qc": "uceindex.quality",
    "plot_qc": "uceindex.quality",
    # sql and the service
    "SqlSession": "uceindex.sql",
    "Client": "uceindex.service.client",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'uceindex' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
