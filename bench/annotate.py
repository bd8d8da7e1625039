"""Annotation accuracy on the shipped PBMCs: uceindex beside scikit-learn's k-NN classifier.

    python bench/annotate.py [--quick] [--json PATH]

`data/pbmc700.h5ad` (700 PBMCs, 10 cell types, one donor: no donor or batch column) on its
own `obsm["X_pca"]` (50-d). Each part of a split is annotated from the other parts: by
uceindex (`annotate` over a store written by `ingest_embeddings`, exact search below
20,000 cells, similarity-weighted vote) and by `KNeighborsClassifier(metric="cosine")`
(uniform weights) on the same vectors. Splits: 5 deterministic pseudo-batches (crc32 of
the cell name mod 5), and the cell-cycle phase (G1 against S+G2M, a real covariate of the
file). Reports accuracy and macro-F1 per split and k, and the seconds each took (uceindex:
ingest + annotate; scikit-learn: fit + predict). tests/test_annotate.py asserts the k = 15
row: uceindex within 0.02 accuracy and 0.03 macro-F1 of scikit-learn. No model, no GPU.

Then the Cell Ontology view of the same splits (docs/ontology.md): the labels mapped to CL
terms at ingest, the plain vote's label read as its term, beside `annotate(ontology=True)`'s
call (min score 0.5), scored by exact accuracy, accuracy up to the parent and hierarchical
F1 (uceindex.ontology.metrics), with the share of cells the ontology call names a term for.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # uceindex without an install
from _common import (  # noqa: E402
    base_parser,
    command_line,
    machine,
    machine_line,
    print_table,
    timer,
    utc_now,
    write_json,
)

# -- settings --------------------------------------------------------------------------------
DATA = Path(__file__).resolve().parents[1] / "data" / "pbmc700.h5ad"
EMBEDDING_KEY = "X_pca"
LABEL = "cell_type"
KS = (5, 15, 30)  # neighbours per query cell
QUICK_KS = (15,)
PSEUDO_BATCHES = 5


def read_pbmc():
    import anndata as ad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ad.read_h5ad(DATA)


def splits(adata) -> dict[str, np.ndarray]:
    """Split name -> the part of each cell (an int per cell)."""
    names = adata.obs_names
    return {
        f"{PSEUDO_BATCHES} pseudo-batches": np.array(
            [zlib.crc32(n.encode()) % PSEUDO_BATCHES for n in names]
        ),
        "phase G1 | S+G2M": (adata.obs["phase"] != "G1").to_numpy().astype(int),
    }


def scores(truth: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """(accuracy, macro-F1); a cell without a prediction counts as wrong."""
    from sklearn.metrics import accuracy_score, f1_score

    pred = np.asarray(pred, dtype=object)
    pred = np.where(pd.isna(pred), "(none)", pred)
    return accuracy_score(truth, pred), f1_score(truth, pred, average="macro", zero_division=0)


def term_scores(truth: np.ndarray, pred: np.ndarray) -> dict:
    """Exact, up-to-parent and hierarchical-F1 scores of predicted CL terms."""
    from uceindex.ontology import cell_ontology, exact_accuracy, hierarchical_f1, parent_accuracy

    o = cell_ontology()
    return {
        "exact": exact_accuracy(pred, truth),
        "parent": parent_accuracy(pred, truth, o.parents),
        "hf1": hierarchical_f1(pred, truth, o.ancestors)["f1"],
    }


def compare(adata, part: np.ndarray, k: int, workdir: Path) -> dict:
    """Annotate each part from the others, both ways; their scores and seconds. One store
    per part under `workdir`, a new folder."""
    from sklearn.neighbors import KNeighborsClassifier

    from uceindex import annotate
    from uceindex.ingestion import ingest_embeddings
    from uceindex.ontology import LabelMapper

    mapper = LabelMapper()

    x = adata.obsm[EMBEDDING_KEY].astype(np.float32)
    truth = adata.obs[LABEL].astype(str).to_numpy()
    ours = np.empty(len(truth), dtype=object)
    theirs = np.empty(len(truth), dtype=object)
    term_plain = np.empty(len(truth), dtype=object)
    term_onto = np.empty(len(truth), dtype=object)
    ours_s = theirs_s = onto_s = 0.0
    for p in np.unique(part):
        held, rest = part == p, part != p
        uri = workdir / f"part{p}"
        with timer() as t:
            obs = adata.obs.loc[rest, [LABEL]].astype(str)
            ingest_embeddings(uri, "rest", obs, x[rest], "human", "pca", "pca-50")
            ours[held] = annotate(uri, x[held], k=k, novelty=False)["predicted"].to_numpy()
        ours_s += t.seconds
        with timer() as t:
            frame = annotate(uri, x[held], k=k, novelty=False, ontology=True)
        onto_s += t.seconds
        term_onto[held] = frame["predicted_term_id"].to_numpy()
        term_plain[held] = [mapper.map(label).term for label in frame["predicted"]]
        with timer() as t:
            clf = KNeighborsClassifier(n_neighbors=k, metric="cosine").fit(x[rest], truth[rest])
            theirs[held] = clf.predict(x[held])
        theirs_s += t.seconds
    (acc, f1), (sk_acc, sk_f1) = scores(truth, ours), scores(truth, theirs)
    true_terms = np.asarray([mapper.map(label).term for label in truth], dtype=object)
    plain = term_scores(true_terms, term_plain)
    onto = term_scores(true_terms, term_onto)
    return {
        "k": k,
        "parts": len(np.unique(part)),
        "uceindex_accuracy": acc,
        "uceindex_macro_f1": f1,
        "sklearn_accuracy": sk_acc,
        "sklearn_macro_f1": sk_f1,
        "uceindex_s": ours_s,
        "sklearn_s": theirs_s,
        **{f"plain_{name}": v for name, v in plain.items()},
        **{f"ontology_{name}": v for name, v in onto.items()},
        "ontology_called": float(np.mean([t is not None for t in term_onto])),
        "ontology_s": onto_s,
    }


def main() -> None:
    args = base_parser(__doc__).parse_args()
    ks = QUICK_KS if args.quick else KS
    result = {"benchmark": "annotate", "command": command_line(), "date": utc_now()}
    result["machine"], result["quick"] = machine(), args.quick
    print(f"{result['date']}  {machine_line(result['machine'])}")
    import lancedb  # noqa: F401  (imported before the clock runs: the first row would pay for it)
    import sklearn.neighbors  # noqa: F401

    adata = read_pbmc()
    result["cells"], result["embedding"] = adata.n_obs, EMBEDDING_KEY
    rows = []
    with tempfile.TemporaryDirectory(prefix="uceindex-bench-annotate-") as tmp:
        for i, (name, part) in enumerate(splits(adata).items()):
            for k in ks:
                row = {"split": name, **compare(adata, part, k, Path(tmp) / f"{i}-k{k}")}
                rows.append(row)
                print(f"  {name}, k={k}: done", flush=True)
    result["rows"] = rows
    print_table(
        f"pbmc700 {EMBEDDING_KEY}, accuracy / macro-F1: uceindex vs sklearn KNeighborsClassifier",
        ["split", "k", "uceindex", "sklearn", "uceindex s", "sklearn s"],
        [
            [
                r["split"],
                r["k"],
                f"{r['uceindex_accuracy']:.3f} / {r['uceindex_macro_f1']:.3f}",
                f"{r['sklearn_accuracy']:.3f} / {r['sklearn_macro_f1']:.3f}",
                f"{r['uceindex_s']:.2f}",
                f"{r['sklearn_s']:.3f}",
            ]
            for r in rows
        ],
    )
    print_table(
        "the same, as Cell Ontology terms: exact / up to the parent / hierarchical F1",
        ["split", "k", "plain vote", "--ontology", "called", "--ontology s"],
        [
            [
                r["split"],
                r["k"],
                f"{r['plain_exact']:.3f} / {r['plain_parent']:.3f} / {r['plain_hf1']:.3f}",
                f"{r['ontology_exact']:.3f} / {r['ontology_parent']:.3f} / {r['ontology_hf1']:.3f}",
                f"{r['ontology_called']:.3f}",
                f"{r['ontology_s']:.2f}",
            ]
            for r in rows
        ],
    )
    write_json(args.json, result)


if __name__ == "__main__":
    main()
