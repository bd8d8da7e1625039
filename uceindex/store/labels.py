"""The labels of a store and the Cell Ontology terms they map to: what `uceindex labels`
lists, and what ingest reports per data set.

Counts come from the term columns ingest writes (uceindex.ontology TERM_COLUMNS). With a
label map (or on a store ingested before those columns existed) the labels are mapped
again here, as an ingest with that map would; terms taken from the obs's own CL ids stay.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from uceindex.errors import QueryError
from uceindex.ontology import LABEL, MAPPING, TERM, TERM_LABEL, LabelMapper, cell_ontology
from uceindex.store.store import Store, sql_string

FROM_OBS = "obs"  # how a term taken from the obs's own CL id starts


def label_report(
    store: Store | str | None,
    dataset_id: str | None = None,
    *,
    label_map: dict[str, str] | None = None,
    storage_options: dict | None = None,
) -> dict | None:
    """Per (label, term) pair of the store's cells (one data set's with `dataset_id`): the
    cells, the term's CL label and how it was mapped; the unmapped labels with why; the CL
    version. None when the cells have no `cell_type` label and no CL id at all."""
    with Store.using(store, storage_options=storage_options) as st:
        columns = set(st.obs_columns())
        if dataset_id is not None and st.dataset(dataset_id) is None:
            have = ", ".join(st.datasets()["dataset_id"].astype(str)[:10]) or "none"
            raise QueryError(f"no data set {dataset_id!r} in the store (it has: {have})")
        if st.cells is None or not columns & {LABEL, TERM}:
            return None
        wanted = [c for c in (LABEL, TERM, TERM_LABEL, MAPPING) if c in columns]
        query = st.cells.search().select(wanted).limit(None)
        if dataset_id is not None:
            query = query.where(f"dataset_id = {sql_string(dataset_id)}")
        frame = _counts(query.to_batches(), wanted)
    for column in (LABEL, TERM, TERM_LABEL, MAPPING):
        if column not in frame:
            frame[column] = None
    if frame[[LABEL, TERM]].isna().all(axis=None):
        return None
    ontology = cell_ontology()
    if label_map or MAPPING not in wanted:  # map again, as an ingest would now
        mapper = LabelMapper(label_map, ontology)
        again = ~frame[MAPPING].fillna("").astype(str).str.startswith(FROM_OBS)
        terms = mapper.columns(frame.loc[again, LABEL].to_numpy(dtype=object))
        for column, values in terms.items():
            frame.loc[again, column] = values
    keys = [LABEL, TERM, TERM_LABEL, MAPPING]
    groups = (
        frame.astype(object)
        .where(frame.notna(), None)
        .groupby(keys, dropna=False, sort=False)["cells"]
        .sum()
        .reset_index()
        .sort_values(["cells", LABEL], ascending=[False, True], na_position="last")
    )
    rows = [
        {
            "label": _value(r[LABEL]),
            "term_id": _value(r[TERM]),
            "term_label": _value(r[TERM_LABEL]),
            "mapping": _value(r[MAPPING]),
            "cells": int(r["cells"]),
        }
        for _, r in groups.iterrows()
    ]
    unmapped = [
        {"label": r["label"], "reason": r["mapping"], "cells": r["cells"]}
        for r in rows
        if r["term_id"] is None
    ]
    n_unmapped = sum(r["cells"] for r in unmapped)
    n = int(frame["cells"].sum())
    return {
        "cell_ontology": ontology.version,
        "dataset_id": dataset_id,
        "cells": n,
        "mapped_cells": n - n_unmapped,
        "unmapped_cells": n_unmapped,
        "terms": int(frame[TERM].nunique()),
        "labels": rows,
        "unmapped": unmapped,
    }


def _counts(batches, columns: list[str]) -> pd.DataFrame:
    """Cells per distinct combination of `columns`, counted batch by batch (a store's labels
    are few; its cells may not fit in memory as text)."""
    parts = [
        batch_table.group_by(columns, use_threads=False).aggregate([([], "count_all")])
        for batch_table in (pa.Table.from_batches([b]) for b in batches)
        if batch_table.num_rows
    ]
    if not parts:
        return pd.DataFrame({**{c: [] for c in columns}, "cells": []})
    frame = pa.concat_tables(parts).to_pandas().rename(columns={"count_all": "cells"})
    frame = frame.astype({c: object for c in columns})
    frame = frame.where(frame.notna(), None)
    return frame.groupby(columns, dropna=False, sort=False)["cells"].sum().reset_index()


def _value(v):
    return None if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)
