"""The Cell Ontology, offline: the copy cellxgene-ontology-guide ships inside its wheel.

One `CellOntology` per process (`cell_ontology()`): term labels, ancestor sets, whether a
term is obsolete and what replaced it, and the indexes of labels and synonyms that mapping
a free-text label needs. Every output that names a term names `version` with it.
"""

from __future__ import annotations

import re
from functools import cache, cached_property
from importlib.metadata import version as package_version

PACKAGE = "cellxgene-ontology-guide"
SPELLED = re.compile(r"^cl[:_](\d{7})$", re.IGNORECASE)  # CL:0000576, cl:0000576, CL_0000576


def canonical_id(text) -> str:
    """A CL id as the ontology writes it: 'cl_0000576' and ' CL:0000576 ' as 'CL:0000576';
    anything else unchanged (but stripped)."""
    text = str(text).strip()
    return SPELLED.sub(r"CL:\1", text)


def normalised(text: str) -> str:
    """A label's comparable form: lower case, '_' as a space, 'CD14+' as 'cd14-positive',
    'CD4-' as 'cd4-negative', a plural last word as singular ('monocytes' as 'monocyte'), runs
    of spaces as one. Labels and synonyms of the ontology are compared in the same form."""
    text = str(text).strip().lower().replace("_", " ")
    text = re.sub(r"(?<=[a-z0-9])\+(?=$|[\s/,])", "-positive", text)
    text = re.sub(r"(?<=\d)-(?=$|[\s/,])", "-negative", text)
    text = re.sub(r"\bcells\b", "cell", text)
    text = re.sub(r"(?<=[a-z]{3})(?<![su])s$", "", text.strip())
    return re.sub(r"\s+", " ", text).strip()


class CellOntology:
    """The CL terms of the installed cellxgene-ontology-guide, read without network."""

    def __init__(self):
        from cellxgene_ontology_guide.ontology_parser import OntologyParser

        self._parser = OntologyParser()
        self._terms: dict = self._parser.cxg_schema.ontology("CL")
        info = self._parser.cxg_schema.supported_ontologies["CL"]
        self.version = f"CL {info['version']} ({PACKAGE} {package_version(PACKAGE)})"

    def knows(self, term_id: str) -> bool:
        return term_id in self._terms

    def is_obsolete(self, term_id: str) -> bool:
        return self._parser.is_term_deprecated(term_id)

    def replacement(self, term_id: str) -> str | None:
        """The current CL term that replaced an obsolete one, if the ontology names one."""
        new = self._parser.get_term_replacement(term_id)
        return new if new and self.knows(new) and not self.is_obsolete(new) else None

    def label(self, term_id: str) -> str:
        return self._parser.get_term_label(term_id)

    @cache  # noqa: B019 (one ontology per process)
    def ancestors(self, term_id: str) -> frozenset[str]:
        """The term and all its ancestors (is_a and part_of, as the package computes them)."""
        return frozenset(self._parser.get_term_ancestors(term_id, include_self=True))

    @cache  # noqa: B019
    def parents(self, term_id: str) -> frozenset[str]:
        """The term's direct parents (is_a and part_of)."""
        return frozenset(self._parser.get_term_parents(term_id))

    def resolve(self, text: str) -> str | None:
        """A term from a CL id or a current term's exact label; None if neither."""
        text = str(text).strip()
        if self.knows(text):
            return text
        term = self._parser.get_term_id_by_label(text, "CL")
        return term if term and not self.is_obsolete(term) else None

    def check(self, term_id: str, where: str) -> tuple[str | None, str]:
        """A given term id as a usable one: (term, note), or (None, reason) when it is not
        a current CL term. An obsolete term with a replacement becomes the replacement."""
        term_id = canonical_id(term_id)
        if not self.knows(term_id):
            return None, f"unknown CL id {term_id} in {where}"
        if self.is_obsolete(term_id):
            new = self.replacement(term_id)
            if new is None:
                return None, f"obsolete CL id {term_id} in {where}, with no replacement"
            return new, f"{where} (obsolete {term_id} replaced by {new})"
        return term_id, where

    @cached_property
    def _current(self) -> list[str]:
        return [t for t, v in self._terms.items() if not v.get("deprecated")]

    @cached_property
    def by_label(self) -> dict[str, str]:
        """Exact label -> current term."""
        return {self._terms[t]["label"]: t for t in self._current}

    @cached_property
    def by_synonym(self) -> dict[str, set[str]]:
        """Exact synonym -> the current terms that list it (one synonym can name several)."""
        out: dict[str, set[str]] = {}
        for t in self._current:
            for synonym in self._parser.get_term_synonyms(t):
                out.setdefault(synonym, set()).add(t)
        return out

    @cached_property
    def by_normalised(self) -> dict[str, set[str]]:
        """Normalised label or synonym -> the current terms it could name."""
        out: dict[str, set[str]] = {}
        for label, t in self.by_label.items():
            out.setdefault(normalised(label), set()).add(t)
        for synonym, terms in self.by_synonym.items():
            out.setdefault(normalised(synonym), set()).update(terms)
        return out


@cache
def cell_ontology() -> CellOntology:
    """The process's Cell Ontology (loaded on first use, ~0.1 s)."""
    return CellOntology()
