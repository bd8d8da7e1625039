"""Embedding rows as the store keeps them: finite, non-zero, scaled to unit length.

Pure functions over numpy arrays, shared by ingest (which rejects bad rows with a reason) and
search (which skips them)."""

from __future__ import annotations

import numpy as np


def usable_rows(vectors: np.ndarray) -> np.ndarray:
    """(n,) bool: rows that are finite and not all zero (rejected cells carry NaN rows)."""
    v = np.asarray(vectors)
    finite = np.isfinite(v).all(axis=1)
    return finite & (np.abs(np.where(finite[:, None], v, 0)).sum(axis=1) > 0)


def unit_rows(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows scaled to unit L2 norm as float32, (n,) bool of the rows that could be); rows that
    are not `usable_rows` come back as zeros."""
    v = np.asarray(vectors, dtype=np.float32)
    ok = usable_rows(v)
    out = np.zeros_like(v)
    out[ok] = v[ok] / np.linalg.norm(v[ok], axis=1, keepdims=True)
    return out, ok
