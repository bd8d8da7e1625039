"""Find the raw counts of an AnnData and check that they are counts.

UCE samples genes with probability log1p(count): normalised or log values silently give
another distribution (the reference even truncates them to int64), so they are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from uceindex.errors import InputDataError

SAMPLE_VALUES = 100_000  # stored values read to judge whether a matrix holds counts
SAMPLE_ROWS = 2_000  # rows those values come from


@dataclass(frozen=True)
class CountsSource:
    """Where the counts are: `matrix` (cells x genes, maybe backed) and the genes of its columns."""

    name: str  # "X", "layers['counts']" or "raw.X"
    matrix: object
    var: pd.DataFrame  # index = the column names


def _candidates(adata, layer: str | None):
    if layer is not None:
        if layer not in adata.layers:
            raise InputDataError(
                f"there is no layers[{layer!r}]; the file has layers {list(adata.layers) or 'none'}"
            )
        yield CountsSource(f"layers[{layer!r}]", adata.layers[layer], adata.var)
        return
    yield CountsSource("X", adata.X, adata.var)
    if "counts" in adata.layers:
        yield CountsSource("layers['counts']", adata.layers["counts"], adata.var)
    if adata.raw is not None:
        yield CountsSource("raw.X", adata.raw.X, adata.raw.var)


def sample_values(matrix, rows: int = SAMPLE_ROWS, limit: int = SAMPLE_VALUES) -> np.ndarray:
    """Stored values from evenly spread rows, read without loading the whole matrix."""
    n = matrix.shape[0]
    if n == 0:
        return np.zeros(0)
    picks = np.unique(np.linspace(0, n - 1, num=min(rows, n)).astype(np.int64))
    block = matrix[picks]
    if sp.issparse(block):
        values = block.data
    else:
        values = np.asarray(block).ravel()
        values = values[values != 0]
    return np.asarray(values[:limit], dtype=np.float64)


def check_values(values: np.ndarray, where: str) -> str | None:
    """None when `values` look like counts, else what is wrong with them. NaN/inf and
    negatives are fatal; fractions only mean this is not the counts matrix."""
    if values.size == 0:
        return None
    if not np.isfinite(values).all():
        raise InputDataError(
            f"{where} holds NaN or infinite values: fix or drop those cells before embedding"
        )
    if (values < 0).any():
        raise InputDataError(
            f"{where} holds negative values (e.g. {values[values < 0][0]:g}): UCE needs raw, non-negative counts"
        )
    frac = values[values != np.round(values)]
    if frac.size:
        return f"{where} holds non-integer values (e.g. {frac[0]:.4g})"
    return None


def find_counts(adata, layer: str | None = None) -> CountsSource:
    """The first of X, layers['counts'], raw.X whose sampled values are whole numbers."""
    problems = []
    for source in _candidates(adata, layer):
        problem = check_values(sample_values(source.matrix), source.name)
        if problem is None:
            return source
        problems.append(problem)
    others = [name for name in adata.layers if name != (layer or "counts")]
    raise no_counts(problems, layer, integer_layers(others, adata.layers.__getitem__))


def integer_layers(names: list[str], open_layer: Callable[[str], object]) -> list[str]:
    """Those of the layers `names` whose sampled values are whole non-negative numbers: where
    the counts are when they are not where uceindex looks."""
    found = []
    for name in names:
        try:
            values = sample_values(open_layer(name))
            if values.size and check_values(values, name) is None:
                found.append(name)
        except Exception:  # a layer that cannot be read or holds NaN holds no counts
            continue
    return found


def no_counts(problems: list[str], layer: str | None, integer: list[str]) -> InputDataError:
    """The one-line refusal when no counts were found, naming the integer layers if any."""
    looked = "X, layers['counts'] and raw.X" if layer is None else f"layers[{layer!r}]"
    text = f"no raw counts found ({'; '.join(problems)}); UCE needs raw UMI counts in {looked}"
    if integer:
        names = ", ".join(integer)
        return InputDataError(
            f"{text}; the layer(s) {names} hold whole numbers: pass --layer NAME "
            f"(e.g. --layer {integer[0]}) if they are the counts"
        )
    return InputDataError(f"{text}: store them there (e.g. adata.layers['counts']) and try again")


def check_chunk(chunk: sp.csr_matrix, where: str) -> None:
    """Every value of a chunk, as it streams past: NaN, inf, negatives and fractions are refused."""
    problem = check_values(np.asarray(chunk.data, dtype=np.float64), where)
    if problem is not None:
        raise InputDataError(f"{problem}: UCE needs raw UMI counts")
