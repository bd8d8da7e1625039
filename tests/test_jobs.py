"""The service's jobs: progress, results, one-line errors, cancelling, a bounded pool, expiry."""

from __future__ import annotations

import threading
import time

import pytest

from uceindex.errors import QueryError
from uceindex.service.errors import NotFound
from uceindex.service.jobs import JobConflict, Jobs


def _wait(jobs: Jobs, job_id: str, timeout: float = 10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = jobs.get(job_id)
        if job.state not in ("queued", "running"):
            return job
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} still {job.state}")


@pytest.fixture
def jobs():
    jobs = Jobs(ttl_s=60, workers=1)
    yield jobs
    jobs.close()


def test_a_job_reports_progress_then_its_result_and_files(jobs):
    seen = []
    release = threading.Event()

    def work(job):
        job.progress(1, 4, "embedding")
        seen.append(job.as_dict())
        release.wait(5)
        job.add_file("out.csv").write_text("cell,predicted\n")
        return {"answer": 42}

    job_id, folder = jobs.folder()
    jobs.submit(job_id, "annotate", work)
    deadline = time.time() + 5
    while not seen and time.time() < deadline:
        time.sleep(0.01)
    running = jobs.get(job_id).as_dict()
    assert running["state"] == "running"
    assert (running["stage"], running["done"], running["total"]) == ("embedding", 1, 4)
    with pytest.raises(JobConflict, match="is running"):
        jobs.result(job_id)
    release.set()
    done = _wait(jobs, job_id)
    assert done.state == "done" and jobs.result(job_id).result == {"answer": 42}
    assert done.files == ["out.csv"] and (folder / "out.csv").is_file()


def test_a_failed_job_keeps_the_first_line_of_its_error(jobs):
    def work(job):
        raise QueryError("k = 99 but the reference holds only 5 labelled cells: lower --k\nmore")

    job_id, _ = jobs.folder()
    jobs.submit(job_id, "annotate", work)
    job = _wait(jobs, job_id)
    assert job.state == "failed"
    assert job.error == "k = 99 but the reference holds only 5 labelled cells: lower --k"
    with pytest.raises(JobConflict, match="lower --k"):
        jobs.result(job_id)


def test_a_bug_in_a_job_is_not_shown_to_the_user(jobs):
    def work(job):
        raise KeyError("/srv/secret/path")

    job_id, _ = jobs.folder()
    jobs.submit(job_id, "annotate", work)
    job = _wait(jobs, job_id)
    assert job.state == "failed" and job.error == "internal error: see the server log"


def test_cancel_stops_a_running_job_and_a_queued_one_never_starts(jobs):
    """One worker: the second job waits queued; cancelling both stops the first at its next
    progress call and the second before it starts."""
    started = []

    def work(job):
        started.append(job.id)
        for i in range(1000):
            job.progress(i, 1000, "searching")
            time.sleep(0.01)
        return {}

    first, _ = jobs.folder()
    second, _ = jobs.folder()
    jobs.submit(first, "annotate", work)
    jobs.submit(second, "annotate", work)
    time.sleep(0.1)
    assert jobs.get(second).state == "queued"
    jobs.cancel(second)
    jobs.cancel(first)
    assert _wait(jobs, first).state == "cancelled"
    time.sleep(0.1)
    assert jobs.get(second).state == "cancelled" and started == [first]


def test_ended_jobs_and_their_folders_go_after_the_ttl():
    jobs = Jobs(ttl_s=0.2, workers=1)
    try:
        job_id, folder = jobs.folder()
        jobs.submit(job_id, "annotate", lambda job: {})
        _wait(jobs, job_id)
        assert folder.is_dir()
        time.sleep(0.3)
        with pytest.raises(NotFound, match="no job"):
            jobs.get(job_id)
        assert not folder.exists()
    finally:
        jobs.close()
    assert not jobs.root.exists()
