"""`similar(cell_id, k[, filter])` and `similar_to_vector(vec, k[, filter])`: nearest cells
inside SQL.

They are table macros over Python functions that call `uceindex.search` (the store's vector
index when it has one, else an exact scan): DuckDB's own brute force over Lance reads every
vector through Arrow (6.4 s per query at 1M cells on 2 cores, BENCHMARKS.md). `filter` is a
Lance SQL filter over `cells` applied before the search (a prefilter): the k nearest cells
that match it, where a `WHERE` after the call only keeps those of the k nearest that match. `similar` is a
reserved word in SQL (`x SIMILAR TO pattern`), so the macro is named `similar_cells`, and
`similar(` in a statement is rewritten to it lexically (`rewrite`).
"""

from __future__ import annotations

import duckdb

from uceindex.errors import QueryError
from uceindex.search import cell_vector, knn
from uceindex.sql.sandbox import Stop

SIMILAR_MACRO = "similar_cells"  # what `similar(` is rewritten to
MAX_K = 10_000  # neighbours one similar() call may ask for
NEIGHBOURS = "STRUCT(cell_id VARCHAR, similarity DOUBLE)[]"  # what the search functions return
MACROS = f"""
CREATE MACRO {SIMILAR_MACRO}(id, k, filter := NULL) AS TABLE
    SELECT unnest(_similar(id, k, filter), recursive := true);
CREATE MACRO similar_to_vector(vec, k, filter := NULL) AS TABLE
    SELECT unnest(_similar_to_vector(vec, k, filter), recursive := true);
"""


def rewrite(sql: str) -> str:
    """`similar(` -> `similar_cells(`, outside strings, comments and quoted names."""
    try:
        tokens = duckdb.tokenize(sql)
    except Exception:
        return sql
    out, last = [], 0
    for i, (start, kind) in enumerate(tokens):
        end = tokens[i + 1][0] if i + 1 < len(tokens) else len(sql)
        word = sql[start:end].rstrip()
        if kind.name == "keyword" and word.lower() == "similar":
            rest = sql[start + len(word) :].lstrip()
            if rest.startswith("("):
                out.append(sql[last:start] + SIMILAR_MACRO)
                last = start + len(word)
    return "".join(out) + sql[last:]


def register(con, cells, stop: Stop) -> None:
    """Create the search functions and the two macros on `con`, over the `cells` table.
    The functions hold the table and `stop`, not the session, so the connection is not part
    of a reference cycle."""
    for name, (fn, kind) in _search_functions(cells, stop).items():  # NULL filter: none
        con.create_function(
            name, fn, [kind, "BIGINT", "VARCHAR"], NEIGHBOURS, null_handling="special"
        )
    con.execute(MACROS)


def _search_functions(table, stop: Stop) -> dict:
    """The Python functions behind similar() and similar_to_vector(): `uceindex.search`'s
    k-NN on the cells table (its vector index when it has one, an exact scan otherwise)."""

    def neighbours(vector, k: int | None, skip: str | None, where: str | None) -> list[dict]:
        if stop.why:  # DuckDB checks interrupts between chunks, not inside a Python call
            raise QueryError(f"stopped {stop.why}")
        if k is None or not 1 <= k <= MAX_K:
            raise QueryError(f"k must be between 1 and {MAX_K:,}, got {k}")
        hits = knn(table, vector, k + (skip is not None), where=where or None)
        found = zip(hits.cell_id[0], hits.similarity[0], hits.valid[0])
        out = [{"cell_id": c, "similarity": float(s)} for c, s, ok in found if ok and c != skip]
        return out[:k]

    def similar(cell_id: str | None, k: int | None, where: str | None) -> list[dict]:
        if cell_id is None:
            raise QueryError("similar() needs a cell id, got NULL")
        return neighbours(cell_vector(table, cell_id), k, cell_id, where)

    def similar_to_vector(vector, k: int | None, where: str | None) -> list[dict]:
        if vector is None:
            raise QueryError("similar_to_vector() needs a vector, got NULL")
        return neighbours(vector, k, None, where)

    return {"_similar": (similar, "VARCHAR"), "_similar_to_vector": (similar_to_vector, "DOUBLE[]")}
