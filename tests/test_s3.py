"""Stores on object storage: every command against a real S3 API (moto's server on 127.0.0.1),
the storage options and their precedence, the failures, and that no secret leaks."""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path

import anndata as ad
import httpx
import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import cli_killed_at
from tests.test_service import TOKEN, _clusters, _serve
from uceindex.errors import StoreError
from uceindex.service.client import Client, ServiceCallError
from uceindex.store import Store
from uceindex.store import options as O

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "uce"
SECRET = "Sup3r-s3cret-VALUE-42"  # moto checks no credentials unless auth is switched on
runner = CliRunner()


@pytest.fixture(scope="session")
def s3():
    """moto's S3 on a free loopback port with bucket `uce`; yields its endpoint URL."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    _client("s3", endpoint).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


def _client(service: str, endpoint: str, key: str = "testing", secret: str = "testing"):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )


def _flags(endpoint: str, secret: str = SECRET, key: str = "AKIDTESTING") -> list[str]:
    pairs = [f"endpoint={endpoint}", "region=us-east-1", f"access_key_id={key}"]
    pairs.append(f"secret_access_key={secret}")
    return [arg for pair in pairs for arg in ("--storage-option", pair)]


def _options(endpoint: str, secret: str = SECRET, key: str = "AKIDTESTING") -> dict:
    return O.parse_pairs(_flags(endpoint, secret, key)[1::2])


def _h5ad(path: Path, n: int, seed: int) -> Path:
    obs, emb = _clusters(n, seed=seed)
    adata = ad.AnnData(obs=obs)
    adata.obsm["emb"] = emb
    adata.write_h5ad(path)
    return path


def _ok(args: list[str]):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    return result


def _bucket_has_no_secret(endpoint: str, prefix: str) -> int:
    """Every object under the store's prefix is free of the secret; returns how many."""
    s3 = _client("s3", endpoint)
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        for o in page.get("Contents", [])
    ]
    for key in keys:
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert SECRET.encode() not in body, key
    return len(keys)


def test_every_command_on_an_s3_store(s3, tmp_path):
    uri = f"s3://{BUCKET}/atlas"
    flags = ["--store", uri, *_flags(s3)]
    blood = _h5ad(tmp_path / "blood.h5ad", 300, seed=0)
    ingested = _ok(
        ["ingest", str(blood), "--species", "human", "--embedding-key", "emb", "--json", *flags]
    )
    assert json.loads(ingested.stdout)["datasets"][0]["action"] == "ingested"
    mouse = _h5ad(tmp_path / "mouse.h5ad", 120, seed=1)
    _ok(["ingest", str(mouse), "--species", "mouse", "--embedding-key", "emb", *flags])
    listed = json.loads(_ok(["datasets", "--json", *flags]).stdout)
    assert listed["store"] == uri and listed["cells"] == 420
    assert [d["dataset_id"] for d in listed["datasets"]] == ["blood", "mouse"]
    assert (
        json.loads(_ok(["index", "--json", "--kind", "ivf_flat", *flags]).stdout)["kind"]
        == "ivf_flat"
    )
    query = _h5ad(tmp_path / "query.h5ad", 40, seed=2)
    annotated = json.loads(
        _ok(["annotate", str(query), "--embedding-key", "emb", "--json", *flags]).stdout
    )
    assert annotated["cells"] == 40
    assert (
        json.loads(_ok(["query", str(query), "--embedding-key", "emb", "--json", *flags]).stdout)[
            "cells"
        ]
        == 40
    )
    similar = json.loads(
        _ok(["similar", "--cell-id", "blood/c0", "--k", "5", "--json", *flags]).stdout
    )
    assert len(similar["neighbours"]) == 5
    matched = json.loads(
        _ok(
            ["match", str(mouse), "--species", "mouse", "--against", "human"]
            + ["--embedding-key", "emb", "--json", *flags]
        ).stdout
    )
    assert matched["cells"] == 120 and matched["table"]
    counted = _ok(
        [
            "sql",
            "SELECT species, count(*) AS n FROM cells GROUP BY 1 ORDER BY 1",
            "-f",
            "csv",
            *flags,
        ]
    )
    assert counted.stdout.replace('"', "").split() == ["species,n", "human,300", "mouse,120"]
    out = tmp_path / "blood_out.h5ad"
    _ok(["export", str(out), "--dataset", "blood", *flags])
    assert ad.read_h5ad(out).obsm["X_uce"].shape == (300, 8)
    with Store.open(uri, storage_options=_options(s3)) as store:
        for table in (store.cells, store.datasets_table, store.rejects):
            assert SECRET not in json.dumps(table.to_arrow().to_pylist(), default=str)
        assert SECRET not in repr(store)
    assert _bucket_has_no_secret(s3, "atlas/") > 10


def test_python_api_and_the_service_on_s3(s3, tmp_path, monkeypatch):
    from uceindex import ingest_embeddings, list_datasets
    from uceindex.sql import SqlSession

    uri = f"s3://{BUCKET}/api"
    obs, emb = _clusters(200)
    opts = _options(s3)
    ingest_embeddings(uri, "blood", obs, emb, "human", "m", "fp", storage_options=opts)
    assert list_datasets(uri, storage_options=opts)["cells"] == 200
    with SqlSession(uri, storage_options=opts) as sql:
        assert sql.execute("SELECT count(*) FROM cells").rows() == [(200,)]
    # the same options from the environment, under a real uvicorn
    env = {O.OPTIONS_ENV: json.dumps(opts), "UCEINDEX_TOKEN": TOKEN}
    proc, url = _serve(uri, env)
    try:
        assert httpx.get(url + "/health").json()["cells"] == 200
        with Client(url, token=TOKEN) as client:
            assert client.sql("SELECT count(*) AS n FROM cells")["rows"] == [[200]]
            hits = client.search(cell_ids=["blood/c1"], k=3)["results"][0]
            assert hits[0]["cell_id"] == "blood/c1"
            with pytest.raises(ServiceCallError) as info:
                client.search(cell_ids=["nope/x"], k=3)
            assert SECRET not in str(info.value)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert SECRET not in err.decode()


class _AccessLog(logging.Handler):
    """The request lines moto's server answers (werkzeug's access log)."""

    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@contextmanager
def _requests():
    """The request lines the S3 server answered inside the block."""
    log, handler = logging.getLogger("werkzeug"), _AccessLog()
    level, propagate = log.level, log.propagate
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    log.propagate = False
    try:
        yield handler.lines
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        log.propagate = propagate


def test_prewarm_reads_the_index_once_and_queries_then_read_none_of_it(s3):
    from uceindex import ingest_embeddings
    from uceindex.search import annotate, prewarm_index, refresh_index

    uri, opts = f"s3://{BUCKET}/prewarm", _options(s3)
    obs, emb = _clusters(1000, seed=5)
    ingest_embeddings(uri, "blood", obs, emb, "human", "m", "fp", storage_options=opts)
    refresh_index(uri, kind="ivf_flat", partition_size=100, storage_options=opts)
    queries = _clusters(60, seed=6)[1]

    def index_reads(store) -> int:
        with _requests() as lines:
            annotate(store, queries, k=10, novelty=False)
        return sum("/_indices/" in line for line in lines)

    with Store.open(uri, storage_options=opts) as store:  # lazily: partitions read in use
        lazy = index_reads(store)
    with Store.open(uri, storage_options=opts) as store:
        with _requests() as lines:
            assert "embedding_idx" in prewarm_index(store)
        assert 0 < sum("/_indices/" in line for line in lines)
        assert index_reads(store) == 0 < lazy
        store.refresh()  # the service moves to new snapshots; the cache outlives that
        assert index_reads(store) == 0


def test_sigkill_mid_ingest_then_resume_on_s3(s3, tmp_path):
    uri = f"s3://{BUCKET}/killed"
    path = _h5ad(tmp_path / "pre.h5ad", 100, seed=3)
    args = ["ingest", str(path), "--species", "human", "--embedding-key", "emb"]
    args += ["--chunk-cells", "20", "--json", "--store", uri, *_flags(s3)]
    killed = cli_killed_at(args, "cells:2")
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    with Store.open(uri, storage_options=_options(s3)) as store:
        assert store.dataset("pre")["status"] == "running"
        assert store.count("pre") == 60  # chunks 0, 1, 2
    resumed = _ok(args)
    assert '"action": "resumed"' in resumed.stdout
    with Store.open(uri, storage_options=_options(s3)) as store:
        assert store.count() == 100 and store.dataset("pre")["status"] == "complete"
        ids = store.cells.to_arrow()["cell_id"].to_pylist()
        assert sorted(ids) == sorted(f"pre/c{i}" for i in range(100))


def _fails(args: list[str], expect: str, seconds: float = 20) -> str:
    started = time.monotonic()
    result = runner.invoke(app, args)
    took = time.monotonic() - started
    assert result.exit_code == 1, result.output
    line = " ".join(result.output.split())
    assert expect in line, line
    assert SECRET not in result.output and took < seconds, took
    return line


def test_failures_are_one_fast_line_and_write_nothing(s3):
    datasets = ["datasets", "--json"]
    _fails(
        [*datasets, "--store", "s3://no-such-bucket/atlas", *_flags(s3)],
        "its bucket does not exist",
    )
    _fails(
        [*datasets, "--store", f"s3://{BUCKET}/dead", *_flags("http://127.0.0.1:9")],
        "cannot reach http://127.0.0.1:9",
    )
    _fails(
        [
            *datasets,
            "--store",
            f"s3://{BUCKET}/plain",
            *_flags(s3),
            "--storage-option",
            "allow_http=false",
        ],
        "allow_http=true",
    )
    assert _bucket_has_no_secret(s3, "dead/") == 0 and _bucket_has_no_secret(s3, "plain/") == 0


def test_wrong_credentials_with_auth_switched_on(s3, tmp_path):
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    iam = _client("iam", s3)
    iam.create_user(UserName="lab")
    iam.put_user_policy(
        UserName="lab",
        PolicyName="all",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
            }
        ),
    )
    key = iam.create_access_key(UserName="lab")["AccessKey"]
    before = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0
    try:
        uri = f"s3://{BUCKET}/guarded"
        wrong = _flags(s3, secret=SECRET, key=key["AccessKeyId"])
        _fails(
            [
                "ingest",
                str(_h5ad(tmp_path / "a.h5ad", 50, 0)),
                "--species",
                "human",
                "--embedding-key",
                "emb",
                "--store",
                uri,
                *wrong,
            ],
            "refused the credentials",
        )
        right = O.parse_pairs(
            _flags(s3, secret=key["SecretAccessKey"], key=key["AccessKeyId"])[1::2]
        )
        with Store.open(uri, create=True, storage_options=right) as store:
            assert store.count() == 0
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = before
    assert _bucket_has_no_secret(s3, "guarded/") >= 1


def test_options_precedence_aliases_and_redaction(monkeypatch):
    monkeypatch.setenv(O.OPTIONS_ENV, "region=us-west-2,endpoint=http://env:9000,timeout=9s")
    resolved = O.resolve("s3://b/x", {"region": "eu-west-1"})
    assert resolved["aws_region"] == "eu-west-1"  # the flag wins over the environment
    assert resolved["aws_endpoint"] == "http://env:9000" and resolved["allow_http"] == "true"
    assert resolved["timeout"] == "9s" and resolved["connect_timeout"] == "5s"
    assert O.resolve("s3://b/x", {"allow_http": "false"})["allow_http"] == "false"
    assert O.resolve("s3://b/x", probe=True)["client_max_retries"] == "0"
    assert O.resolve("./local", {"region": "x"}) == {}
    monkeypatch.setenv(O.OPTIONS_ENV, '{"aws_region": "ap-south-1"}')
    assert O.resolve("gs://b/x")["aws_region"] == "ap-south-1"
    monkeypatch.setenv(O.OPTIONS_ENV, "oops")
    with pytest.raises(StoreError, match=O.OPTIONS_ENV):
        O.resolve("s3://b/x")
    monkeypatch.delenv(O.OPTIONS_ENV)
    text = f"failed: aws_secret_access_key={SECRET} and secret: '{SECRET}x' token=abc"
    assert SECRET not in O.redact(text, {})
    assert "plainvalue" not in O.redact("x plainvalue", {"aws_secret_access_key": "plainvalue"})
    assert O.shown({"aws_secret_access_key": SECRET, "aws_region": "r"}) == {
        "aws_secret_access_key": O.HIDDEN,
        "aws_region": "r",
    }


def test_a_malformed_storage_option_is_a_usage_error(tmp_path):
    result = runner.invoke(
        app, ["datasets", "--store", str(tmp_path), "--storage-option", "region"]
    )
    assert result.exit_code == 2 and "key=value" in result.output
