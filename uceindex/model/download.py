"""Fetch the official UCE model files from Figshare into one model directory.

The files are several GB (all_tokens.torch alone is ~2.9 GB), so a dropped connection must
not cost the whole download: each file streams into `<file>.part`, a later run asks for the
rest with an HTTP Range request, and only a complete file is renamed into place. Figshare
publishes no checksums we can pin here, so the first complete download records each file's
size and sha256 in the manifest, and later runs check the files against it (trust on first
use). Only the standard library is used, so downloading needs no extra dependency.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from http.client import HTTPException
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

from uceindex.atomic import written_whole
from uceindex.errors import DownloadError
from uceindex.model.files import (
    CHECKPOINTS,
    FIGSHARE_URL,
    MANIFEST_FILE,
    PROTEIN_EMBEDDINGS_DIR,
    SHARED_FILES,
    TRAINING_SPECIES,
    cache_dir,
    protein_embedding_file,
    resolve_model_dir,
)

CHUNK_BYTES = 1 << 20  # read/write/hash block; progress is reported once per block
ARCHIVE = "protein_embeddings.tar.gz"
USER_AGENT = "uceindex (+https://github.com/snap-stanford/UCE model files)"
# Python >= 3.11.4 / 3.10.12 ship tarfile's "data" filter; older ones rely on _check_member.
_TAR_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}

Progress = Callable[[str, int, "int | None"], None]


def download_model(
    name: str,
    dest: str | os.PathLike | None = None,
    *,
    base_url: str = FIGSHARE_URL,
    progress: Progress | None = None,
    timeout: float = 30,
) -> Path:
    """Download model `name` ("4layer" or "33layer") into `dest` and return that directory.

    `dest` defaults to `cache_dir()/name` (~/.cache/uceindex/4layer). Idempotent: complete
    files are checked against the manifest, not fetched again; an interrupted file resumes.
    `progress(file_name, done_bytes, total_bytes_or_None)` is called as bytes arrive.
    `timeout` is seconds without an answer or data before giving up, not a total.
    """
    if name not in CHECKPOINTS:
        raise DownloadError(f"unknown model {name!r}: choose one of {', '.join(CHECKPOINTS)}")
    dest = Path(dest).expanduser() if dest is not None else cache_dir() / name
    checkpoint, checkpoint_id = CHECKPOINTS[name]
    others = [n for n, _ in CHECKPOINTS.values() if n != checkpoint and (dest / n).exists()]
    if others:
        raise DownloadError(
            f"{dest} already holds {others[0]}; keep one model per directory "
            f"(their embeddings live in different spaces): pass another --dir"
        )
    dest.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(dest)
    manifest["model"] = name
    for file_name, file_id in {checkpoint: checkpoint_id, **SHARED_FILES}.items():
        path, entry = dest / file_name, manifest["files"].get(file_name)
        if _unpacked_archive(path):
            continue
        if path.is_file() and entry is not None:
            problem = _check_file(path, entry)
            if problem:
                raise DownloadError(
                    f"{problem}: delete it and run `uceindex models download {name}` again"
                )
            if progress:
                progress(file_name, entry["size"], entry["size"])
            continue
        if not path.is_file():
            _fetch(base_url.format(id=file_id), path, progress, timeout)
        manifest["files"][file_name] = {"figshare_id": file_id, **_measure(path)}
        _write_manifest(dest, manifest)
    if not _has_protein_embeddings(dest):
        _extract(dest / ARCHIVE, dest)
    return dest


def verify_model(dest: str | os.PathLike | None = None) -> list[str]:
    """Problems with a model directory against its manifest, one line each; [] if it is sound.

    `dest` is looked up as `resolve_model_dir` does. Hashes every file, so it reads them all.
    """
    dest = resolve_model_dir(dest)
    if not (dest / MANIFEST_FILE).is_file():
        return [
            f"no {MANIFEST_FILE} in {dest}: nothing recorded to check against; "
            f"`uceindex models download 4layer|33layer --dir {dest}` records it"
        ]
    try:
        manifest = _read_manifest(dest)
    except DownloadError as exc:
        return [str(exc)]
    problems = [
        _check_file(dest / n, e)
        for n, e in sorted(manifest["files"].items())
        if not _unpacked_archive(dest / n)
    ]
    problems += [
        f"{PROTEIN_EMBEDDINGS_DIR}/{protein_embedding_file(s)} is missing from {dest}"
        for s in TRAINING_SPECIES
        if not (dest / PROTEIN_EMBEDDINGS_DIR / protein_embedding_file(s)).is_file()
    ]
    return [p for p in problems if p]


def _fetch(url: str, path: Path, progress: Progress | None, timeout: float) -> None:
    part = path.with_name(path.name + ".part")
    done = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if done:
        headers["Range"] = f"bytes={done}-"
    host = urlsplit(url).netloc
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as exc:
        if exc.code == 416 and done:  # the .part is not a prefix the server knows: start over
            part.unlink()
            return _fetch(url, path, progress, timeout)
        raise DownloadError(
            f"{host} answered HTTP {exc.code} {exc.reason} for {path.name} ({url}): try again "
            f"later, or copy the official files into {path.parent} by hand (see docs/models.md)"
        ) from None
    except (OSError, HTTPException) as exc:
        raise DownloadError(
            f"cannot reach {host} ({_reason(exc)}): check the network, or copy the official "
            f"files into {path.parent} by hand (see docs/models.md)"
        ) from None
    with response:
        total = _int_or_none(response.headers.get("Content-Length"))
        resumed = response.status == 206
        if resumed:
            m = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
            if not m or int(m[1]) != done:
                if not done:
                    raise DownloadError(
                        f"{host} sent a part of {path.name} that was not asked for: try again later"
                    )
                part.unlink()  # not the range we asked for: start over
                return _fetch(url, path, progress, timeout)
            total = _int_or_none(m[2])
        else:
            done = 0  # 200: the server sent the whole file, so the .part is rewritten
        with open(part, "ab" if resumed else "wb") as out:
            while True:
                try:
                    chunk = response.read(CHUNK_BYTES)
                except (OSError, HTTPException) as exc:
                    raise DownloadError(
                        f"download of {path.name} from {host} stopped at {done} bytes "
                        f"({_reason(exc)}): run the command again to resume"
                    ) from None
                if not chunk:
                    break
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(path.name, done, total)
    if total is not None and done != total:
        raise DownloadError(
            f"download of {path.name} from {host} stopped at {done} of {total} bytes: "
            "run the command again to resume"
        )
    os.replace(part, path)


def _extract(archive: Path, dest: Path) -> None:
    """Unpack into a scratch folder first, so a bad archive leaves nothing in `dest`."""
    scratch = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar:
                    _check_member(member, archive)
                    tar.extract(member, scratch, **_TAR_FILTER)
        except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise DownloadError(
                f"{archive} is not a readable tar.gz ({_reason(exc)}): delete it and download again"
            ) from None
        unpacked = scratch / PROTEIN_EMBEDDINGS_DIR
        if not unpacked.is_dir():
            raise DownloadError(
                f"{archive} holds no {PROTEIN_EMBEDDINGS_DIR}/ folder: it is not the official "
                "archive; delete it and download again"
            )
        target = dest / PROTEIN_EMBEDDINGS_DIR
        target.mkdir(exist_ok=True)
        for f in sorted(unpacked.iterdir()):
            if f.is_file():
                os.replace(f, target / f.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
        raise DownloadError(
            f"{archive.name} holds an unsafe entry {member.name!r}: it is not the official "
            "archive; delete it and download again"
        )


def _unpacked_archive(path: Path) -> bool:
    """The archive may be deleted once unpacked (it is GBs); the model reads only the folder."""
    return path.name == ARCHIVE and not path.exists() and _has_protein_embeddings(path.parent)


def _has_protein_embeddings(dest: Path) -> bool:
    folder = dest / PROTEIN_EMBEDDINGS_DIR
    return all((folder / protein_embedding_file(s)).is_file() for s in TRAINING_SPECIES)


def _measure(path: Path) -> dict:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK_BYTES):
            h.update(block)
    return {"size": path.stat().st_size, "sha256": h.hexdigest()}


def _check_file(path: Path, entry: dict) -> str | None:
    """One line naming what is wrong with `path`, or None. Size first: it costs nothing."""
    if not path.is_file():
        return f"{path.name} is missing from {path.parent}"
    size = path.stat().st_size
    if size != entry["size"]:
        return f"{path} is {size} bytes, but {entry['size']} were recorded in {MANIFEST_FILE}"
    if _measure(path)["sha256"] != entry["sha256"]:
        return f"{path} does not match the sha256 recorded in {MANIFEST_FILE} (it changed on disk)"
    return None


def _read_manifest(dest: Path) -> dict:
    path = dest / MANIFEST_FILE
    if not path.exists():
        return {"files": {}}
    try:
        manifest = json.loads(path.read_text())
        entries = manifest["files"].values()
        if not all(isinstance(e, dict) and {"size", "sha256"} <= e.keys() for e in entries):
            raise ValueError("a file entry lacks size or sha256")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DownloadError(
            f"{path} is not a valid manifest ({_reason(exc)}): delete it; the next download "
            "records the checksums again"
        ) from None
    return manifest


def _write_manifest(dest: Path, manifest: dict) -> None:
    with written_whole(dest / MANIFEST_FILE) as scratch:
        scratch.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _reason(exc: BaseException) -> str:
    """A one-line reason: urllib wraps the socket error in `.reason`."""
    reason = getattr(exc, "reason", None) or exc
    return " ".join(str(reason).split()) or type(reason).__name__
