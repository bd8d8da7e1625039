"""The web page's routes: its assets, the atlas overview, and long requests as jobs.

The page (`web/`: plain HTML, CSS and an ES module, no build step) is a face like the CLI:
it calls these routes and the API's, which call the library. Its login assets are public;
everything else, plotly.js included, needs the token. Uploads become jobs (`jobs.py`):
`POST /jobs/annotate` answers at once with a job to poll, whose result and files (the
predictions as CSV and as the query .h5ad with obs columns) stay for `--job-ttl`.
"""

from __future__ import annotations

import json
import shutil
from importlib.resources import files
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from uceindex.search import annotate as annotate_cells
from uceindex.search import cell_map, similar, write_output
from uceindex.search import match as match_cells
from uceindex.search.cell_map import MAP_REFERENCE
from uceindex.search.query import LABEL
from uceindex.service import routes, shapes
from uceindex.service.deps import SqlDep, StoreDep
from uceindex.service.errors import NotFound, require
from uceindex.service.jobs import Job, Jobs
from uceindex.store.store import sql_name, sql_string

public = APIRouter()
private = APIRouter(responses=shapes.ERRORS)

WEB = files("uceindex.service") / "web"
ASSETS = {"app.js": "text/javascript", "style.css": "text/css", "favicon.svg": "image/svg+xml"}
REJECT_SAMPLE = 100  # rejected cells a data set's page lists
VECTORS = "vectors.npy"  # an annotate job's query vectors, for its map


def _jobs(request: Request) -> Jobs:
    return request.app.state.jobs


@public.get("/", include_in_schema=False)
def page():
    """The web page (login first when the service has a token)."""
    return Response(
        (WEB / "index.html").read_bytes(),
        media_type="text/html",
        headers={"Cache-Control": "no-cache"},
    )


@public.get("/web/{name}", include_in_schema=False)
def asset(name: str):
    """The page's own script, style and icon: public, since the login form needs them."""
    if name not in ASSETS:
        raise NotFound(f"no web asset {name!r}")
    return Response((WEB / name).read_bytes(), media_type=ASSETS[name])


@private.get("/web/lib/plotly.min.js", include_in_schema=False)
def plotly_js():
    """plotly.js from the installed plotly package (offline; loaded by the charting pages)."""
    import plotly

    bundle = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return FileResponse(bundle, media_type="text/javascript")


@private.get("/atlas", response_model=shapes.Atlas, tags=["web"])
def atlas(store: StoreDep, session: SqlDep, label: str = LABEL):
    """What the store holds: its model, data sets, and cells by species and `label`."""
    frame = store.datasets()
    has_label = label in store.obs_columns()
    counts = []
    if store.cells is not None:
        by = f"species, {sql_name(label)} AS label" if has_label else "species, NULL AS label"
        result = session.execute(
            f"SELECT {by}, count(*) AS cells FROM cells GROUP BY ALL ORDER BY cells DESC"
        )
        counts = [dict(zip(result.columns, row)) for row in result.rows()]
    return jsonable_encoder(
        {
            "cells": store.count(),
            "model": store.model_info(),
            "label": label if has_label else None,
            "obs_columns": store.obs_columns(),
            "datasets": routes._rows(frame),
            "counts": counts,
        }
    )


@private.get("/datasets/{dataset_id}", response_model=shapes.DatasetDetail, tags=["store"])
def dataset(dataset_id: str, store: StoreDep, session: SqlDep):
    """One data set: its row, its obs columns with the cells that have a value, its rejects
    by reason and the first REJECT_SAMPLE of them."""
    row = store.dataset(dataset_id) if store.datasets_table is not None else None
    if row is None:
        raise NotFound(f"no data set {dataset_id!r} in the store")
    ours = f"WHERE dataset_id = {sql_string(dataset_id)}"
    columns = store.obs_columns()
    filled = []
    if columns and store.cells is not None:
        counts = ", ".join(f"count({sql_name(c)})" for c in columns)
        values = session.execute(f"SELECT {counts} FROM cells {ours}").rows()[0]
        filled = [{"name": c, "cells": int(n)} for c, n in zip(columns, values) if n]
    reasons = session.execute(
        f"SELECT reason, count(*) AS cells FROM rejects {ours} GROUP BY 1 ORDER BY 2 DESC, 1"
    )
    sample = session.execute(
        f"SELECT obs_name, reason FROM rejects {ours} ORDER BY obs_name", limit=REJECT_SAMPLE
    )
    return jsonable_encoder(
        {
            "dataset": routes._record(row),
            "obs_columns": filled,
            "reasons": [dict(zip(reasons.columns, r)) for r in reasons.rows()],
            "rejects": [dict(zip(sample.columns, r)) for r in sample.rows()],
        }
    )


@private.get("/similar", response_model=shapes.SimilarResponse, tags=["search"])
def similar_cells(
    request: Request, store: StoreDep, cell_id: str, k: int = 20, where: str | None = None
):
    """The k stored cells most similar to a stored cell (itself left out), as `uceindex
    similar` lists them."""
    routes.check_k(request, k, 1)
    frame = similar(store, cell_id, k, where=where)
    return jsonable_encoder({"cell_id": cell_id, "neighbours": routes._rows(frame)})


def _job_answer(job: Job) -> Response:
    return Response(json.dumps(job.as_dict()), status_code=202, media_type="application/json")


@private.post(
    "/jobs/annotate",
    status_code=202,
    response_model=shapes.JobState,
    tags=["jobs"],
    openapi_extra=routes.upload_body(),
)
async def annotate_job(request: Request, store: StoreDep):
    """`/annotate` of an .h5ad upload as a job: form fields as there. The result is
    `/annotate`'s answer; its files predictions.csv and predictions.h5ad (the upload with
    the predictions in obs, as `uceindex annotate --out x.h5ad` writes it)."""
    jobs = _jobs(request)
    job_id, folder, adata, args = await _upload_job(request, routes.annotate_form)

    def work(job: Job) -> dict:
        frame = annotate_cells(store, adata, progress=job.progress, **args)
        job.progress(0, 1, "writing")
        write_output(frame, job.add_file("predictions.csv"))
        vectors = adata.obsm[args["embedding_key"] or "X_uce"]  # annotate embedded it there
        np.save(folder / VECTORS, np.asarray(vectors, dtype=np.float32))
        write_output(frame, job.add_file("predictions.h5ad"), adata=adata, label=args["label"])
        return routes.annotation_answer(frame)

    return _job_answer(jobs.submit(job_id, "annotate", work))


async def _upload_job(request: Request, form):
    """A new job's id and folder, the uploaded AnnData and the library call's arguments
    (`form`: routes.annotate_form or match_form). The upload is read whole, so its file
    goes at once; nothing is left behind when the upload or its fields are refused."""
    jobs = _jobs(request)
    job_id, folder = jobs.folder()
    upload = folder / "upload.h5ad"
    try:
        adata, fields = await routes.upload_to(request, upload)
        return job_id, folder, adata, form(request, fields, adata)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        upload.unlink(missing_ok=True)


@private.post(
    "/jobs/match",
    status_code=202,
    response_model=shapes.JobState,
    tags=["jobs"],
    openapi_extra=routes.upload_body(),
)
async def match_job(request: Request, store: StoreDep):
    """`/match` of an .h5ad upload as a job: form fields as there. The result is `/match`'s
    answer plus the query x reference `matrix` of shares (the heatmap of `uceindex match
    --plot`); its file match.csv is the matching table."""
    jobs = _jobs(request)
    job_id, _, adata, args = await _upload_job(request, routes.match_form)

    def work(job: Job) -> dict:
        result = match_cells(store, adata, progress=job.progress, **args)
        result.write_table(job.add_file("match.csv"))
        matrix = result.matrix
        return jsonable_encoder(
            {
                "cells": routes._rows(result.cells, "cell"),
                "table": routes._rows(result.table),
                "matrix": {
                    "query_labels": [str(i) for i in matrix.index],
                    "reference_labels": [str(c) for c in matrix.columns],
                    "shares": np.nan_to_num(matrix.to_numpy(dtype=float)).tolist(),
                },
                "species": result.species,
                "against": result.against,
            }
        )

    return _job_answer(jobs.submit(job_id, "match", work))


@private.post("/jobs/{job_id}/map", status_code=202, response_model=shapes.JobState, tags=["jobs"])
def map_job(
    request: Request,
    store: StoreDep,
    job_id: str,
    reference: int = MAP_REFERENCE,
    where: str | None = None,
    seed: int = 0,
):
    """A 2-D map (UMAP, `uceindex.cell_map`) of a done annotate job's cells among
    `reference` stored cells (seeded sample, within `where`), as a job. Its result: one
    entry per mapped cell with x, y, source (query or reference), label (predicted for
    query cells, stored for reference cells) and novel."""
    jobs = _jobs(request)
    parent = jobs.result(job_id)
    require(parent.kind == "annotate", f"job {job_id} is a {parent.kind} job: map an annotate job")
    require(1 <= reference <= MAP_REFERENCE * 5, f"reference must be 1 to {MAP_REFERENCE * 5}")
    answer = parent.result
    label = answer["summary"]["label"]
    where = where or answer["summary"]["where"]
    new_id, _ = jobs.folder()

    def work(job: Job) -> dict:
        job.progress(0, 1, "mapping")
        predictions = answer["predictions"]
        vectors = np.load(parent.folder / VECTORS)
        names = [p["cell"] for p in predictions]
        frame = cell_map(store, vectors, names, label=label, where=where, reference=reference)
        by_cell = {p["cell"]: p for p in predictions}
        cells = []
        for row in frame.to_dict("records"):
            mine = by_cell.get(row["cell"]) if row["source"] == "query" else None
            cells.append(
                {
                    "cell": row["cell"],
                    "source": row["source"],
                    "x": row["x"],
                    "y": row["y"],
                    "label": mine["predicted"] if mine else row[label],
                    "novel": bool(mine and mine.get("novel")),
                }
            )
        job.progress(1, 1, "mapping")
        return jsonable_encoder({"label": label, "cells": cells})

    return _job_answer(jobs.submit(new_id, "map", work, parent=job_id))


@private.get("/jobs", response_model=list[shapes.JobState], tags=["jobs"])
def list_jobs(request: Request):
    """The jobs kept now (running, or ended less than --job-ttl ago), newest first."""
    return [job.as_dict() for job in _jobs(request).list()]


@private.get("/jobs/{job_id}", response_model=shapes.JobState, tags=["jobs"])
def job_state(request: Request, job_id: str):
    """A job's state and progress (done of total, in its current stage); poll it."""
    return _jobs(request).get(job_id).as_dict()


@private.delete("/jobs/{job_id}", response_model=shapes.JobState, tags=["jobs"])
def cancel_job(request: Request, job_id: str):
    """Cancel a job: a queued one never starts, a running one stops at its next step."""
    return _jobs(request).cancel(job_id).as_dict()


@private.get("/jobs/{job_id}/result", response_model=dict, tags=["jobs"])
async def job_result(request: Request, job_id: str):
    """A done job's result (409 while it runs, or when it failed or was cancelled)."""
    job = _jobs(request).result(job_id)
    body = await run_in_threadpool(json.dumps, job.result)
    return Response(body, media_type="application/json")


@private.get("/jobs/{job_id}/files/{name}", tags=["jobs"])
def job_file(request: Request, job_id: str, name: str):
    """A file a done job wrote (its `files`), as a download."""
    job = _jobs(request).result(job_id)
    if name not in job.files:
        raise NotFound(f"job {job_id} has no file {name!r}; it has: {', '.join(job.files)}")
    return FileResponse(job.folder / name, filename=name)
