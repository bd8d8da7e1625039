"""The Cell Ontology offline, labels mapped to CL terms, label map files."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest

from tests.conftest import read_pbmc
from uceindex.errors import InputDataError
from uceindex.ontology import (
    MAPPING,
    TERM,
    TERM_LABEL,
    LabelMapper,
    cell_ontology,
    normalised,
    read_label_map,
)
from uceindex.ontology.label_map import ALIASES

PBMC_TERMS = {  # the shipped pbmc700 labels and the CL terms they name
    "CD14+ Monocyte": "CL:0001054",
    "CD19+ B": "CL:0000236",
    "CD34+": "CL:0008001",
    "CD4+/CD25 T Reg": "CL:0000792",
    "CD4+/CD45RA+/CD25- Naive T": "CL:0000895",
    "CD4+/CD45RO+ Memory": "CL:0000897",
    "CD56+ NK": "CL:0000623",
    "CD8+ Cytotoxic T": "CL:0000794",
    "CD8+/CD45RA+ Naive Cytotoxic": "CL:0000900",
    "Dendritic": "CL:0000451",
}


@pytest.fixture(scope="module")
def mapper() -> LabelMapper:
    return LabelMapper()


def test_every_pbmc700_label_maps(mapper):
    labels = read_pbmc().obs["cell_type"].astype(str).to_numpy()
    assert set(labels) == set(PBMC_TERMS)
    cols = mapper.columns(labels)
    assert [PBMC_TERMS[label] for label in labels] == cols[TERM].tolist()
    assert cols[TERM_LABEL][labels == "CD14+ Monocyte"][0] == "CD14-positive monocyte"


@pytest.mark.parametrize(
    "label, term, how",
    [
        ("classical monocyte", "CL:0000860", "label"),  # exact label
        ("mucosal invariant T cell", "CL:0000940", "synonym"),
        ("Classical Monocytes", "CL:0000860", "normalised"),
        ("CD14+ monocytes", "CL:0001054", "alias"),
        ("B cells", "CL:0000236", "normalised"),
        ("CD16+ Monocyte", "CL:0000875", "alias"),
        ("CD8+ Cytotoxic T", "CL:0000794", "alias"),
        ("AT2", "CL:0002063", "alias"),
        ("Microglia", "CL:0000129", "alias"),
        ("Paneth", "CL:0000510", "alias"),
    ],
)
def test_mapping_order(mapper, label, term, how):
    assert (mapper.map(label).term, mapper.map(label).how) == (term, how)


@pytest.mark.parametrize("label", ["Monocyte-ish", "Stem", "cluster 7", "CD14+ Monocyt"])
def test_labels_that_do_not_map_stay_unmapped(mapper, label):
    found = mapper.map(label)
    assert found.term is None and found.how == "no CL term for this label"


def test_missing_label(mapper):
    assert mapper.map(None).how == "no label" and mapper.map(np.nan).term is None
    assert mapper.map(pd.NA).how == "no label" and mapper.map("unknown").how == "no label"


def test_obs_term_id_wins_and_is_checked(mapper):
    # a CELLxGENE-style cell: its own id is taken even when the label says otherwise
    assert mapper.map("CD14+ Monocyte", "CL:0000576").term == "CL:0000576"
    obsolete = mapper.map("x", "CL:0000003")  # obsolete "native cell", replaced by "cell"
    assert (
        obsolete.term == "CL:0000000"
        and "obsolete CL:0000003 replaced by CL:0000000" in obsolete.how
    )
    gone = mapper.map("x", "CL:0000002")  # obsolete, replaced outside CL only
    assert gone.term is None and "obsolete CL id CL:0000002" in gone.how
    unknown = mapper.map("CD14+ Monocyte", "CL:9999999")
    assert unknown.term is None and unknown.how == "unknown CL id CL:9999999 in obs"
    assert mapper.map("Dendritic", "unknown").term == "CL:0000451"  # no id given: the label


def test_columns_over_given_ids(mapper):
    cols = mapper.columns(["x", "y", None], ["CL:0000236", None, "CL:9999999"])
    assert cols[TERM].tolist() == ["CL:0000236", None, None]
    assert cols[MAPPING].tolist() == [
        "obs",
        "no CL term for this label",
        "unknown CL id CL:9999999 in obs",
    ]


def test_label_map_file(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("label,term_id,comment\nCluster 7,CL:0000576,monocytes by markers\n")
    label_map = read_label_map(path, cell_ontology())
    assert label_map == {"Cluster 7": "CL:0000576"}
    found = LabelMapper(label_map).map("Cluster 7")
    assert (found.term, found.how) == ("CL:0000576", "label map")


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "label,term_id\nA,CL:9999999\n",
            "labels.csv line 2: CL:9999999 is not a Cell Ontology id",
        ),
        ("label,term_id\nA,monocyte\n", "labels.csv line 2: monocyte is not a Cell Ontology id"),
        (
            "label,term_id\nA,CL:0000576\nB,CL:0000236\nA,CL:0000236\n",
            "labels.csv line 4: label 'A' is mapped twice, to CL:0000576 and CL:0000236",
        ),
        ("label,term\nA,CL:0000576\n", "has no term_id column"),
        ("label,term_id\nA,\n", "labels.csv line 2: both label and term_id must be given"),
        (
            "label,term_id\nA,CL:0000003\n",
            "CL:0000003 is an obsolete CL term; use its replacement CL:0000000 (cell)",
        ),
    ],
)
def test_label_map_errors(tmp_path, text, message):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(
        InputDataError, match=message.replace("(", r"\(").replace(")", r"\)")
    ) as err:
        read_label_map(path, cell_ontology())
    assert "\n" not in str(err.value)


def test_same_label_twice_with_one_term_is_fine(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("label,term_id\nA,CL:0000576\nA,CL:0000576\n")
    assert read_label_map(path, cell_ontology()) == {"A": "CL:0000576"}


def test_alias_table_is_current_and_unambiguous(mapper):
    o = cell_ontology()
    with open(ALIASES, newline="") as f:
        rows = list(csv.DictReader(f))
    keys: dict[str, str] = {}
    for row in rows:
        assert o.knows(row["term_id"]) and not o.is_obsolete(row["term_id"]), row
        assert o.label(row["term_id"]) == row["term_label"], row
        assert keys.setdefault(normalised(row["label"]), row["term_id"]) == row["term_id"], row
        # each alias is needed: no earlier step maps it already
        assert mapper.map(row["label"]).how == "alias", row


def test_version_is_named():
    assert (
        cell_ontology().version.startswith("CL v")
        and "cellxgene-ontology-guide" in cell_ontology().version
    )


def test_ancestors_include_the_term_and_the_root():
    anc = cell_ontology().ancestors("CL:0001054")
    assert {"CL:0001054", "CL:0000576", "CL:0000000"} <= anc


def test_cl_ids_spelled_otherwise(mapper, tmp_path):
    assert mapper.map("x", " cl_0000236 ").term == "CL:0000236"
    path = tmp_path / "labels.csv"
    path.write_text("label,term_id\nA,cl:0000576\n")
    assert read_label_map(path, cell_ontology()) == {"A": "CL:0000576"}


def test_a_form_two_terms_share_is_not_guessed(mapper):
    # CL v2026-03-26: two current terms normalise to "substantia nigra dopaminergic neuron"
    o = cell_ontology()
    shared = [(text, terms) for text, terms in o.by_normalised.items() if len(terms) > 1]
    if not shared:
        pytest.skip(f"no two terms of {o.version} share a normalised form")
    text, terms = shared[0]
    found = mapper.map(text.title() + "s")  # not an exact label or synonym any more
    assert found.term is None and found.how == "ambiguous: names " + ", ".join(sorted(terms))
