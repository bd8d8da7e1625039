"""The Cell Ontology (CL) offline, and free-text labels mapped to its terms.

    from uceindex.ontology import cell_ontology, LabelMapper, read_label_map

`cell_ontology` loads the CL copy shipped in cellxgene-ontology-guide (labels, ancestors,
obsolete terms); `mapping` turns labels into terms (`LabelMapper`), with the curated alias
table `aliases.csv`; `label_map` reads label map files; `metrics` scores predicted terms
against true ones, crediting an answer right at a coarser level. Pure: no torch, no store.
"""

from uceindex.ontology.cell_ontology import CellOntology, cell_ontology, normalised
from uceindex.ontology.label_map import label_map_of, read_label_map
from uceindex.ontology.mapping import (
    LABEL,
    MAPPING,
    TERM,
    TERM_COLUMNS,
    TERM_LABEL,
    LabelMapper,
    Mapping,
)
from uceindex.ontology.metrics import exact_accuracy, hierarchical_f1, parent_accuracy

__all__ = [
    "CellOntology",
    "cell_ontology",
    "normalised",
    "read_label_map",
    "label_map_of",
    "LabelMapper",
    "Mapping",
    "LABEL",
    "TERM",
    "TERM_LABEL",
    "MAPPING",
    "TERM_COLUMNS",
    "exact_accuracy",
    "parent_accuracy",
    "hierarchical_f1",
]
