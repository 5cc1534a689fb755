"""Bundle files: names, manifest, checksums, and moving a bundle to/from S3, without numpy.

The part of :mod:`shelfwise.bundle` that serving's cold start needs before anything heavy is
imported: the download of a bundle starts while numpy, ONNX Runtime and the HTTP layer import.
:mod:`shelfwise.bundle` re-exports every name here; callers keep importing from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from shelfwise.errors import ConflictError, InputError, NotFoundError

MODEL_FILE = "model.onnx"
# The graph's large initializers (item and user factors), beside it as ONNX external data: ONNX
# Runtime maps this file instead of parsing and copying tens of MB out of the protobuf.
MODEL_DATA_FILE = "model.onnx.data"
ITEMS_FILE = "items.npz"
ITEMS_PARQUET = "items.parquet"
USERS_FILE = "users.npz"
SIMILAR_FILE = "similar.npz"
MANIFEST_FILE = "manifest.json"
REQUIRED_FILES = (MODEL_FILE, ITEMS_FILE)

# Bytes read per chunk while hashing or streaming a bundle file.
_CHUNK = 1 << 20


class BundleError(InputError):
    """A bundle cannot be used; serving keeps its last good model when it sees one."""


class BundleMissingError(BundleError, NotFoundError):
    """The bundle, or a file it needs, is not there."""


class BundleChecksumError(BundleError):
    """A file's sha256 differs from the manifest (truncated or tampered download)."""


class BundleMismatchError(BundleError):
    """The parts disagree: manifest vs graph I/O, item counts, user index, neighbour table."""


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    buffer = memoryview(bytearray(_CHUNK))
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            h.update(buffer[:n])
    return h.hexdigest()


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The parsed manifest, or a BundleError saying why it cannot be used."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise BundleMissingError(f"no {MANIFEST_FILE} in {directory}")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleMismatchError(f"{MANIFEST_FILE} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise BundleMismatchError(f"{MANIFEST_FILE} has no 'files' checksums")
    return manifest


def verify_checksums(directory: str | Path, manifest: Mapping[str, Any]) -> None:
    """Every file listed in the manifest exists with the listed sha256; the required ones are listed."""
    root = Path(directory)
    files: Mapping[str, str] = manifest["files"]
    for required in REQUIRED_FILES:
        if required not in files:
            raise BundleMissingError(f"manifest does not list {required}")
    for name, digest in files.items():
        if "/" in name or name.startswith("."):
            raise BundleMismatchError(f"manifest lists an unsafe file name {name!r}")
        path = root / name
        if not path.is_file():
            raise BundleMissingError(f"{name} is listed in the manifest but missing")
        actual = file_sha256(path)
        if actual != digest:
            raise BundleChecksumError(
                f"{name}: sha256 {actual[:12]}... differs from manifest {str(digest)[:12]}..."
            )


# --------------------------------------------------------------------------- S3


def upload_bundle(
    s3: Any, directory: str | Path, bucket: str, prefix: str, *, overwrite: bool = False
) -> list[str]:
    """Upload a verified bundle under ``s3://bucket/prefix/``; the manifest goes last.

    Readers look for the manifest first, so a half-finished upload is never taken for a
    bundle. Versions are immutable: an existing manifest raises ConflictError unless
    ``overwrite``. Returns the keys written.
    """
    root = Path(directory)
    manifest = read_manifest(root)
    verify_checksums(root, manifest)
    prefix = prefix.strip("/")
    manifest_key = f"{prefix}/{MANIFEST_FILE}"
    if not overwrite:
        try:
            s3.head_object(Bucket=bucket, Key=manifest_key)
        except s3.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise
        else:
            raise ConflictError(f"s3://{bucket}/{manifest_key} already exists")
    keys = []
    for name in sorted(manifest["files"]):
        key = f"{prefix}/{name}"
        s3.upload_file(
            str(root / name), bucket, key, ExtraArgs={"Metadata": {"sha256": manifest["files"][name]}}
        )
        keys.append(key)
    s3.upload_file(str(root / MANIFEST_FILE), bucket, manifest_key)
    keys.append(manifest_key)
    return keys


# Directories this process downloaded or verified, with the stat of their files then: a copy whose
# files are unchanged (same inode, size and mtime) is not hashed again, e.g. when serving's cold
# start prefetches a bundle and then loads it. A copy written to since is verified again.
_verified: dict[str, tuple[tuple[str, int, int, int], ...]] = {}
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _key(target: Path) -> str:
    return os.path.abspath(target)


def _fingerprint(target: Path) -> tuple[tuple[str, int, int, int], ...] | None:
    try:
        stats = [(p.name, p.stat()) for p in sorted(target.iterdir())]
    except OSError:
        return None
    return tuple((name, st.st_ino, st.st_size, st.st_mtime_ns) for name, st in stats)


def _remember_verified(target: Path) -> None:
    fingerprint = _fingerprint(target)
    if fingerprint is not None:
        _verified[_key(target)] = fingerprint


def _download_lock(target: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(_key(target), threading.Lock())


def cached_copy_verified(target: Path) -> bool:
    """Whether ``target`` holds a bundle whose checksums match (reusable); a bad copy is removed.

    A copy this process verified, whose files have not changed since, is not hashed again.
    """
    known = _verified.pop(_key(target), None)
    if not (target / MANIFEST_FILE).is_file():
        return False
    if known is not None and known == _fingerprint(target):
        _verified[_key(target)] = known
        return True
    try:
        verify_checksums(target, read_manifest(target))
    except BundleError:
        shutil.rmtree(target, ignore_errors=True)
        return False
    _remember_verified(target)
    return True


def download_bundle(
    s3: Any,
    bucket: str,
    prefix: str,
    directory: str | Path,
    *,
    skip_files: tuple[str, ...] = (ITEMS_PARQUET,),
) -> Path:
    """Download ``s3://bucket/prefix/`` into ``directory`` and verify it; return the directory.

    Files go to a temporary sibling directory that is renamed into place only after every
    checksum matches, so a crash or a bad object never leaves a half bundle where a reader
    looks. A directory that already holds a verified copy is reused (warm containers, /tmp).
    ``skip_files`` are listed-but-unneeded files not fetched (serving skips the parquet copy);
    they are dropped from the local manifest's checksum list. Built for serving's cold start:
    one plain GET per file, all files at once, each hashed while it streams to disk (one pass
    over the bytes, no second read to verify, no ranged multipart transfers, which pay off for
    files in the gigabytes, not tens of megabytes).
    """
    target = Path(directory)
    # A second caller for the same directory (a prefetch, then the load) waits for the first.
    with _download_lock(target):
        if not cached_copy_verified(target):
            _download(s3, bucket, prefix.strip("/"), target, skip_files)
            _remember_verified(target)
    return target


def _download(s3: Any, bucket: str, prefix: str, target: Path, skip_files: tuple[str, ...]) -> None:
    """Fetch every listed file into a staging directory, hashing as it streams; rename into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    try:
        (staging / MANIFEST_FILE).write_bytes(_get(s3, bucket, f"{prefix}/{MANIFEST_FILE}").read())
        manifest = read_manifest(staging)
        files = {k: str(v) for k, v in manifest["files"].items() if k not in skip_files}
        for name in files:
            if "/" in name or name.startswith("."):
                raise BundleMismatchError(f"manifest lists an unsafe file name {name!r}")
        if MODEL_FILE not in files:
            raise BundleMissingError(f"manifest does not list {MODEL_FILE}")

        def fetch(name: str) -> None:
            body = _get(s3, bucket, f"{prefix}/{name}")
            digest = hashlib.sha256()
            # into one reused buffer: each byte is copied once from the socket, not once more
            # into a new bytes object per chunk (tens of ms of a cold start at 70 MB)
            buffer = memoryview(bytearray(_CHUNK))
            with open(staging / name, "wb") as out:
                while n := body.readinto(buffer):
                    digest.update(buffer[:n])
                    out.write(buffer[:n])
            if digest.hexdigest() != files[name]:
                raise BundleChecksumError(
                    f"{name}: sha256 {digest.hexdigest()[:12]}... differs from manifest {files[name][:12]}..."
                )

        with ThreadPoolExecutor(max_workers=max(len(files), 1), thread_name_prefix="fetch") as pool:
            for done in [pool.submit(fetch, name) for name in files]:
                done.result()
        if len(files) != len(manifest["files"]):
            manifest["files"] = files
            (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        shutil.rmtree(target, ignore_errors=True)
        staging.replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _get(s3: Any, bucket: str, key: str) -> Any:
    """The streaming body of an object; BundleMissingError when it is not there."""
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"]
    except s3.exceptions.ClientError as exc:
        raise BundleMissingError(f"s3://{bucket}/{key} is missing: {exc}") from exc
