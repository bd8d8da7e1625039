"""Label map files: a CSV of `label,term_id` rows that say which CL term a free-text label
names. The curated alias table shipped with uceindex (aliases.csv) is one; a user's
`--label-map labels.csv` is another, read by the same rules, each mistake one line."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

from uceindex.errors import InputDataError
from uceindex.ontology.cell_ontology import CellOntology, canonical_id, cell_ontology

COLUMNS = ("label", "term_id")
ALIASES = Path(__file__).with_name("aliases.csv")


def read_label_map(path, ontology: CellOntology) -> dict[str, str]:
    """label -> current CL term id, from a CSV with columns label and term_id (others are
    ignored). Refuses a missing column, an empty cell, an id that is not a current CL term
    (naming the replacement of an obsolete one), and a label given two different terms."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputDataError(
            f"cannot read the label map {path} ({exc.__class__.__name__})"
        ) from None
    rows = csv.DictReader(text.splitlines())
    missing = [c for c in COLUMNS if c not in (rows.fieldnames or [])]
    if missing:
        raise InputDataError(
            f"the label map {path.name} has no {' or '.join(missing)} column: "
            "its first line must be label,term_id"
        )
    out: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        label, term = (str(row[c] or "").strip() for c in COLUMNS)
        _add(out, label, term, ontology, f"{path.name} line {line}")
    return out


def label_map_of(value, ontology: CellOntology | None = None) -> dict[str, str]:
    """A label map given as a file path, a dict (checked by the same rules) or None."""
    if not value:
        return {}
    ontology = ontology or cell_ontology()
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for label, term in value.items():
            _add(out, str(label).strip(), str(term).strip(), ontology, f"label map entry {label!r}")
        return out
    return read_label_map(value, ontology)


def _add(out: dict[str, str], label: str, term: str, ontology: CellOntology, where: str) -> None:
    if not label or not term:
        raise InputDataError(f"{where}: both label and term_id must be given")
    term = canonical_id(term)
    if not ontology.knows(term):
        raise InputDataError(f"{where}: {term} is not a Cell Ontology id (e.g. CL:0000576)")
    if ontology.is_obsolete(term):
        new = ontology.replacement(term)
        raise InputDataError(
            f"{where}: {term} is an obsolete CL term; "
            + (
                f"use its replacement {new} ({ontology.label(new)})"
                if new
                else "pick a current one"
            )
        )
    if out.get(label, term) != term:
        raise InputDataError(
            f"{where}: label {label!r} is mapped twice, to {out[label]} and {term}: keep one"
        )
    out[label] = term
