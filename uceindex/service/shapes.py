"""Request and response shapes of the HTTP API (pydantic), exported to schemas/openapi.json."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _rectangular(rows: list[list[float]]) -> list[list[float]]:
    widths = sorted({len(row) for row in rows})
    if len(widths) > 1:
        shown = ", ".join(map(str, widths[:4])) + (", ..." if len(widths) > 4 else "")
        raise ValueError(f"every vector must have the same length, got lengths {shown}")
    return rows


# (n, D) vectors as rows: at least one, none empty, all of one length
Matrix = Annotated[
    list[Annotated[list[float], Field(min_length=1)]],
    Field(min_length=1),
    AfterValidator(_rectangular),
]


class Health(BaseModel):
    status: str
    version: str
    cells: int
    model: dict | None


class Dataset(BaseModel):
    model_config = ConfigDict(extra="allow")

    dataset_id: str
    species: str | None = None
    status: str | None = None
    n_cells: int | None = None


class Version(BaseModel):
    """One version of the store's history (uceindex versions --json)."""

    version: int | None
    time: str | None
    action: str
    dataset_id: str | None
    detail: str
    tags: list[str]
    tables: dict[str, int | None]
    uceindex_version: str | None


class SqlRequest(BaseModel):
    sql: str
    limit: int | None = Field(None, ge=1)


class SqlResponse(BaseModel):
    columns: list[str]
    rows: list[list]
    truncated: bool
    elapsed_s: float


class SearchRequest(BaseModel):
    vectors: Matrix | None = None
    cell_ids: list[str] | None = None
    k: int = 50
    where: str | None = None
    columns: list[str] = []


class Neighbour(BaseModel):
    model_config = ConfigDict(extra="allow")

    cell_id: str
    similarity: float


class SearchResponse(BaseModel):
    results: list[list[Neighbour]]
    search: dict


class AnnotateRequest(BaseModel):
    """Embeddings as JSON; to annotate an .h5ad, POST it as multipart form field `file`."""

    embeddings: Matrix
    names: list[str] | None = None
    k: int = 50
    label: str = "cell_type"
    where: str | None = None
    neighbour_ids: bool = False
    ontology: bool = False  # also call a Cell Ontology term per cell (docs/ontology.md)
    min_score: float = 0.5  # with ontology: the share of neighbour weight a term needs


class AnnotateResponse(BaseModel):
    predictions: list[dict]
    summary: dict


class MatchRequest(BaseModel):
    """Embeddings and their own labels as JSON; or an .h5ad as multipart field `file`."""

    embeddings: Matrix
    query_labels: list[str | None]
    species: str
    against: str
    k: int = 50
    label: str = "cell_type"
    where: str | None = None
    ontology_level: list[str] | None = None  # match at these CL terms (ids or labels)
    min_score: float = 0.5


class MatchResponse(BaseModel):
    cells: list[dict]
    table: list[dict]


class Atlas(BaseModel):
    """The web page's overview: the store's model, data sets and cells by species and label."""

    cells: int
    model: dict | None
    label: str | None
    obs_columns: list[str]
    datasets: list[dict]
    counts: list[dict]


class DatasetDetail(BaseModel):
    dataset: dict
    obs_columns: list[dict]
    reasons: list[dict]
    rejects: list[dict]


class SimilarResponse(BaseModel):
    cell_id: str
    neighbours: list[dict]


class JobState(BaseModel):
    """A job: state queued, running, done, failed or cancelled; progress done of total."""

    id: str
    kind: str
    state: str
    stage: str | None
    done: int
    total: int
    error: str | None
    created: float
    ended: float | None
    files: list[str]
    parent: str | None


class ErrorDetail(BaseModel):
    type: str  # QueryError, ValidationError, Unauthorized, NotFound, TooLarge, ...
    message: str  # one line: what was wrong, and what to do


class Error(BaseModel):
    """The body of every error answer."""

    error: ErrorDetail


ERRORS = {  # the error answers of the private routes, documented in the OpenAPI
    status: {"model": Error, "description": description}
    for status, description in (
        (400, "the request cannot be answered as it is (the message says why)"),
        (401, "missing or wrong bearer token"),
        (404, "no such cell, data set or job"),
        (409, "the store is damaged (`uceindex check`) or the data set is being ingested"),
        (413, "request body over the limit"),
        (422, "malformed body: not JSON, a missing field, a value of the wrong type"),
    )
}
