"""Caps on what one request to the service may ask for (`uceindex serve --max-...`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 512 * 1024 * 1024
    max_k: int = 1000
    max_queries: int = 10_000  # vectors or cells in one search / annotate request
    max_rows: int = 10_000  # rows a SQL request returns
    sql_timeout_s: float = 30.0


JOB_TTL_S = 3600.0  # seconds a finished job's result stays downloadable (`--job-ttl`)
