"""The endpoints. Each parses its request, calls the library once, and shapes the answer."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from fastapi import APIRouter, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from uceindex import __version__
from uceindex.errors import InputDataError, QueryError
from uceindex.io.genes import GeneFilter
from uceindex.quality import qc as quality_report
from uceindex.quality.report import DEFAULT_K, DEFAULT_SAMPLE
from uceindex.search import annotate as annotate_cells
from uceindex.search import cell_vector, cells_table, knn, summarise
from uceindex.search import match as match_cells
from uceindex.search.query import known_model
from uceindex.service import deps, shapes
from uceindex.service.deps import LimitsDep, SqlDep, StoreDep
from uceindex.service.errors import NotFound, require
from uceindex.store.schema import EMBEDDING
from uceindex.store.store import sql_string

public = APIRouter(responses={400: shapes.ERRORS[400]})  # a bad ?as_of= even here
private = APIRouter(responses=shapes.ERRORS)


def _plain(value):
    """JSON-safe, nested values too: NaN and inf become null, bytes text (undecodable bytes
    as \\xNN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _record(row: dict) -> dict:
    return _plain(row)


@public.get("/health", response_model=shapes.Health, tags=["store"])
def health(store: StoreDep):
    """Liveness and what the store holds; needs no token."""
    return {
        "status": "ok",
        "version": __version__,
        "cells": store.count(),
        "model": store.model_info(),
    }


@private.get("/datasets", response_model=list[shapes.Dataset], tags=["store"])
def datasets(request: Request, store: StoreDep):
    """One entry per ingested file, oldest first; its source path on the server only when
    the service was started with `--show-paths` (`deps.SERVER_PATHS`)."""
    frame = store.datasets()
    if not request.app.state.show_paths:
        frame = frame.drop(columns=list(deps.SERVER_PATHS), errors="ignore")
    return [_record(r) for r in frame.to_dict(orient="records")]


@private.get("/versions", response_model=list[shapes.Version], tags=["store"])
def versions(store: StoreDep):
    """The store's versions, oldest first: when, what changed, tags. Any of them (number or
    tag) can be read with `?as_of=` on the other routes."""
    return [v.as_dict() for v in store.history()]


@private.get("/qc", tags=["store"], response_model=dict)
def qc(
    store: StoreDep,
    limits: LimitsDep,
    dataset: str | None = None,
    sample: int = DEFAULT_SAMPLE,
    k: int = DEFAULT_K,
    label: str | None = None,
    seed: int = 0,
):
    """The atlas quality report on a bounded, seeded sample (as `uceindex qc --json`): pairwise
    cosine (collapse), batch mixing, label coherence and confusions, ingest record, flags.
    The sample is capped by the query cells a request may have (`--max-queries`)."""
    require(sample <= limits.max_queries, f"at most {limits.max_queries:,} cells in a qc sample")
    report = quality_report(store, dataset=dataset, sample=sample, k=k, label=label, seed=seed)
    report.pop("store")  # no server paths
    return jsonable_encoder(report)


@private.get("/cells/{cell_id:path}", tags=["store"], response_model=dict)
def cell(cell_id: str, store: StoreDep, embedding: bool = False):
    """One stored cell's metadata (and its embedding with ?embedding=true)."""
    if store.cells is None:
        raise NotFound(f"no cell {cell_id!r}: the store holds no cells yet")
    columns = [c for c in store.cells.schema.names if embedding or c != EMBEDDING]
    rows = (
        store.cells.search()
        .where(f"cell_id = {sql_string(cell_id)}")
        .select(columns)
        .limit(1)
        .to_list()
    )
    if not rows:
        raise NotFound(f"no cell {cell_id!r} in the store")
    row = _record(rows[0])
    if embedding:
        row[EMBEDDING] = [float(x) for x in row[EMBEDDING]]
    return row


@private.post("/sql", response_model=shapes.SqlResponse, tags=["sql"])
def sql(body: shapes.SqlRequest, session: SqlDep, limits: LimitsDep):
    """A read-only SQL statement over the views cells, datasets, rejects (DuckDB)."""
    limit = min(body.limit or limits.max_rows, limits.max_rows)
    result = session.execute(body.sql, limit=limit)
    rows = [[_plain(v) for v in row] for row in result.rows()]
    return jsonable_encoder(
        {
            "columns": result.columns,
            "rows": rows,
            "truncated": result.truncated,
            "elapsed_s": result.elapsed_s,
        }
    )


def check_k(request: Request, k: int, n_queries: int) -> None:
    limits = deps.limits(request)
    require(1 <= k <= limits.max_k, f"k must be between 1 and {limits.max_k}")
    require(
        n_queries <= limits.max_queries, f"at most {limits.max_queries:,} query cells per request"
    )


def _rows(frame: pd.DataFrame, index: str | None = None) -> list[dict]:
    """Records of a frame, its index first as column `index` when named; NA becomes null."""
    if index:
        frame = frame.rename_axis(index).reset_index()
    frame = frame.astype(object).where(frame.notna(), None)
    return [_record(r) for r in frame.to_dict(orient="records")]


@private.post("/search", response_model=shapes.SearchResponse, tags=["search"])
def search(request: Request, body: shapes.SearchRequest, store: StoreDep):
    """The k most similar stored cells of each query vector or stored cell, within `where`."""
    require(
        (body.vectors is None) != (body.cell_ids is None), "give exactly one of vectors or cell_ids"
    )
    queries = body.vectors if body.vectors is not None else body.cell_ids
    check_k(request, body.k, len(queries))
    require(len(queries) > 0, "no query vectors or cell ids given")
    cells = cells_table(store)
    vectors = (
        body.vectors
        if body.vectors is not None
        else np.stack([cell_vector(cells, c) for c in body.cell_ids])
    )
    found = knn(cells, vectors, body.k, where=body.where, columns=body.columns)
    results = []
    for i in range(found.cell_id.shape[0]):
        keep = np.flatnonzero(found.valid[i])
        results.append(
            [
                _record(
                    {
                        "cell_id": found.cell_id[i, j],
                        "similarity": float(found.similarity[i, j]),
                        **{c: found.columns[c][i, j] for c in body.columns if c != "cell_id"},
                    }
                )
                for j in keep
            ]
        )
    return jsonable_encoder(
        {"results": results, "search": found.params.as_dict() if found.params else {}}
    )


def model_of(request: Request):
    """The model for embedding uploads, loaded once per service."""
    from uceindex import UCEModel  # torch: imported on the first upload that needs it

    state = request.app.state
    with state.model_lock:
        if state.model is None:
            state.model = UCEModel(state.model_dir)
        return state.model


async def _upload(request: Request):
    """The multipart upload (field `file`, an .h5ad) as AnnData, plus the form's fields."""
    with tempfile.TemporaryDirectory() as tmp:
        adata, fields = await upload_to(request, Path(tmp) / "upload.h5ad")
    return adata, fields


async def upload_to(request: Request, path: Path):
    """The multipart upload (field `file`, an .h5ad) saved at `path` and read whole into
    memory: (AnnData, the form's other fields). The body cap (limits.BodyCap) counts its bytes."""
    from uceindex.io.h5ad import read_h5ad

    form = await request.form()  # read whole, under the body cap (limits.BodyCap)
    upload = form.get("file")
    require(
        upload is not None and hasattr(upload, "read"),
        "send the .h5ad as multipart form field `file`",
    )
    with open(path, "wb") as out:
        while chunk := await upload.read(1 << 20):
            out.write(chunk)
    try:
        adata = await run_in_threadpool(read_h5ad, path)
    except InputDataError:
        raise InputDataError(
            f"{upload.filename or 'the upload'} is not a readable .h5ad file"
        ) from None
    fields = {k: v for k, v in form.items() if k != "file"}
    return adata, fields


def _form_number(fields: dict, name: str, default, kind=int):
    """A form field as an int (or `kind`, e.g. float); `default` when absent or empty."""
    value = fields.get(name)
    try:
        return kind(value) if value not in (None, "") else default
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise QueryError(f"form field {name} must be {what}") from None


def _form_bool(fields: dict, name: str) -> bool:
    value = str(fields.get(name) or "false").strip().lower()
    if value not in ("true", "false", "1", "0"):
        raise QueryError(f"form field {name} must be true or false")
    return value in ("true", "1")


def form_gene_filter(fields: dict) -> GeneFilter:
    value = fields.get("gene_filter") or GeneFilter.PER_CELL.value
    try:
        return GeneFilter(value)
    except ValueError:
        choices = ", ".join(f.value for f in GeneFilter)
        raise QueryError(f"form field gene_filter must be one of {choices}") from None


def annotate_form(request: Request, fields: dict, adata) -> dict:
    """`annotate`'s arguments from an upload's form fields (k, label, where, species,
    embedding_key, gene_filter, ontology, min_score); the model is loaded only when the
    cells need embedding."""
    k = _form_number(fields, "k", 50)
    check_k(request, k, adata.n_obs)
    return {
        "k": k,
        "label": fields.get("label") or "cell_type",
        "where": fields.get("where") or None,
        "species": fields.get("species") or None,
        "embedding_key": fields.get("embedding_key") or None,
        "model": model_of(request) if _embeds(request, fields) else None,
        "gene_filter": form_gene_filter(fields),
        "ontology": _form_bool(fields, "ontology"),
        "min_score": _form_number(fields, "min_score", 0.5, float),
    }


def _embeds(request: Request, fields: dict) -> bool:
    """Whether an upload's cells are embedded here: no embedding_key, and the store's cells
    come from a model (else annotate says to pass one)."""
    info = deps.store(request).model_info()
    return not fields.get("embedding_key") and info is not None and known_model(info)


def match_form(request: Request, fields: dict, adata) -> dict:
    """`match`'s arguments from an upload's form fields: annotate's, and species, against,
    query_label, ontology_level (';'-joined terms)."""
    require(
        bool(fields.get("species")) and bool(fields.get("against")),
        "form fields species and against are required",
    )
    levels = [t for t in (fields.get("ontology_level") or "").split(";") if t]
    arguments = annotate_form(request, fields, adata)
    del arguments["ontology"]  # match rolls up to levels instead
    return {
        **arguments,
        "against": fields["against"],
        "query_label": fields.get("query_label") or None,
        "ontology_level": levels or None,
    }


def _is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith("multipart/form-data")


def _json_or_upload(model) -> dict:
    """OpenAPI for a body that is either `model` as JSON or an .h5ad upload (field `file`)."""
    body = upload_body()
    body["requestBody"]["content"]["application/json"] = {"schema": model.model_json_schema()}
    return body


def upload_body() -> dict:
    """OpenAPI for a body that is an .h5ad upload (multipart field `file`) and form fields."""
    upload = {
        "type": "object",
        "properties": {"file": {"type": "string", "format": "binary"}},
        "required": ["file"],
    }
    return {"requestBody": {"content": {"multipart/form-data": {"schema": upload}}}}


@private.post(
    "/annotate",
    response_model=shapes.AnnotateResponse,
    tags=["search"],
    openapi_extra=_json_or_upload(shapes.AnnotateRequest),
)
async def annotate(request: Request, store: StoreDep):
    """Per-cell label predictions from the k nearest labelled stored cells.

    JSON (AnnotateRequest: embeddings) or multipart: `file` (.h5ad) with form fields k,
    label, where, species, embedding_key (without it the cells are embedded with the
    store's model), gene_filter (per-cell or reference; the summary's `warnings` say
    when it is not the stored cells'), ontology and min_score (a Cell Ontology term per
    cell, scored as Cellarium CAS does; the summary names the CL version)."""
    if _is_multipart(request):
        adata, fields = await _upload(request)
        frame = await run_in_threadpool(
            annotate_cells, store, adata, **annotate_form(request, fields, adata)
        )
    else:
        body = await _json(request, shapes.AnnotateRequest)
        check_k(request, body.k, len(body.embeddings))
        frame = await run_in_threadpool(
            annotate_cells,
            store,
            np.asarray(body.embeddings, dtype=np.float32),
            k=body.k,
            label=body.label,
            where=body.where,
            neighbour_ids=body.neighbour_ids,
            ontology=body.ontology,
            min_score=body.min_score,
        )
        if body.names:
            require(len(body.names) == len(frame), "names must have one entry per embedding")
            frame.index = pd.Index(body.names)
    return annotation_answer(frame)


def annotation_answer(frame: pd.DataFrame) -> dict:
    """An `annotate` result as the API answers it: predictions and their summary."""
    summary = {k: v for k, v in summarise(frame).items() if k != "store"}  # no server paths
    summary["predicted_counts"] = {row["predicted"]: row["cells"] for row in summary["labels"]}
    return jsonable_encoder({"predictions": _rows(frame, "cell"), "summary": summary})


@private.post(
    "/match",
    response_model=shapes.MatchResponse,
    tags=["search"],
    openapi_extra=_json_or_upload(shapes.MatchRequest),
)
async def match(request: Request, store: StoreDep):
    """Cross-species matching: query cells of one species vs stored cells of `against`.

    JSON (MatchRequest) or multipart: `file` (.h5ad) with form fields species, against,
    label, query_label, k, where, embedding_key, gene_filter, ontology_level (CL terms,
    ';'-separated: match at those terms) and min_score."""
    import anndata

    if _is_multipart(request):
        adata, fields = await _upload(request)
        result = await run_in_threadpool(
            match_cells, store, adata, **match_form(request, fields, adata)
        )
    else:
        body = await _json(request, shapes.MatchRequest)
        check_k(request, body.k, len(body.embeddings))
        require(
            len(body.query_labels) == len(body.embeddings),
            "query_labels must have one entry per embedding",
        )
        adata = anndata.AnnData(
            obs=pd.DataFrame(
                {"query_label": body.query_labels},
                index=[str(i) for i in range(len(body.embeddings))],
            )
        )
        adata.obsm["embedding"] = np.asarray(body.embeddings, dtype=np.float32)
        result = await run_in_threadpool(
            match_cells,
            store,
            adata,
            species=body.species,
            against=body.against,
            label=body.label,
            query_label="query_label",
            k=body.k,
            where=body.where,
            embedding_key="embedding",
            ontology_level=body.ontology_level,
            min_score=body.min_score,
        )
    return jsonable_encoder({"cells": _rows(result.cells, "cell"), "table": _rows(result.table)})


async def _json(request: Request, shape: type[BaseModel]):
    """The JSON body as `shape`; a body that is not JSON, or not of that shape, is a 422."""
    try:
        return shape.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
