"""Free-text labels -> Cell Ontology terms, in a fixed order that never guesses.

For each cell: the CL id its obs already gives (`cell_type_ontology_term_id`, checked:
obsolete ids become their replacement, unknown ones stay unmapped); else the label through
the user's label map, the exact label of a current term, an exact synonym, the curated alias
table (aliases.csv, compared in normalised form), then the normalised form of a label or
synonym. The alias table comes before the normalised form because it is curated: "CD16+
Monocyte" normalises to a synonym of CL:0002397 but names non-classical monocytes in the
references that use it. A step that finds two terms does not choose between them. A label no step maps stays unmapped, with why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from uceindex.ontology.cell_ontology import CellOntology, cell_ontology, normalised
from uceindex.ontology.label_map import ALIASES, read_label_map

LABEL = "cell_type"  # the free-text label column mapped at ingest
TERM = "cell_type_ontology_term_id"  # CELLxGENE's name for the CL id of a cell
TERM_LABEL = "cell_type_ontology_label"  # the CL label of TERM
MAPPING = "cell_type_ontology_mapping"  # how TERM was found, or why there is none
TERM_COLUMNS = (TERM, TERM_LABEL, MAPPING)
MISSING = {"", "unknown", "na", "nan", "none", "null"}  # obs values that give no term
NO_TERM = "no CL term for this label"


@dataclass(frozen=True)
class Mapping:
    """A label's term (None when unmapped) and how it was found, or why not."""

    term: str | None
    how: str


def _missing(value) -> bool:
    """None, NaN, pd.NA, or a text that says "no value" (MISSING)."""
    if value is None or (not isinstance(value, str) and pd.isna(value) is True):
        return True
    return str(value).strip().lower() in MISSING


class LabelMapper:
    """Maps (label, given CL id) pairs, each distinct pair once."""

    def __init__(
        self, label_map: dict[str, str] | None = None, ontology: CellOntology | None = None
    ):
        self.ontology = ontology or cell_ontology()
        self.label_map = dict(label_map or {})
        self.aliases = {
            normalised(label): term
            for label, term in read_label_map(ALIASES, self.ontology).items()
        }
        self._seen: dict[tuple, Mapping] = {}

    def map(self, label, given=None) -> Mapping:
        key = (None if _missing(label) else str(label), None if _missing(given) else str(given))
        if key not in self._seen:
            self._seen[key] = self._map(*key)
        return self._seen[key]

    def _map(self, label: str | None, given: str | None) -> Mapping:
        if given is not None:
            return Mapping(*self.ontology.check(given, "obs"))
        if label is None:
            return Mapping(None, "no label")
        text = label.strip()
        if text in self.label_map:
            return Mapping(self.label_map[text], "label map")
        o = self.ontology
        if text in o.by_label:
            return Mapping(o.by_label[text], "label")
        synonym = o.by_synonym.get(text, set())
        if len(synonym) == 1:
            return Mapping(next(iter(synonym)), "synonym")
        if normalised(text) in self.aliases:  # curated: before the normalised form
            return Mapping(self.aliases[normalised(text)], "alias")
        close = o.by_normalised.get(normalised(text), set())
        if len(close) == 1:
            return Mapping(next(iter(close)), "normalised")
        ambiguous = synonym | close
        if ambiguous:
            return Mapping(None, "ambiguous: names " + ", ".join(sorted(ambiguous)))
        return Mapping(None, NO_TERM)

    def columns(self, labels, given=None) -> dict[str, np.ndarray]:
        """The three term columns (TERM_COLUMNS) for arrays of labels and given ids."""
        labels = pd.Series(np.asarray(labels, dtype=object))
        given = pd.Series(
            np.full(len(labels), None, dtype=object)
            if given is None
            else np.asarray(given, dtype=object)
        )
        pairs = pd.DataFrame({"label": labels, "given": given}).astype(object)
        pairs = pairs.where(pairs.notna(), None)
        codes, uniques = pd.factorize(pd.MultiIndex.from_frame(pairs))
        found = [self.map(label, term) for label, term in uniques]
        term = np.asarray([m.term for m in found] + [None], dtype=object)[codes]
        how = np.asarray([m.how for m in found] + [None], dtype=object)[codes]
        names = {t: self.ontology.label(t) for t in {m.term for m in found} if t}
        label_of = np.asarray([names.get(t) for t in term], dtype=object)
        return {TERM: term, TERM_LABEL: label_of, MAPPING: how}
