"""The service under a real uvicorn on 127.0.0.1, driven over HTTP; `uceindex serve`'s
options checked in-process (the app it would serve, through Starlette's TestClient)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pandas as pd
import pytest
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cli.main import app as cli_app
from uceindex.errors import UceIndexError
from uceindex.ingestion import ingest
from uceindex.service.client import Client, ServiceCallError

TOKEN = "s3cret-token"
DIM = 8
runner = CliRunner()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clusters(n: int, seed: int = 0):
    """Two well-separated labelled clusters of unit vectors."""
    rng = np.random.default_rng(seed)
    centres = np.eye(DIM, dtype=np.float32)[:2] * 3
    labels = rng.choice(["T cell", "B cell"], n)
    emb = centres[(labels == "B cell").astype(int)] + rng.normal(scale=0.3, size=(n, DIM)).astype(
        np.float32
    )
    obs = pd.DataFrame(
        {"cell_type": labels, "tissue": rng.choice(["blood", "lung"], n)},
        index=[f"c{i}" for i in range(n)],
    )
    return obs, emb


def _serve(store, env_extra=None, args=()):
    port = _free_port()
    env = {**os.environ, **(env_extra or {})}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli.main",
            "serve",
            "--store",
            str(store),
            "--port",
            str(port),
            *args,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180  # a loaded machine can take a minute to import it all
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode())
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the service did not start")


def _h5ad(path, n: int, seed: int):
    import anndata as ad

    obs, emb = _clusters(n, seed=seed)
    adata = ad.AnnData(obs=obs)
    adata.obsm["emb"] = emb
    adata.write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("svc")
    path = tmp / "atlas"
    ingest(
        _h5ad(tmp / "blood.h5ad", 300, seed=0),
        species="human",
        store=str(path),
        embedding_key="emb",
    )
    return path


@pytest.fixture(scope="module")
def server(store):
    proc, url = _serve(store, {"UCEINDEX_TOKEN": TOKEN})
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def client(server):
    with Client(server, token=TOKEN) as c:
        yield c


def test_health_needs_no_token(server):
    body = httpx.get(server + "/health").json()
    assert body["status"] == "ok" and body["cells"] == 300
    assert body["model"]["embedding_dim"] == DIM


def test_token_refused_and_accepted(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = httpx.get(server + "/datasets", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["type"] == "Unauthorized"
    r = httpx.get(server + "/datasets", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()[0]["dataset_id"] == "blood"


def test_datasets_and_cells(client):
    assert [d["dataset_id"] for d in client.datasets()] == ["blood"]
    cell = client.cell("blood/c7")
    assert cell["cell_id"] == "blood/c7" and "embedding" not in cell
    with_vec = client.cell("blood/c7", embedding=True)
    assert len(with_vec["embedding"]) == DIM
    with pytest.raises(ServiceCallError) as info:
        client.cell("blood/nope")
    assert info.value.status == 404


def test_qc_report(client, server):
    report = client.qc(sample=200, k=10)
    assert report["sample"]["cells"] == 200 and report["sample"]["per_dataset"] == {"blood": 200}
    assert "store" not in report and report["flags"] == []  # two clusters, nothing collapsed
    assert report["datasets"][0]["coherence"]["cell_type"]["share"] > 0.9
    with pytest.raises(ServiceCallError, match="no data set 'nope'") as info:
        client.qc(dataset="nope")
    assert info.value.status == 400
    r = httpx.get(
        server + "/qc", params={"sample": 10**6}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert r.status_code == 400 and "at most 10,000 cells" in r.json()["error"]["message"]
    with pytest.raises(ServiceCallError, match="between 2 and 20,000"):
        client.qc(sample=1)


def test_sql(client, store):
    out = client.sql("SELECT cell_type, count(*) AS n FROM cells GROUP BY 1 ORDER BY 1")
    obs, _ = _clusters(300)
    expected = obs["cell_type"].value_counts().sort_index()
    assert out["columns"] == ["cell_type", "n"]
    assert out["rows"] == [[k, int(v)] for k, v in expected.items()]
    limited = client.sql("SELECT cell_id FROM cells", limit=5)
    assert len(limited["rows"]) == 5 and limited["truncated"]
    label = expected.index[0]  # similar() with a filter searches within it, here too
    within = client.sql(
        "SELECT count(*) AS n, min(c.cell_type) AS lo, max(c.cell_type) AS hi "
        f"FROM similar('blood/c7', 20, 'cell_type = ''{label}''') JOIN cells c USING (cell_id)"
    )
    assert within["rows"] == [[20, label, label]]


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM cells",
        "COPY cells TO '/tmp/out.csv'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "INSTALL httpfs",
        "ATTACH 'x.db'",
    ],
)
def test_sql_writes_and_file_access_are_refused(client, statement):
    with pytest.raises(ServiceCallError) as info:
        client.sql(statement)
    assert info.value.status == 400
    assert "/etc" not in str(info.value) or "passwd" in statement


def test_malformed_requests_are_json_errors(server):
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    r = httpx.post(server + "/sql", content=b"{not json", headers=headers)
    assert r.status_code == 422 and r.json()["error"]["type"] == "ValidationError"
    r = httpx.post(server + "/sql", json={"nosql": 1}, headers=headers)
    assert r.status_code == 422 and "sql" in r.json()["error"]["message"]
    r = httpx.get(server + "/nowhere", headers=headers)
    assert r.status_code == 404 and "Traceback" not in r.text


def test_oversized_body_is_refused_before_it_is_read(server):
    """A 1 TB declared body: answered 413 at once (a raw socket, since no client sends that)."""
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(
            f"POST /sql HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {10**12}\r\n\r\n{{}}".encode()
        )
        status_line = s.recv(4096).split(b"\r\n")[0]
    assert b" 413 " in status_line


def _serve_in_process(monkeypatch, store, *args, token=None):
    """`uceindex serve ...` up to the point where uvicorn would run: (result, what uvicorn got)."""
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.update(app=app, **options))
    result = runner.invoke(
        cli_app, ["serve", "--store", str(store), *args], env={"UCEINDEX_TOKEN": token}
    )
    return result, served


def test_non_loopback_bind_needs_a_token(store, monkeypatch):
    result, served = _serve_in_process(monkeypatch, store, "--host", "0.0.0.0")
    assert result.exit_code == 1 and "without a token" in result.stderr
    assert not served  # refused before anything is served


def test_a_token_lets_any_address_be_bound_and_guards_the_app(store, monkeypatch):
    result, served = _serve_in_process(
        monkeypatch, store, "--host", "0.0.0.0", "--port", "8123", token=TOKEN
    )
    assert result.exit_code == 0, result.output
    assert (served["host"], served["port"]) == ("0.0.0.0", 8123)
    assert "with a token" in result.stderr
    with TestClient(served["app"]) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/datasets").status_code == 401
        assert c.get("/datasets", headers=_auth()).status_code == 200


def test_client_reports_an_unreachable_service():
    with (
        Client(f"http://127.0.0.1:{_free_port()}") as c,
        pytest.raises(UceIndexError, match="cannot reach"),
    ):
        c.health()


def _auth():
    return {"Authorization": f"Bearer {TOKEN}"}


def test_search_by_vectors_and_cell_ids(client):
    centre_b = np.eye(DIM)[1] * 3
    out = client.search(vectors=[centre_b], k=10, columns=["cell_type", "tissue"])
    hits = out["results"][0]
    assert len(hits) == 10 and all(h["cell_type"] == "B cell" for h in hits)
    assert hits == sorted(hits, key=lambda h: -h["similarity"])
    lung = client.search(vectors=[centre_b], k=10, where="tissue = 'lung'", columns=["tissue"])
    assert all(h["tissue"] == "lung" for h in lung["results"][0])
    by_id = client.search(cell_ids=["blood/c1", "blood/c2"], k=3)
    assert [r[0]["cell_id"] for r in by_id["results"]] == ["blood/c1", "blood/c2"]


def test_search_limits_and_bad_filters(client):
    for kwargs, status in (({"k": 5000}, 400), ({"k": 0}, 400), ({"where": "nonsense ((("}, 400)):
        with pytest.raises(ServiceCallError) as info:
            client.search(vectors=[np.ones(DIM)], **kwargs)
        assert info.value.status == status
    with pytest.raises(ServiceCallError, match="exactly one"):
        client.search(k=3)


def test_limits_are_set_on_the_command_line(store, monkeypatch):
    result, served = _serve_in_process(
        monkeypatch, store, "--max-k", "5", "--max-rows", "3", "--max-queries", "2"
    )
    assert result.exit_code == 0, result.output
    assert (served["host"], served["port"]) == ("127.0.0.1", 8000)

    def refusal(response) -> str:
        assert response.status_code == 400
        return response.json()["error"]["message"]

    one = [[1.0] * DIM]
    with TestClient(served["app"]) as c:
        assert len(c.post("/search", json={"vectors": one, "k": 5}).json()["results"][0]) == 5
        assert "between 1 and 5" in refusal(c.post("/search", json={"vectors": one, "k": 6}))
        three = {"vectors": one * 3, "k": 1}
        assert "at most 2 query" in refusal(c.post("/search", json=three))
        rows = c.post("/sql", json={"sql": "SELECT cell_id FROM cells"}).json()
        assert len(rows["rows"]) == 3 and rows["truncated"]


def test_annotate_embeddings(client):
    queries = np.vstack([np.eye(DIM)[0] * 3, np.eye(DIM)[1] * 3])
    out = client.annotate(queries, k=15, names=["t", "b"])
    preds = {p["cell"]: p for p in out["predictions"]}
    assert preds["t"]["predicted"] == "T cell" and preds["b"]["predicted"] == "B cell"
    assert preds["t"]["confidence"] > 0.9 and out["summary"]["k"] == 15


def test_annotate_upload(client, tmp_path):
    path = _h5ad(tmp_path / "query.h5ad", 40, seed=9)
    obs, _ = _clusters(40, seed=9)
    out = client.annotate(path, k=10, embedding_key="emb")
    predicted = [p["predicted"] for p in out["predictions"]]
    assert (np.array(predicted) == obs["cell_type"].to_numpy()).mean() > 0.95


def test_annotate_with_the_cell_ontology(client, tmp_path):
    queries = np.vstack([np.eye(DIM)[0] * 3, np.eye(DIM)[1] * 3])
    out = client.annotate(queries, k=15, names=["t", "b"], ontology=True, min_score=0.6)
    preds = {p["cell"]: p for p in out["predictions"]}
    assert preds["t"]["predicted_term_id"] == "CL:0000084"  # "T cell", mapped at ingest
    assert preds["b"]["predicted_term_label"] == "B cell" and preds["b"]["term_score"] > 0.9
    assert "CL:0000000" in preds["t"]["term_path"].split(";")
    assert out["summary"]["cell_ontology"].startswith("CL v")
    assert out["summary"]["min_score"] == 0.6 and out["summary"]["terms"][0]["cells"] == 1
    path = _h5ad(tmp_path / "query.h5ad", 20, seed=9)
    up = client.annotate(path, k=10, embedding_key="emb", ontology=True)
    assert {p["predicted_term_id"] for p in up["predictions"]} <= {"CL:0000084", "CL:0000236"}
    assert "predicted_term_id" not in client.annotate(queries, k=15)["predictions"][0]


def test_non_h5ad_upload(server, tmp_path):
    files = {"file": ("notes.h5ad", b"this is not hdf5", "application/octet-stream")}
    r = httpx.post(
        server + "/annotate", files=files, data={"embedding_key": "emb"}, headers=_auth()
    )
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert "notes.h5ad is not a readable .h5ad" in message and "/tmp" not in message


def test_match_embeddings(client):
    queries = np.vstack([np.eye(DIM)[0] * 3] * 3 + [np.eye(DIM)[1] * 3] * 2)
    out = client.match(
        queries, species="mouse", against="human", k=10, query_labels=["T", "T", "T", "B", "B"]
    )
    table = {(r["query_label"], r["reference_label"]): r["share"] for r in out["table"]}
    assert table[("T", "T cell")] == 1.0 and table[("B", "B cell")] == 1.0
    with pytest.raises(ServiceCallError, match="no zebrafish cells"):
        client.match(queries, species="mouse", against="zebrafish", query_labels=["T"] * 5)
    labels = ["T", "T", "T", "B", "B"]
    level = client.match(
        queries, "mouse", "human", k=10, query_labels=labels, ontology_level=["lymphocyte"]
    )
    assert {r["reference_label"] for r in level["table"]} == {"lymphocyte"}
    with pytest.raises(ServiceCallError, match="ontology level 'lymph' is not"):
        client.match(queries, "mouse", "human", query_labels=labels, ontology_level=["lymph"])


def test_answers_during_an_ingest_and_sees_it_after(server, store, tmp_path):
    """A second data set streams in (a subprocess) while queries keep being answered."""
    path = _h5ad(tmp_path / "more.h5ad", 20_000, seed=3)
    before = httpx.get(server + "/health").json()["cells"]
    ingest = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli.main",
            "ingest",
            str(path),
            "--species",
            "human",
            "--store",
            str(store),
            "--embedding-key",
            "emb",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    answered = 0
    while ingest.poll() is None:
        r = httpx.post(
            server + "/search",
            json={"vectors": [list(np.eye(DIM)[0])], "k": 5},
            headers=_auth(),
            timeout=30,
        )
        assert r.status_code == 200
        answered += 1
    assert ingest.returncode == 0, ingest.stderr.read().decode()
    assert answered >= 1
    time.sleep(1.2)  # the service moves to a new snapshot at most every second
    assert httpx.get(server + "/health").json()["cells"] == before + 20_000


def test_as_of_reads_a_tagged_version_on_every_route(tmp_path):
    """Answers read before more data sets came (and one was replaced) are given again
    with ?as_of= the tag or the version number; GET /versions lists the history."""
    from uceindex import ingest_embeddings, tag_version

    store = tmp_path / "atlas"

    def put(dataset_id, seed, **kw):
        obs, emb = _clusters(200, seed=seed)
        if seed:  # later data sets say the opposite
            obs["cell_type"] = obs["cell_type"].map({"T cell": "B cell", "B cell": "T cell"})
        ingest_embeddings(str(store), dataset_id, obs, emb, "human", "m", "fp", **kw)

    def answers(client):
        queries = np.vstack([np.eye(DIM)[0] * 3, np.eye(DIM)[1] * 3])
        return {
            "sql": client.sql("SELECT dataset_id, count(*) FROM cells GROUP BY ALL ORDER BY 1"),
            "search": client.search(cell_ids=["a/c0"], k=5)["results"],
            "annotate": client.annotate(queries, k=15)["predictions"],
            "datasets": [d["dataset_id"] for d in client.datasets()],
            "cell": client.cell("a/c1"),
        }

    put("a", seed=0)
    proc, url = _serve(store)
    try:
        with Client(url) as client:
            before = answers(client)
            before["sql"].pop("elapsed_s")
            tag_version(str(store), "paper")
            put("b", seed=1)
            put("a", seed=2, replace=True)
            time.sleep(1.2)  # the service's latest snapshot moves at most every second
            now = answers(client)
            assert sorted(now["datasets"]) == ["a", "b"] and now["annotate"] != before["annotate"]
            versions = client.versions()
            assert [(v["action"], v["tags"]) for v in versions] == [
                ("created", []),
                ("added", ["paper"]),
                ("added", []),
                ("replaced", []),
            ]
        for as_of in ("paper", 2):
            with Client(url, as_of=as_of) as past:
                then = answers(past)
                then["sql"].pop("elapsed_s")
                assert then == before
                assert len(past.versions()) == 4
        r = httpx.post(url + "/sql", params={"as_of": "nope"}, json={"sql": "SELECT 1"})
        assert r.status_code == 400
        assert "has no version or tag 'nope'" in r.json()["error"]["message"]
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        (  # Lance's error for a regular expression that does not compile, as it came
            "lance error: Query Execution error: Regular expression did not compile: Syntax(\n"
            + "~" * 40
            + "\nregex parse error:\n    (((\nerror: unclosed group\n"
            + "~" * 40
            + "\n), /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/lance-13.0.0/"
            "src/io/exec/filtered_read.rs:1639:33",
            "lance error: Query Execution error: Regular expression did not compile: Syntax( "
            "regex parse error: ((( error: unclosed group )",
        ),
        (
            'Permission Error: Cannot access directory "/root/.duckdb/stored_secrets" - file '
            "system operations are disabled",
            'Permission Error: Cannot access directory "<path>" - file system operations are '
            "disabled",
        ),
        ("lance error: Invalid input, src/io/exec/scan.rs:12:4", "lance error: Invalid input"),
        (
            "cannot read /srv/atlas/cells.lance/data/0.lance",
            "cannot read atlas/cells.lance/data/0.lance",
        ),
        (
            "cannot read file:///srv/atlas/x and file:///home/u/x.h5ad",
            "cannot read atlas/x and <path>",
        ),
        (
            "in /work/.venv/lib/python3.11/site-packages/lance/dataset.py: boom",
            "in <path>: boom",
        ),
        (
            'Traceback (most recent call last):\n  File "/x/y.py", line 3\nValueError',
            "the request failed",
        ),
        (
            "no cell 'blood/c7'; k 1/2/3, a / b; see s3://bucket/key",
            "no cell 'blood/c7'; k 1/2/3, a / b; see s3://bucket/key",
        ),
        (r"bad C:\Users\me\atlas.h5ad here", "bad <path> here"),
    ],
)
def test_sanitise_hides_server_paths_sources_and_tracebacks(message, shown):
    from uceindex.service.errors import sanitise

    assert sanitise(message, "/srv/atlas") == shown


def _no_server_path(message: str, store) -> None:
    for leak in (os.path.expanduser("~"), str(store), ".rs:", "Traceback", "\n"):
        assert leak not in message, (leak, message)


@pytest.mark.parametrize(
    "statement", ["SELECT * FROM duckdb_extensions()", "SELECT * FROM duckdb_secrets()"]
)
def test_sql_engine_errors_name_no_server_path(client, store, statement):
    with pytest.raises(ServiceCallError) as info:
        client.sql(statement)
    assert info.value.status == 400
    _no_server_path(str(info.value), store)


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/search", {"vectors": [[1.0] * DIM], "where": "regexp_match(cell_type, '(((')"}),
        ("/annotate", {"embeddings": [[1.0] * DIM], "where": "regexp_like(tissue, '[')"}),
    ],
)
def test_a_filter_lance_refuses_while_it_runs_is_a_400_without_sources(server, store, route, body):
    r = httpx.post(server + route, json=body, headers=_auth())
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert message.startswith("cannot filter cells with") and "unclosed" in message
    _no_server_path(message, store)


def test_datasets_show_source_paths_only_when_asked(client, store, monkeypatch):
    assert client.datasets() and all("source_path" not in d for d in client.datasets())
    assert "source_path" not in client.sql("SELECT * FROM datasets")["columns"]
    with pytest.raises(ServiceCallError, match="source_path"):
        client.sql("SELECT source_path FROM datasets")
    result, served = _serve_in_process(monkeypatch, store, "--show-paths")
    assert result.exit_code == 0, result.output
    with TestClient(served["app"]) as c:
        shown = c.get("/datasets").json()
        rows = c.post("/sql", json={"sql": "SELECT source_path FROM datasets"}).json()["rows"]
    assert shown[0]["source_path"].endswith("blood.h5ad")
    assert rows[0][0] == shown[0]["source_path"]


@pytest.mark.parametrize(
    ("route", "body", "named"),
    [  # the requests of issue 13 that answered 500, and their kin
        ("/annotate", {}, "embeddings: Field required"),
        (
            "/match",
            {"embeddings": [[0.1]], "query_labels": ["a"]},
            "species: Field required; against: Field required",
        ),
        ("/match", [None, None], "body: Input should be an object"),
        ("/search", {"vectors": [[0.1] * DIM, [0.1]]}, "same length, got lengths 1, 8"),
        ("/annotate", {"embeddings": [[0.1] * DIM, [0.1, 0.2]]}, "same length, got lengths 2, 8"),
        ("/annotate", {"embeddings": []}, "embeddings: List should have at least 1 item"),
        ("/annotate", {"embeddings": "x"}, "embeddings: Input should be a valid array"),
        ("/sql", {"sql": "SELECT 1", "limit": 0}, "limit: Input should be greater than"),
    ],
)
def test_malformed_bodies_are_422_naming_what_is_wrong(server, route, body, named):
    r = httpx.post(server + route, json=body, headers=_auth())
    assert r.status_code == 422, r.text
    assert named in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("route", "body", "named"),
    [
        ("/search", {"vectors": [[1.0] * DIM], "columns": ["embedding"]}, "column 'embedding' is"),
        ("/search", {"vectors": [[1.0] * DIM], "columns": ["nope"]}, "no column 'nope'"),
        (
            "/annotate",
            {"embeddings": [[1.0] * DIM], "label": "embedding"},
            "label column 'embedding'",
        ),
    ],
)
def test_a_column_that_cannot_be_returned_is_named(server, route, body, named):
    r = httpx.post(server + route, json=body, headers=_auth())
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert named in message and "None" not in message


def test_sql_rows_python_cannot_hold_are_json(client):
    """Bytes that are not UTF-8 (in DuckDB's own duckdb_settings() too), NaN inside a list,
    dates past datetime's range: each answered, none a 500."""
    out = client.sql(
        "SELECT '\\xA0\\x41'::BLOB AS b, ['nan'::DOUBLE, 1.5] AS v, "
        "'infinity'::TIMESTAMP AS t, '-infinity'::DATE AS d, DATE '2020-01-02' AS ok"
    )
    b, v, t, d, ok = out["rows"][0]
    assert (b, v, ok) == ("\\xa0A", [None, 1.5], "2020-01-02")
    assert "out of range" in t and "out of range" in d
    assert client.sql("SELECT * FROM duckdb_settings()")["rows"]


def test_sql_settings_name_no_server_path(client, store):
    values = client.sql("SELECT value FROM duckdb_settings()")["rows"]
    values += client.sql("SELECT current_setting('secret_directory')")["rows"]
    for (value,) in values:
        _no_server_path(str(value), store)


def test_any_stored_column_can_be_the_label(client):
    """cell_id as the label is a nearest-cell lookup (it answered 500)."""
    out = client.annotate(np.eye(DIM)[:1] * 3, k=5, label="cell_id")
    predicted = out["predictions"][0]["predicted"]
    assert client.cell(predicted)["cell_id"] == predicted  # a stored cell's id


@pytest.fixture(scope="module")
def capped(store):
    """The service with a 1 MiB body cap."""
    proc, url = _serve(store, {"UCEINDEX_TOKEN": TOKEN}, ("--max-upload-mb", "1"))
    yield url
    proc.terminate()
    proc.wait(10)


def _chunked(body: bytes, size: int = 64 << 10):
    """A generator body: httpx sends it chunked, with no Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def _multipart(fields: dict, payload: bytes) -> tuple[bytes, str]:
    boundary = "uceindexboundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="q.h5ad"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def test_a_chunked_body_over_the_cap_is_refused_on_every_route(capped, tmp_path):
    """No Content-Length: the bytes read are counted (issue 13: 2.5 MiB ran against 2 MiB)."""
    big = json.dumps({"sql": "SELECT 1 -- " + "x" * (3 << 19)}).encode()  # 1.5 MiB
    vectors = json.dumps({"vectors": [[0.5] * DIM] * 40_000, "k": 1}).encode()
    embeddings = json.dumps({"embeddings": [[0.5] * DIM] * 40_000}).encode()
    upload, kind = _multipart({"embedding_key": "emb"}, b"\0" * (3 << 19))
    for route, body, content_type in (
        ("/sql", big, "application/json"),
        ("/search", vectors, "application/json"),
        ("/annotate", embeddings, "application/json"),
        ("/match", embeddings, "application/json"),
        ("/annotate", upload, kind),
    ):
        assert len(body) > 1 << 20
        r = httpx.post(
            capped + route,
            content=_chunked(body),
            headers={**_auth(), "Content-Type": content_type},
            timeout=60,
        )
        assert r.status_code == 413, (route, r.text)
        assert r.json()["error"] == {
            "type": "TooLarge",
            "message": "request body over the limit of 1,048,576 bytes: send less per request",
        }
    small = json.dumps({"sql": "SELECT 41 + 1 AS n"}).encode()
    r = httpx.post(
        capped + "/sql",
        content=_chunked(small, 4),
        headers={**_auth(), "Content-Type": "application/json"},
        timeout=60,
    )
    assert r.status_code == 200 and r.json()["rows"] == [[42]]  # a chunked body under the cap
    path = _h5ad(tmp_path / "query.h5ad", 20, seed=4)
    upload, kind = _multipart({"embedding_key": "emb", "k": "5"}, path.read_bytes())
    r = httpx.post(
        capped + "/annotate",
        content=_chunked(upload),
        headers={**_auth(), "Content-Type": kind},
        timeout=60,
    )
    assert r.status_code == 200 and len(r.json()["predictions"]) == 20
