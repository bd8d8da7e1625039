"""The gene filter against the official pipeline: how close uceindex's embeddings come to the
reference's, per cell and with --gene-filter reference, beside the reference's own
resampling noise.

    python bench/gene_filter.py [--quick] [--json out.json] [--shapes tiny,4layer]

One synthetic human file (FILE_CELLS cells, FILE_GENES genes, rare to common), a model
directory in the official formats with random weights at each shape, and EMBED_CELLS of its
cells embedded four ways: the reference pipeline (scanpy's filters, its sampler, its
`TransformerModel`; tests/reference_code.py) with seeds 0 and 1, and uceindex (CPU, float32,
fast path) per cell and with the reference's gene filter, seed 0. Figures: mean per-cell
cosine of reference seed 0 against reference seed 1 (the noise), and of each uceindex mode
against reference seed 0.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from _common import (
    base_parser,
    command_line,
    machine,
    machine_line,
    print_table,
    timer,
    utc_now,
    write_json,
)

from tests.reference_code import OFFICIAL_4LAYER, human_like_counts, official_embeddings
from uceindex.embedding import Embedder
from uceindex.io.genes import GeneFilter, detected_cells, keep_detected, match_genes
from uceindex.model.load import UCEModel
from uceindex.model.tiny import write_tiny_model

# -- settings (full, quick) -----------------------------------------------------------------
FILE_CELLS = 200
FILE_GENES = 3_000
VOCAB_GENES = 2_700  # the first genes of the file have a token; the rest stay unmatched
EMBED_CELLS = {"tiny": (200, 100), "4layer": (32, 8)}
SHAPES = {"tiny": {}, "4layer": OFFICIAL_4LAYER}
SEEDS = (0, 1)  # reference seeds; uceindex uses the first
DATA_SEED = 0


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def ours(adata, model: UCEModel, names, gene_filter: GeneFilter, seed: int) -> np.ndarray:
    """uceindex's embeddings of cells `names`, the gene filter counted over the whole file
    (what `uceindex.embed` does for those rows)."""
    match = match_genes(adata.var, model.vocab("human"))
    if gene_filter is GeneFilter.REFERENCE:
        match = keep_detected(match, detected_cells([adata.X]))
    rows = adata.obs_names.get_indexer(names)
    emb, reasons = Embedder(model, device="cpu", precision="float32").embed_counts(
        adata.X[rows], match, seed=seed
    )
    assert (reasons == None).all(), "a compared cell was rejected"  # noqa: E711
    return emb


def measure(shape: str, n_cells: int, adata, workdir: Path) -> dict:
    genes = list(adata.var_names[:VOCAB_GENES])
    model_dir = write_tiny_model(workdir / shape, {"human": genes}, **SHAPES[shape])
    model = UCEModel(model_dir)
    kept = int((detected_cells([adata.X]) >= 10).sum())
    with timer() as t:
        names, refs = official_embeddings(adata, model, "human", seeds=SEEDS, n_cells=n_cells)
    refs = [refs[s] for s in SEEDS]
    with timer() as u:
        per_cell = ours(adata, model, names, GeneFilter.PER_CELL, SEEDS[0])
        filtered = ours(adata, model, names, GeneFilter.REFERENCE, SEEDS[0])
    return {
        "shape": shape,
        "cells": int(n_cells),
        "genes_kept_by_filter": kept,
        "reference_vs_reference": float(cosines(refs[0], refs[1]).mean()),
        "per_cell_vs_reference": float(cosines(per_cell, refs[0]).mean()),
        "gene_filter_reference_vs_reference": float(cosines(filtered, refs[0]).mean()),
        "reference_seconds": round(t.seconds, 1),
        "uceindex_seconds": round(u.seconds, 1),
    }


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--shapes", default="tiny,4layer")
    args = parser.parse_args()
    adata = human_like_counts(FILE_CELLS, FILE_GENES, seed=DATA_SEED)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes.split(","):
            n = EMBED_CELLS[shape][1 if args.quick else 0]
            results.append(measure(shape, n, adata, Path(tmp)))
    m = machine()
    print(machine_line(m))
    print_table(
        f"gene filter vs the official pipeline ({FILE_CELLS} cells x {FILE_GENES} genes, "
        "mean per-cell cosine)",
        ["shape", "cells", "genes kept", "ref s0 vs ref s1", "per-cell vs ref", "reference vs ref"],
        [
            [
                r["shape"],
                r["cells"],
                f"{r['genes_kept_by_filter']:,}",
                f"{r['reference_vs_reference']:.4f}",
                f"{r['per_cell_vs_reference']:.4f}",
                f"{r['gene_filter_reference_vs_reference']:.4f}",
            ]
            for r in results
        ],
    )
    write_json(
        args.json, {"command": command_line(), "date": utc_now(), "machine": m, "results": results}
    )


if __name__ == "__main__":
    main()
