"""The reference implementation (`uce-model` on PyPI), imported for comparisons.

Its `uce/__init__.py` imports scanpy and gdown, which a GPU machine may not have; the modules
compared against (`uce.model`, `uce.eval_data`) need neither, so they are imported here without
running the package's `__init__`."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def reference_module(name: str) -> types.ModuleType:
    """`uce.<name>` (e.g. "model", "eval_data") with `uce/__init__.py` left unrun."""
    if "uce" not in sys.modules:
        spec = importlib.util.find_spec("uce")  # finds the package without executing it
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("the reference package is not installed: pip install uce-model")
        package = types.ModuleType("uce")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["uce"] = package
    return importlib.import_module(f"uce.{name}")
