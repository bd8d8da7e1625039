"""Read-only SQL over a store: DuckDB views on the store's Lance tables.

    from uceindex.sql import SqlSession
    with SqlSession("./atlas", timeout_s=30, max_rows=10_000) as sql:   # or SqlSession(store)
        sql.execute("SELECT tissue, count(*) n FROM cells GROUP BY 1").table   # pyarrow
        sql.export("SELECT * FROM cells WHERE tissue = 'lung'", "lung.parquet", "parquet")

Modules: `session` (SqlSession, its results), `sandbox` (what a statement may be and do),
`similar` (the similar() / similar_to_vector() table macros over `uceindex.search`),
`output` (csv / json / parquet writers). docs/sql.md has the whole contract.
"""

from uceindex.sql.output import FORMATS, format_of, write_batches
from uceindex.sql.sandbox import ALLOWED, MEMORY_LIMIT
from uceindex.sql.session import TABLES, Exported, SqlResult, SqlSession
from uceindex.sql.similar import MAX_K

__all__ = [
    "SqlSession",
    "SqlResult",
    "Exported",
    "write_batches",
    "format_of",
    "FORMATS",
    "TABLES",
    "MEMORY_LIMIT",
    "ALLOWED",
    "MAX_K",
]
