"""A small Python client for `uceindex serve`, with the same verbs as the CLI."""

from __future__ import annotations

from pathlib import Path

import httpx

from uceindex.errors import UceIndexError


class ServiceCallError(UceIndexError):
    """The service answered with an error; `status` is its HTTP status."""

    def __init__(self, status: int, kind: str, message: str):
        super().__init__(f"{message} (HTTP {status} {kind})")
        self.status = status
        self.kind = kind


class Client:
    """`Client("http://127.0.0.1:8000", token=...)`; close it or use `with`. as_of: every
    call reads the store as it was at this version or tag (`?as_of=`)."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        token: str | None = None,
        timeout: float = 120.0,
        as_of: int | str | None = None,
    ):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        params = {"as_of": str(as_of)} if as_of is not None else None
        self._http = httpx.Client(
            base_url=url.rstrip("/"), headers=headers, params=params, timeout=timeout
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs):
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise UceIndexError(
                f"cannot reach the service at {self._http.base_url}: {exc}"
            ) from None
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = {"type": "HTTPError", "message": response.text[:200]}
            raise ServiceCallError(response.status_code, error["type"], error["message"])
        return response.json()

    def health(self) -> dict:
        return self._call("GET", "/health")

    def datasets(self) -> list[dict]:
        return self._call("GET", "/datasets")

    def versions(self) -> list[dict]:
        """The store's versions, oldest first (what `uceindex versions --json` lists)."""
        return self._call("GET", "/versions")

    def qc(self, dataset: str | None = None, sample: int | None = None, **params) -> dict:
        """The atlas quality report (`uceindex qc --json` less the store path); params: k,
        label, seed."""
        params = {"dataset": dataset, "sample": sample, **params}
        return self._call("GET", "/qc", params={k: v for k, v in params.items() if v is not None})

    def cell(self, cell_id: str, embedding: bool = False) -> dict:
        return self._call("GET", f"/cells/{cell_id}", params={"embedding": embedding})

    def sql(self, sql: str, limit: int | None = None) -> dict:
        """{columns, rows, truncated, elapsed_s}; read-only, capped by the server's row limit."""
        return self._call("POST", "/sql", json={"sql": sql, "limit": limit})

    def search(
        self,
        vectors=None,
        cell_ids: list[str] | None = None,
        k: int = 50,
        where: str | None = None,
        columns: list[str] = (),
    ) -> dict:
        """Neighbours of each query vector (n, D) or stored cell id: {results, search}."""
        body = {"k": k, "where": where, "columns": list(columns)}
        if vectors is not None:
            body["vectors"] = [list(map(float, v)) for v in vectors]
        if cell_ids is not None:
            body["cell_ids"] = list(cell_ids)
        return self._call("POST", "/search", json=body)

    def annotate(
        self, query, k: int = 50, label: str = "cell_type", where: str | None = None, **fields
    ) -> dict:
        """`query`: an .h5ad path (uploaded; fields species/embedding_key) or embeddings (n, D)."""
        if isinstance(query, (str, Path)):
            return self._upload("/annotate", query, k=k, label=label, where=where, **fields)
        body = {
            "embeddings": [list(map(float, v)) for v in query],
            "k": k,
            "label": label,
            "where": where,
            **fields,
        }
        return self._call("POST", "/annotate", json=body)

    def match(
        self, query, species: str, against: str, k: int = 50, label: str = "cell_type", **fields
    ) -> dict:
        """`query`: an .h5ad path (fields query_label/embedding_key) or embeddings with query_labels=."""
        if isinstance(query, (str, Path)):
            return self._upload(
                "/match", query, species=species, against=against, k=k, label=label, **fields
            )
        body = {
            "embeddings": [list(map(float, v)) for v in query],
            "species": species,
            "against": against,
            "k": k,
            "label": label,
            **fields,
        }
        return self._call("POST", "/match", json=body)

    def _upload(self, route: str, path, **fields) -> dict:
        data = {k: str(v) for k, v in fields.items() if v is not None}
        with open(path, "rb") as f:
            return self._call(
                "POST",
                route,
                files={"file": (Path(path).name, f, "application/octet-stream")},
                data=data,
            )
