"""SQL over a store: results, pushdown, the sandbox, limits, vector macros, the command."""

from __future__ import annotations

import io
import json
import time

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cli.main import app
from uceindex.errors import QueryError
from uceindex.sql import SqlSession, sandbox, similar, write_batches

DIM = 64  # wide enough that the vectors outweigh the metadata, as in a real store
N_PER_DATASET = (700, 500, 300)
runner = CliRunner()


def _write_store(root, seed: int = 0) -> pd.DataFrame:
    """A store of three data sets of random unit embeddings, written by `ingest_embeddings`
    (one rejected cell each); returns the stored cells as pandas, embeddings included."""
    from uceindex.ingestion import ingest_embeddings

    rng = np.random.default_rng(seed)
    frames = []
    for i, n in enumerate(N_PER_DATASET):
        obs = pd.DataFrame(
            {
                "cell_type": rng.choice(["T cell", "B cell", "NK cell", "monocyte", None], n + 1),
                "tissue": rng.choice(["blood", "lung", "liver"], n + 1),
                "donor_id": [f"d{i}_{k}" for k in rng.integers(0, 7, n + 1)],
                "n_genes": rng.integers(200, 5000, n + 1),
                "frac_mito": rng.random(n + 1),
                "is_primary": rng.random(n + 1) > 0.3,
            },
            index=[f"cell{j}" for j in range(n)] + ["bad"],
        )
        emb = rng.normal(size=(n + 1, DIM)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        species = "human" if i < 2 else "mouse"
        reasons = np.array([None] * n + ["fewer than 25 genes"], dtype=object)
        ingest_embeddings(str(root), f"ds{i}", obs, emb, species, "tiny", "f" * 16, reasons=reasons)
        kept = obs.iloc[:n].copy()
        kept.insert(0, "cell_id", [f"ds{i}/{o}" for o in kept.index])
        kept.insert(1, "dataset_id", f"ds{i}")
        kept.insert(2, "species", species)
        kept["embedding"] = list(emb[:n])
        frames.append(kept.reset_index(drop=True))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("sql_store") / "atlas"
    cells = _write_store(root)
    return root, cells


@pytest.fixture
def sql(store):
    with SqlSession(store[0]) as session:
        yield session


# -- results ----------------------------------------------------------------------------------


def test_views_and_schema(sql):
    assert sql.tables() == ["cells", "datasets", "rejects"]
    columns = dict(sql.schema("cells"))
    assert columns["embedding"] == f"FLOAT[{DIM}]"
    assert columns["n_genes"] == "BIGINT" and columns["cell_type"] == "VARCHAR"
    with pytest.raises(QueryError, match="no table 'nope'"):
        sql.schema("nope")


def test_group_by_count_equals_pandas(sql, store):
    cells = store[1]
    got = sql.execute(
        "SELECT tissue, cell_type, count(*) AS n FROM cells GROUP BY ALL"
    ).table.to_pandas()
    want = cells.groupby(["tissue", "cell_type"], dropna=False).size().rename("n").reset_index()
    merged = got.merge(want, on=["tissue", "cell_type"], how="outer", suffixes=("", "_pd"))
    assert len(merged) == len(want) and (merged["n"] == merged["n_pd"]).all()


@pytest.mark.parametrize(
    "where, mask",
    [
        ("cell_type = 'T cell'", lambda c: c.cell_type == "T cell"),
        ("cell_type IN ('B cell', 'NK cell')", lambda c: c.cell_type.isin(["B cell", "NK cell"])),
        ("cell_type IS NULL", lambda c: c.cell_type.isna()),
        ("n_genes BETWEEN 1000 AND 2000", lambda c: c.n_genes.between(1000, 2000)),
        ("frac_mito > 0.5 AND is_primary", lambda c: (c.frac_mito > 0.5) & c.is_primary),
        ("donor_id LIKE 'd1%'", lambda c: c.donor_id.str.startswith("d1")),
        (
            "species = 'mouse' OR n_genes < 300",
            lambda c: (c.species == "mouse") | (c.n_genes < 300),
        ),
    ],
)
def test_filtered_aggregates_equal_pandas(sql, store, where, mask):
    cells = store[1]
    row = sql.execute(
        f"SELECT count(*), sum(n_genes), count(DISTINCT donor_id), avg(frac_mito) "
        f"FROM cells WHERE {where}"
    ).rows()[0]
    part = cells[mask(cells).fillna(False).astype(bool)]
    assert (row[0], int(row[1] or 0), row[2]) == (
        len(part),
        int(part.n_genes.sum()),
        part.donor_id.nunique(),
    )
    assert row[3] == pytest.approx(part.frac_mito.mean())


def test_joins_with_datasets_and_rejects(sql, store):
    rows = sql.execute(
        "SELECT d.dataset_id, d.n_cells, count(c.cell_id) AS n, any_value(r.reason) AS why "
        "FROM datasets d JOIN cells c USING (dataset_id) JOIN rejects r USING (dataset_id) "
        "WHERE d.status = 'complete' AND d.n_cells < 600 "
        "GROUP BY ALL ORDER BY 1"
    ).rows()
    assert rows == [
        ("ds1", 501, 500, "fewer than 25 genes"),
        ("ds2", 301, 300, "fewer than 25 genes"),
    ]


def test_select_star_returns_vectors(sql, store):
    result = sql.execute("SELECT * FROM cells WHERE cell_id = 'ds0/cell3'")
    assert result.num_rows == 1 and "embedding" in result.columns
    vector = np.array(result.table["embedding"][0].as_py(), dtype=np.float32)
    np.testing.assert_array_equal(vector, store[1].embedding[3])


# -- pushdown ---------------------------------------------------------------------------------


def test_count_over_a_filter_does_not_read_embeddings(sql, store):
    query = "SELECT count(*) FROM cells WHERE tissue = 'lung' AND n_genes > 1000"
    plan = sql.execute("EXPLAIN " + query).table["explain_value"][0].as_py()
    scan = plan[plan.index("PYTHON_ARROW_SCAN") :]
    assert "Filters:" in scan and "tissue" in scan and "embedding" not in scan

    before = _bytes_read()
    assert sql.execute(query).rows()[0][0] == int(
        ((store[1].tissue == "lung") & (store[1].n_genes > 1000)).sum()
    )
    metadata_bytes = _bytes_read() - before
    before = _bytes_read()
    sql.execute("SELECT count(*) FROM cells WHERE embedding[1] > 0")
    vector_bytes = _bytes_read() - before
    assert vector_bytes >= len(store[1]) * DIM * 4  # the vectors are read when asked for
    assert metadata_bytes < vector_bytes / 4


def _bytes_read() -> int:
    """What this process has read from files so far (Linux's rchar: page-cache hits count)."""
    try:
        with open("/proc/self/io") as io_counts:
            return next(int(line.split()[1]) for line in io_counts if line.startswith("rchar"))
    except OSError:
        pytest.skip("no /proc/self/io on this system")


# -- sandbox ----------------------------------------------------------------------------------


REFUSED = [
    ("CREATE TABLE x AS SELECT 1", "CREATE statements are not allowed"),
    ("INSERT INTO cells SELECT * FROM cells LIMIT 1", "INSERT statements are not allowed"),
    ("DELETE FROM cells", "DELETE statements are not allowed"),
    ("UPDATE cells SET tissue = 'x'", "UPDATE statements are not allowed"),
    ("DROP VIEW cells", "DROP statements are not allowed"),
    ("COPY (SELECT 1) TO 'x.csv'", "COPY statements are not allowed"),
    ("ATTACH 'other.db'", "ATTACH statements are not allowed"),
    ("INSTALL httpfs", "LOAD statements are not allowed"),
    ("LOAD httpfs", "LOAD statements are not allowed"),
    ("SET threads = 1", "SET statements are not allowed"),
    ("PRAGMA threads = 1", "SET statements are not allowed"),
    ("PRAGMA show_tables", "PRAGMA statements are not allowed"),
    ("CALL pragma_version()", "CALL statements are not allowed"),
    ("EXPORT DATABASE 'out'", "EXPORT statements are not allowed"),
    ("SELECT 1; DROP VIEW cells", "one statement at a time, got 2"),
]


@pytest.mark.parametrize("statement, message", REFUSED)
def test_writes_and_settings_are_refused(sql, statement, message):
    with pytest.raises(QueryError, match=message):
        sql.execute(statement)
    assert sql.execute("SELECT count(*) FROM cells").rows() == [(1500,)]


@pytest.mark.parametrize("statement, message", REFUSED)
def test_the_statement_check_needs_no_store(statement, message):
    with pytest.raises(QueryError, match=message):
        sandbox.checked(statement)


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT 1",
        "WITH a AS (SELECT 1) SELECT * FROM a",
        "EXPLAIN SELECT * FROM cells",
        "DESCRIBE cells",
        "SHOW TABLES",
        "SUMMARIZE cells",
        "FROM cells",
        "VALUES (1), (2)",
        "PIVOT cells ON tissue IN ('lung') USING count(*)",
    ],
)
def test_reads_pass_the_check_as_they_are(statement):
    assert sandbox.checked(f"  {statement};\n") == statement


@pytest.mark.parametrize(
    "statement", ["PIVOT cells ON tissue USING count(*)", "BEGIN", "RESET threads", "DETACH x"]
)
def test_what_is_not_a_single_read_is_refused(statement):
    with pytest.raises(
        QueryError, match="statements are not allowed: the SQL session is read-only"
    ):
        sandbox.checked(statement)


def test_a_script_splits_and_errors_are_one_line():
    assert sandbox.split("SELECT 1;\n-- note\nSELECT 2 -- last\n") == [
        "SELECT 1;",
        "-- note\nSELECT 2 -- last",
    ]
    with pytest.raises(QueryError) as caught:
        sandbox.checked("SELECT (1")
    assert str(caught.value).startswith("Parser Error: syntax error") and "\n" not in str(
        caught.value
    )


def test_a_locked_down_connection_reaches_no_file_and_keeps_its_settings():
    con = sandbox.connect("100MB")
    sandbox.lock_down(con)
    with pytest.raises(duckdb.Error, match="Permission Error"):
        con.sql("SELECT * FROM read_csv('/etc/passwd')")
    for setting in (
        "enable_external_access = true",
        "memory_limit = '2GB'",
        "temp_directory = '/tmp'",
    ):
        with pytest.raises(duckdb.Error, match="the configuration has been locked"):
            con.execute(f"SET {setting}")
    con.close()


@pytest.mark.parametrize(
    "text, rewritten",
    [
        ("SELECT * FROM similar('a/b', 3)", "SELECT * FROM similar_cells('a/b', 3)"),
        ("FROM SIMILAR ('a/b', 3) s", "FROM similar_cells ('a/b', 3) s"),
        ("SELECT 'similar(' AS s", "SELECT 'similar(' AS s"),
        ('SELECT "similar" FROM t', 'SELECT "similar" FROM t'),
        ("SELECT 1 -- similar(x)", "SELECT 1 -- similar(x)"),
        ("SELECT x SIMILAR TO 'a.*' FROM t", "SELECT x SIMILAR TO 'a.*' FROM t"),
    ],
)
def test_similar_is_rewritten_only_where_it_is_a_call(text, rewritten):
    assert similar.rewrite(text) == rewritten


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM '/etc/passwd.csv'",
        "SELECT * FROM read_parquet('/tmp/anything.parquet')",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM read_json('https://example.com/x.json')",
        "SELECT * FROM query('SELECT * FROM read_csv(''/etc/passwd'')')",
    ],
)
def test_files_and_network_are_refused(sql, statement):
    with pytest.raises(QueryError, match="Permission Error"):
        sql.execute(statement)


def test_the_store_is_unchanged(store):
    from uceindex.store import Store

    with Store.open(store[0]) as before:
        versions = before.versions()
    with SqlSession(store[0]) as sql:
        for statement in ("DELETE FROM cells", "COPY cells TO 'x.parquet'", "SELECT 1"):
            try:
                sql.execute(statement)
            except QueryError:
                pass
    with Store.open(store[0]) as after:
        assert after.versions() == versions


def test_python_variables_and_the_store_files_are_out_of_reach(sql, store):
    secret = pa.table({"a": [1]})  # noqa: F841 - a replacement scan would find it
    with pytest.raises(QueryError, match="secret does not exist"):
        sql.execute("SELECT * FROM secret")
    lance_dir = store[0] / "cells.lance"
    with pytest.raises(QueryError, match="Permission Error"):
        sql.execute(f"SELECT * FROM glob('{lance_dir}/*')")


def test_malformed_sql_is_one_line(sql):
    with pytest.raises(QueryError) as caught:
        sql.execute("SELEC count(*) FROM cells")
    message = str(caught.value)
    assert message.startswith('Parser Error: syntax error at or near "SELEC"')
    assert "\n" not in message
    with pytest.raises(QueryError, match="Table with name celz does not exist"):
        sql.execute("SELECT * FROM celz")


def test_timeout_stops_a_slow_statement(store):
    with SqlSession(store[0], timeout_s=0.5) as sql:
        started = time.perf_counter()
        with pytest.raises(QueryError, match=r"stopped after the 0.5 s time limit"):
            sql.execute(
                "SELECT count(*) FROM cells a, cells b, cells c "
                "WHERE a.n_genes + b.n_genes + c.n_genes = 7"
            )
        assert time.perf_counter() - started < 3
        assert sql.execute("SELECT count(*) FROM cells").rows() == [(1500,)]


def test_out_of_memory_is_one_actionable_line(store):
    with SqlSession(store[0], memory_limit="20MB") as sql:
        with pytest.raises(QueryError, match="needs more than this session's 20MB: read fewer"):
            sql.execute("SELECT list(embedding) FROM cells a, range(200) GROUP BY a.cell_id, range")


def test_row_limit(store):
    with SqlSession(store[0], max_rows=100) as sql:
        result = sql.execute("SELECT cell_id FROM cells ORDER BY cell_id")
        assert result.num_rows == 100 and result.truncated
        assert result.rows()[0] == ("ds0/cell0",)
        assert sql.execute("SELECT cell_id FROM cells", limit=10).num_rows == 10
        counted = sql.execute("SELECT cell_id FROM cells -- all of them", count_rest=True)
        assert counted.more_rows == 1400
        described = sql.execute("DESCRIBE cells", limit=2, count_rest=True)
        assert described.num_rows == 2 and described.more_rows == len(sql.schema("cells")) - 2
        small = sql.execute("SELECT * FROM datasets")
        assert small.num_rows == 3 and not small.truncated


def test_closed_session(store):
    sql = SqlSession(store[0])
    sql.close()
    sql.close()
    with pytest.raises(QueryError, match="closed"):
        sql.execute("SELECT 1")


# -- vectors ----------------------------------------------------------------------------------


def _nearest(cells: pd.DataFrame, query: np.ndarray, k: int, skip: str | None = None):
    emb = np.stack(cells.embedding.to_numpy())
    sims = emb @ (query / np.linalg.norm(query))
    order = [i for i in np.argsort(-sims, kind="stable") if cells.cell_id[i] != skip][:k]
    return list(cells.cell_id[order]), sims[order]


def test_similar_matches_numpy(sql, store):
    cells = store[1]
    want_ids, want_sims = _nearest(cells, cells.embedding[42], 10, skip=cells.cell_id[42])
    got = sql.execute(f"SELECT * FROM similar('{cells.cell_id[42]}', 10)")
    assert got.columns == ["cell_id", "similarity"]
    assert [r[0] for r in got.rows()] == want_ids
    np.testing.assert_allclose([r[1] for r in got.rows()], want_sims, atol=1e-5)


def test_similar_with_a_filter_searches_within_it(sql, store):
    """A filter argument is a prefilter: k blood cells, the nearest ones; a WHERE after the
    call keeps only the blood cells among the k nearest of all."""
    cells = store[1]
    blood = cells[cells.tissue == "blood"].reset_index(drop=True)
    want, sims = _nearest(blood, cells.embedding[42], 50, skip=cells.cell_id[42])
    got = sql.execute(f"SELECT * FROM similar('{cells.cell_id[42]}', 50, 'tissue = ''blood''')")
    assert [r[0] for r in got.rows()] == want
    np.testing.assert_allclose([r[1] for r in got.rows()], sims, atol=1e-5)
    named = sql.execute(
        "SELECT count(*) FROM similar_to_vector("
        f"(SELECT embedding FROM cells WHERE cell_id = '{cells.cell_id[42]}'), 50, "
        "filter := '`tissue` = ''blood'' AND n_genes > 1000')"
    ).rows()
    assert named == [(50,)]
    after = sql.execute(
        f"SELECT count(*) FROM similar('{cells.cell_id[42]}', 50) JOIN cells USING (cell_id) "
        "WHERE tissue = 'blood'"
    ).rows()[0][0]
    assert after < 30  # about a third of 50
    with pytest.raises(QueryError, match="^cannot filter cells with 'nope = 1'"):
        sql.execute(f"SELECT * FROM similar('{cells.cell_id[42]}', 5, 'nope = 1')")


def test_similar_joins_cells_and_keeps_similar_to_working(sql, store):
    rows = sql.execute(
        "SELECT s.cell_id, c.tissue FROM similar('ds1/cell7', 5) s JOIN cells c USING (cell_id) "
        "WHERE c.cell_id NOT SIMILAR TO 'ds9.*' ORDER BY s.similarity DESC"
    ).rows()
    assert len(rows) == 5
    text = 'SELECT \'similar(\' AS s, "similar" FROM (SELECT 1 AS "similar")'
    assert sql.execute(text).rows() == [("similar(", 1)]


def test_similar_to_vector_and_array_functions(sql, store):
    cells = store[1]
    query = np.linspace(-1, 1, DIM)
    literal = "[" + ", ".join(f"{v:.6f}" for v in query) + "]"
    want_ids, want_sims = _nearest(cells, query, 7)
    got = sql.execute(f"SELECT * FROM similar_to_vector({literal}, 7)").rows()
    assert [r[0] for r in got] == want_ids
    np.testing.assert_allclose([r[1] for r in got], want_sims, atol=1e-5)
    pair = sql.execute(
        "SELECT array_cosine_similarity(a.embedding, b.embedding) FROM cells a, cells b "
        "WHERE a.cell_id = 'ds0/cell1' AND b.cell_id = 'ds2/cell2'"
    ).rows()[0][0]
    assert pair == pytest.approx(float(cells.embedding[1] @ cells.embedding[1202]), abs=1e-5)


def test_similar_refusals_are_one_line(sql):
    with pytest.raises(QueryError, match="^no cell 'nope/x' in the store"):
        sql.execute("SELECT * FROM similar('nope/x', 3)")
    with pytest.raises(QueryError, match="^k must be between 1 and 10,000, got 0"):
        sql.execute("SELECT * FROM similar('ds0/cell0', 0)")
    with pytest.raises(QueryError, match=f"must be \\(n, {DIM}\\)"):
        sql.execute("SELECT * FROM similar_to_vector([1.0, 2.0], 3)")


def test_similar_uses_the_vector_index(tmp_path):
    from uceindex.search.index import refresh_index
    from uceindex.store import Store

    cells = _write_store(tmp_path / "indexed", seed=1)
    with Store.open(tmp_path / "indexed") as store:
        assert refresh_index(store, kind="ivf_flat", partition_size=256).action == "built"
        with SqlSession(store) as sql:
            got = sql.execute("SELECT * FROM similar('ds1/cell3', 20)").rows()
    want_ids, _ = _nearest(cells, cells.embedding[703], 20, skip="ds1/cell3")
    assert len(got) == 20 and len({r[0] for r in got} & set(want_ids)) >= 16  # approximate
    emb = dict(zip(cells.cell_id, cells.embedding))
    for cell_id, similarity in got:  # IVF_FLAT keeps raw vectors: the similarities are exact
        assert similarity == pytest.approx(float(emb[cell_id] @ cells.embedding[703]), abs=1e-5)


# -- writing results --------------------------------------------------------------------------


def test_write_batches_formats(sql, tmp_path):
    result = sql.execute("SELECT cell_id, n_genes, embedding FROM cells ORDER BY cell_id LIMIT 3")
    for fmt in ("csv", "json", "parquet"):
        out = io.BytesIO()
        rows = write_batches(result.table.to_batches(), result.table.schema, out, fmt)
        assert rows == 3
    exported = sql.export("SELECT * FROM cells", tmp_path / "all.parquet", "parquet", limit=1000)
    assert exported.rows == 1000 and exported.truncated
    assert pq.read_table(tmp_path / "all.parquet").num_rows == 1000
    failing = "SELECT CASE WHEN cell_id = 'ds2/cell9' THEN error('boom') END AS x FROM cells"
    with pytest.raises(QueryError, match="boom"):
        sql.export(failing, tmp_path / "bad.csv", "csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.parquet"]  # nothing half-written


# -- the command ------------------------------------------------------------------------------


def _sql(store, *args, input=None):
    return runner.invoke(app, ["sql", "--store", str(store[0]), *args], input=input)


def test_cli_table(store):
    result = _sql(store, "SELECT tissue, count(*) AS n FROM cells GROUP BY 1 ORDER BY 1")
    assert result.exit_code == 0, result.output
    assert "blood" in result.stdout and "liver" in result.stdout and "3 rows" in result.stdout


def test_cli_table_caps_rows_and_abbreviates(store):
    result = _sql(store, "SELECT cell_id, embedding, settings FROM cells, datasets")
    assert result.exit_code == 0, result.output
    assert "4,460 more rows" in result.stdout  # 1500 x 3 rows, 40 shown
    assert f"({DIM})" in result.stdout  # vectors show a few values and their size


def test_cli_table_piped_keeps_every_column(store):
    result = _sql(store, "SELECT * FROM datasets")  # stdout is not a terminal here
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[0].replace("┃", " ").split()
    assert header == [c for c, _ in _schema(store, "datasets")]
    assert "not shown" not in result.stdout


def _schema(store, table: str) -> list:
    with SqlSession(store[0]) as session:
        return session.schema(table)


def test_cli_csv_and_limit(store):
    result = _sql(store, "--format", "csv", "--limit", "5", "SELECT cell_id, n_genes FROM cells")
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(io.StringIO(result.stdout))
    assert list(frame.columns) == ["cell_id", "n_genes"] and len(frame) == 5


def test_cli_json(store):
    result = _sql(store, "--format", "json", "SELECT dataset_id, n_cells FROM datasets ORDER BY 1")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {"dataset_id": "ds0", "n_cells": 701},
        {"dataset_id": "ds1", "n_cells": 501},
        {"dataset_id": "ds2", "n_cells": 301},
    ]


def test_cli_parquet_out(store, tmp_path):
    out = tmp_path / "counts.parquet"
    query = "SELECT dataset_id, count(*) AS n FROM cells GROUP BY 1 ORDER BY 1"
    result = _sql(store, "--out", str(out), query)
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.to_pydict() == {"dataset_id": ["ds0", "ds1", "ds2"], "n": [700, 500, 300]}
    assert "3 rows" in result.stderr
    refused = _sql(store, "--format", "parquet", query)
    assert refused.exit_code == 1 and "--out" in refused.stderr


def test_cli_csv_out_with_vectors(store, tmp_path):
    out = tmp_path / "v.csv"
    result = _sql(
        store, "--format", "csv", "--out", str(out), "SELECT * FROM similar('ds0/cell0', 4)"
    )
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out)) == 4


def test_cli_stdin_script(store):
    script = "SELECT count(*) AS n FROM cells;\n-- a comment\nSELECT count(*) AS r\nFROM rejects;\n"
    result = _sql(store, "--format", "json", input=script)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.split("\n]\n")[0] + "\n]") == [{"n": 1500}]
    assert '"r": 3' in result.stdout


def test_cli_errors_are_one_line(store):
    for statement in ("SELEC 1", "DROP VIEW cells", "SELECT * FROM read_csv('/etc/passwd')"):
        result = _sql(store, statement)
        assert result.exit_code == 1, statement
        assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.output


def test_cli_shell(store, monkeypatch):
    from cli import sql as cli_sql

    lines = iter(
        [".tables", ".schema datasets", "SELECT count(*)", "AS n FROM cells;", "SELEC;", ".quit"]
    )
    out = io.StringIO()
    with SqlSession(store[0]) as session:
        cli_sql.shell(session, read=lambda prompt: next(lines), out=out, history=None)
    text = out.getvalue()
    assert "cells" in text and "rejects" in text and "content_hash" in text
    assert "1,500" in text or "1500" in text
    assert "syntax error" in text
