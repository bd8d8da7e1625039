"""Long requests as jobs: an id to poll, progress from the library's callbacks, result files.

An upload that is embedded and searched takes minutes; a browser tab should not hold a
request open that long, nor lose the answer when it is closed. A job runs in a bounded
thread pool, reports `progress(done, total, stage)` as the library calls it, writes its
files into its own folder, and is kept `ttl_s` seconds after it ends (then swept).
A cancelled job stops at its next progress call; a failed one keeps the error's one line.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from uceindex.errors import UceIndexError
from uceindex.service.errors import NotFound, ServiceError
from uceindex.service.limits import JOB_TTL_S

JOB_WORKERS = 2  # jobs that run at once; more wait queued
log = logging.getLogger("uceindex.service")


class JobCancelled(ServiceError):
    """Raised inside a job's work at its next progress call once it is cancelled."""


class JobConflict(ServiceError):
    """A job asked for what it does not have (yet): a result before it is done."""

    http_status = 409


@dataclass
class Job:
    """One job: `state` queued -> running -> done | failed | cancelled."""

    id: str
    kind: str
    folder: Path
    state: str = "queued"
    stage: str | None = None
    done: int = 0
    total: int = 0
    error: str | None = None
    created: float = field(default_factory=time.time)
    ended: float | None = None
    result: dict | None = None
    files: list[str] = field(default_factory=list)
    parent: str | None = None
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def progress(self, done: int, total: int, stage: str | None = None) -> None:
        """The library's progress callback; stops the work once the job is cancelled."""
        if self._cancel.is_set():
            raise JobCancelled("the job was cancelled")
        self.done, self.total = int(done), int(total)
        if stage:
            self.stage = stage

    def add_file(self, name: str) -> Path:
        """A path in the job's folder for a result file the job offers for download."""
        self.files.append(name)
        return self.folder / name

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "stage": self.stage,
            "done": self.done,
            "total": self.total,
            "error": self.error,
            "created": self.created,
            "ended": self.ended,
            "files": list(self.files),
            "parent": self.parent,
        }


Work = Callable[[Job], dict]  # does the job, writes its files, returns its (JSON) result


class Jobs:
    """The service's jobs, their folders under one temporary directory."""

    def __init__(self, ttl_s: float = JOB_TTL_S, workers: int = JOB_WORKERS, root=None):
        self.ttl_s = ttl_s
        self._parent = root
        self.root: Path | None = None  # made with the first job
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="uceindex-job")

    def folder(self) -> tuple[str, Path]:
        """A new job id and its (empty) folder, for a request to fill before `submit`."""
        job_id = uuid.uuid4().hex
        with self._lock:
            if self.root is None:
                self.root = Path(tempfile.mkdtemp(prefix="uceindex-jobs-", dir=self._parent))
        path = self.root / job_id
        path.mkdir()
        return job_id, path

    def submit(self, job_id: str, kind: str, work: Work, parent: str | None = None) -> Job:
        """Run `work` as job `job_id` (from `folder`) when a worker is free."""
        self.sweep()
        job = Job(job_id, kind, self.root / job_id, parent=parent)
        with self._lock:
            self._jobs[job_id] = job
        self._pool.submit(self._run, job, work)
        return job

    def _run(self, job: Job, work: Work) -> None:
        if job._cancel.is_set():
            return
        job.state = "running"
        try:
            job.result = work(job)
            job.state = "done"
        except JobCancelled:
            job.state = "cancelled"
        except UceIndexError as exc:
            job.state, job.error = "failed", str(exc).splitlines()[0] if str(exc) else "failed"
        except Exception:  # a bug: the log has it, the page gets the service's line for it
            log.exception("job %s (%s) failed", job.id, job.kind)
            job.state, job.error = "failed", "internal error: see the server log"
        finally:
            job.ended = time.time()

    def get(self, job_id: str) -> Job:
        """The job, or NotFound (unknown, or swept after its time)."""
        self.sweep()
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(
                f"no job {job_id!r}: it never existed or ended over {self.ttl_s:.0f} s ago"
            )
        return job

    def result(self, job_id: str) -> Job:
        """The job, or JobConflict when it has no result (still running, failed, cancelled)."""
        job = self.get(job_id)
        if job.state != "done":
            why = job.error or f"it is {job.state}"
            raise JobConflict(f"job {job_id} has no result: {why}")
        return job

    def list(self) -> list[Job]:
        """The jobs kept now, newest first."""
        self.sweep()
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created, reverse=True)

    def cancel(self, job_id: str) -> Job:
        """Ask the job to stop: a queued job never starts, a running one stops at its next
        progress call. An ended job stays as it is."""
        job = self.get(job_id)
        if job.state == "queued":
            job._cancel.set()
            job.state, job.ended = "cancelled", time.time()
        elif job.state == "running":
            job._cancel.set()
        return job

    def sweep(self) -> None:
        """Forget jobs that ended over ttl_s ago, and delete their folders."""
        now = time.time()
        with self._lock:
            old = [j for j in self._jobs.values() if j.ended and now - j.ended > self.ttl_s]
            for job in old:
                del self._jobs[job.id]
        for job in old:
            shutil.rmtree(job.folder, ignore_errors=True)

    def close(self) -> None:
        """Cancel what runs, wait for it, delete every job folder."""
        for job in self.list():
            if job.state in ("queued", "running"):
                self.cancel(job.id)
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
