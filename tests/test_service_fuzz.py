"""The committed OpenAPI document fuzzed against a real service (uvicorn, 127.0.0.1) on a
small pre-embedded store, with schemathesis: whatever a client sends, the answer is never a
5xx, its status is one the document lists, and its body has the documented shape (the
`Error` shape for every 4xx). Then requests of the right shape (vectors as wide as the
store's) with any filter, column, label and SQL text, since random vectors rarely are.
Bounded: fixed seeds and a few examples per route."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.test_service import DIM, TOKEN, _h5ad, _serve
from uceindex.ingestion import ingest
from uceindex.service import openapi

EXAMPLES = 15  # per route (schemathesis) or per test; each is one HTTP request per route
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
AUTH = {"Authorization": f"Bearer {TOKEN}"}
COLUMNS = ["cell_id", "dataset_id", "species", "ingest_chunk", "embedding", "cell_type", "tissue"]
FILTERS = [  # pieces a filter is made of, so that most draws parse and some run
    *COLUMNS,
    "=", "<>", ">", "IS NULL", "IS NOT NULL", "AND", "OR", "NOT", "(", ")", "LIKE", "IN",
    "'T cell'", "'lung'", "'%'", "1", "0", "-1", "1e400", "NULL", "true", "/ 0", "% 0",
    "regexp_match(cell_type, '(((')", "regexp_like(tissue, '[')", "CAST(tissue AS INT)",
    "array_length(embedding)", "`cell_type`", "`no such`", "'\\'", "x'00'",
]  # fmt: skip

schema = schemathesis.openapi.from_path(openapi.path())


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    store = tmp / "atlas"
    path = _h5ad(tmp / "blood.h5ad", 60, seed=0)
    ingest(path, species="human", store=str(store), embedding_key="emb")
    proc, url = _serve(store, {"UCEINDEX_TOKEN": TOKEN}, ("--max-upload-mb", "1"))
    yield url
    proc.terminate()
    proc.wait(10)


@schema.parametrize()
@seed(13)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_5xx(case, service):
    response = case.call(base_url=service, headers=AUTH)
    case.validate_response(response, checks=CHECKS)


def _phrase(pieces: list[str]):
    return st.lists(st.sampled_from(pieces) | st.text(max_size=8), max_size=6).map(" ".join)


@seed(13)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    vector=st.lists(st.floats(-1e6, 1e6), min_size=DIM, max_size=DIM),
    where=st.none() | _phrase(FILTERS),
    column=st.sampled_from(COLUMNS) | st.text(max_size=8),
    k=st.integers(-2, 1200),
    sql=_phrase(["SELECT", "*", "FROM", "cells", "datasets", "rejects", "WHERE", *FILTERS]),
)
def test_right_shaped_requests_with_any_filter_column_or_label_get_no_5xx(
    service, vector, where, column, k, sql
):
    one = {"k": k, "where": where}
    for route, body in (
        ("/search", {"vectors": [vector], "columns": [column], **one}),
        ("/annotate", {"embeddings": [vector], "label": column, **one}),
        (
            "/match",
            {
                "embeddings": [vector],
                "query_labels": ["a"],
                "label": column,
                **one,
                "species": "mouse",
                "against": "human",
            },
        ),  # fmt: skip
        ("/sql", {"sql": sql}),
    ):
        r = httpx.post(service + route, json=body, headers=AUTH, timeout=60)
        assert r.status_code < 500, (route, body, r.text)
        if r.status_code >= 400:
            message = r.json()["error"]["message"]
            assert message and "\n" not in message and "Traceback" not in message
