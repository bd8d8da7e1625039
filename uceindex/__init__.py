"""uceindex: Universal Cell Embeddings for every cell, in a searchable atlas.

Names are imported on first use, so `import uceindex.errors` (or a CLI's --help) does not
pay for torch.
"""

import os
from importlib import import_module

# Lance computes on all cores but two (kept for I/O), so on a machine of 2-4 cores every
# search runs on one core. Searches here are compute-bound over cached pages: 1.6x the
# batch rate on 2 cores (BENCHMARKS.md, "Search"). A value the user set is kept.
os.environ.setdefault("LANCE_CPU_THREADS", str(os.cpu_count() or 1))

__version__ = "0.1.0"

_EXPORTS = {
    "embed": "uceindex.embedding",
    "Embedder": "uceindex.embedding",
    "UCEModel": "uceindex.model.load",
    "load_model": "uceindex.model.load",
    "UceIndexError": "uceindex.errors",
    "Client": "uceindex.service.client",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'uceindex' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
