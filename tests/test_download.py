"""download_model against a real HTTP server on 127.0.0.1 that serves fake Figshare files."""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from uceindex.errors import DownloadError
from uceindex.model import download
from uceindex.model.download import download_model, verify_model
from uceindex.model.files import (
    CHECKPOINTS,
    MANIFEST_FILE,
    PROTEIN_EMBEDDINGS_DIR,
    SHARED_FILES,
    TRAINING_SPECIES,
    protein_embedding_file,
)

CKPT_NAME, CKPT_ID = CHECKPOINTS["4layer"]
ARCHIVE_ID = SHARED_FILES["protein_embeddings.tar.gz"]


def _tar_gz(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


EMBEDDING_FILES = {
    f"{PROTEIN_EMBEDDINGS_DIR}/{protein_embedding_file(s)}": s.encode() for s in TRAINING_SPECIES
}


def _official_files() -> dict[int, bytes]:
    files = {CKPT_ID: bytes(range(256)) * 40}  # 10 KB, no two neighbouring blocks alike
    for i, (name, file_id) in enumerate(SHARED_FILES.items()):
        files[file_id] = f"{name} {i}\n".encode() * 50
    members = {**EMBEDDING_FILES, f"{PROTEIN_EMBEDDINGS_DIR}/x.pt": b"x" * 100}
    files[ARCHIVE_ID] = _tar_gz(members)
    return files


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        state = self.server.state
        rng = self.headers.get("Range")
        state["requests"].append((self.path, rng))
        m = re.fullmatch(r"/ndownloader/files/(\d+)", self.path)
        file_id = int(m[1]) if m else None
        data = state["files"].get(file_id)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if rng and not state["ignore_range"]:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng)[1])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if file_id in state["truncate"]:
            body = body[: len(body) // 2]  # then the connection closes: a dropped download
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = {
        "files": _official_files(),
        "requests": [],
        "ignore_range": False,
        "truncate": set(),
    }
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    httpd.base_url = f"http://127.0.0.1:{httpd.server_port}/ndownloader/files/{{id}}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _get(server, dest, **kw) -> Path:
    return download_model("4layer", dest, base_url=server.base_url, timeout=5, **kw)


def _expected(server) -> dict[str, bytes]:
    files = server.state["files"]
    return {CKPT_NAME: files[CKPT_ID], **{n: files[i] for n, i in SHARED_FILES.items()}}


def test_full_download_writes_files_manifest_and_protein_embeddings(server, tmp_path):
    dest = _get(server, tmp_path / "m")
    assert dest == tmp_path / "m"
    for name, data in _expected(server).items():
        assert (dest / name).read_bytes() == data
        assert not (dest / (name + ".part")).exists()
    for member, data in EMBEDDING_FILES.items():
        assert (dest / member).read_bytes() == data
    assert (dest / PROTEIN_EMBEDDINGS_DIR / "x.pt").read_bytes() == b"x" * 100
    manifest = json.loads((dest / MANIFEST_FILE).read_text())
    assert manifest["model"] == "4layer"
    for name, data in _expected(server).items():
        entry = manifest["files"][name]
        assert entry["size"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert verify_model(dest) == []
    assert [p.name for p in dest.iterdir() if p.name.startswith(".extract")] == []

    # A second run fetches nothing and leaves everything as it was.
    seen = len(server.state["requests"])
    assert _get(server, dest) == dest
    assert len(server.state["requests"]) == seen


def test_default_dest_is_user_cache(server, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("UCEINDEX_MODEL_DIR", str(tmp_path / "elsewhere"))
    dest = download_model("4layer", base_url=server.base_url, timeout=5)
    assert dest == tmp_path / "cache" / "uceindex" / "4layer"
    assert (dest / CKPT_NAME).is_file()


def test_archive_may_be_deleted_once_unpacked(server, tmp_path):
    dest = _get(server, tmp_path / "m")
    (dest / "protein_embeddings.tar.gz").unlink()
    seen = len(server.state["requests"])
    _get(server, dest)
    assert len(server.state["requests"]) == seen
    assert verify_model(dest) == []
    (dest / PROTEIN_EMBEDDINGS_DIR / protein_embedding_file("pig")).unlink()
    problems = verify_model(dest)
    assert len(problems) == 2 and all("missing" in p for p in problems)


def test_resume_sends_range_and_appends(server, tmp_path):
    dest = tmp_path / "m"
    dest.mkdir()
    data = server.state["files"][CKPT_ID]
    (dest / (CKPT_NAME + ".part")).write_bytes(data[:1000])
    _get(server, dest)
    assert (f"/ndownloader/files/{CKPT_ID}", "bytes=1000-") in server.state["requests"]
    assert (dest / CKPT_NAME).read_bytes() == data
    assert not (dest / (CKPT_NAME + ".part")).exists()


def test_part_longer_than_file_starts_over(server, tmp_path):
    dest = tmp_path / "m"
    dest.mkdir()
    data = server.state["files"][CKPT_ID]
    (dest / (CKPT_NAME + ".part")).write_bytes(data + b"extra")
    _get(server, dest)
    assert (f"/ndownloader/files/{CKPT_ID}", f"bytes={len(data) + 5}-") in server.state["requests"]
    assert (dest / CKPT_NAME).read_bytes() == data


def test_server_ignoring_range_starts_over(server, tmp_path):
    dest = tmp_path / "m"
    dest.mkdir()
    server.state["ignore_range"] = True
    (dest / (CKPT_NAME + ".part")).write_bytes(b"garbage that must not survive")
    _get(server, dest)
    assert (dest / CKPT_NAME).read_bytes() == server.state["files"][CKPT_ID]


def test_dropped_connection_keeps_part_then_resumes(server, tmp_path):
    dest = tmp_path / "m"
    server.state["truncate"] = {CKPT_ID}
    with pytest.raises(DownloadError, match="stopped at .* run the command again to resume") as exc:
        _get(server, dest)
    assert "\n" not in str(exc.value)
    part = dest / (CKPT_NAME + ".part")
    assert part.stat().st_size == len(server.state["files"][CKPT_ID]) // 2
    assert not (dest / CKPT_NAME).exists()

    server.state["truncate"] = set()
    _get(server, dest)
    assert (dest / CKPT_NAME).read_bytes() == server.state["files"][CKPT_ID]
    assert verify_model(dest) == []


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupted_file_detected_on_rerun(server, tmp_path, damage):
    dest = _get(server, tmp_path / "m")
    path = dest / "species_chrom.csv"
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[10] ^= 0xFF
    else:
        del data[-1]
    path.write_bytes(bytes(data))

    problems = verify_model(dest)
    assert len(problems) == 1 and "species_chrom.csv" in problems[0]
    with pytest.raises(DownloadError, match=r"species_chrom\.csv.*delete it") as exc:
        _get(server, dest)
    assert "\n" not in str(exc.value)


def test_verify_without_manifest_says_so(tmp_path):
    (problem,) = verify_model(tmp_path)
    assert MANIFEST_FILE in problem


def test_server_down_is_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/ndownloader/files/{{id}}"
    with pytest.raises(DownloadError, match=f"cannot reach 127.0.0.1:{port}") as exc:
        download_model("4layer", tmp_path / "m", base_url=url, timeout=2)
    message = str(exc.value)
    assert "\n" not in message and "docs/models.md" in message
    assert exc.value.__cause__ is None and exc.value.__suppress_context__
    assert list((tmp_path / "m").iterdir()) == []


def test_hand_copied_files_are_recorded_offline(server, tmp_path):
    dest = _get(server, tmp_path / "m")
    (dest / MANIFEST_FILE).unlink()
    (dest / "protein_embeddings.tar.gz").unlink()
    closed = "http://127.0.0.1:1/ndownloader/files/{id}"  # nothing may be fetched
    download_model("4layer", dest, base_url=closed, timeout=2)
    assert verify_model(dest) == []
    assert set(json.loads((dest / MANIFEST_FILE).read_text())["files"]) == {
        CKPT_NAME,
        "all_tokens.torch",
        "species_chrom.csv",
        "species_offsets.pkl",
    }


def test_http_error_is_one_line(server, tmp_path):
    del server.state["files"][SHARED_FILES["all_tokens.torch"]]
    with pytest.raises(DownloadError, match=r"HTTP 404 .* all_tokens\.torch") as exc:
        _get(server, tmp_path / "m")
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "m" / "all_tokens.torch").exists()


def test_unknown_model_name(tmp_path):
    with pytest.raises(DownloadError, match="unknown model '8layer'.*4layer, 33layer"):
        download_model("8layer", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_refuses_second_model_in_one_directory(server, tmp_path):
    dest = _get(server, tmp_path / "m")
    with pytest.raises(DownloadError, match="one model per directory"):
        download_model("33layer", dest, base_url=server.base_url)


def test_progress_reports_increasing_bytes(server, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "CHUNK_BYTES", 1024)
    calls = []
    _get(server, tmp_path / "m", progress=lambda *args: calls.append(args))
    data = server.state["files"][CKPT_ID]
    ckpt = [(done, total) for name, done, total in calls if name == CKPT_NAME]
    assert len(ckpt) == -(-len(data) // 1024) >= 5
    dones = [done for done, _ in ckpt]
    assert dones == sorted(set(dones)) and dones[-1] == len(data)
    assert {total for _, total in ckpt} == {len(data)}
    assert {name for name, _, _ in calls} == set(_expected(server))


@pytest.mark.parametrize(
    "members, links",
    [
        ({"../evil.pt": b"evil"}, None),
        ({"/tmp/evil.pt": b"evil"}, None),
        ({f"{PROTEIN_EMBEDDINGS_DIR}/../../evil.pt": b"evil"}, None),
        ({}, {f"{PROTEIN_EMBEDDINGS_DIR}/link.pt": "/etc/passwd"}),
    ],
)
def test_unsafe_tar_member_rejected(server, tmp_path, members, links):
    server.state["files"][ARCHIVE_ID] = _tar_gz({**EMBEDDING_FILES, **members}, links)
    dest = tmp_path / "a" / "m"
    with pytest.raises(DownloadError, match="unsafe entry") as exc:
        _get(server, dest)
    assert "\n" not in str(exc.value)
    assert not (dest / PROTEIN_EMBEDDINGS_DIR).exists()
    assert not any(p.name.startswith(".extract") for p in dest.iterdir())
    assert not list(tmp_path.rglob("evil.pt"))
