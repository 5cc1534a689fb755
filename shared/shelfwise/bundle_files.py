"""Bundle files: names, manifest, checksums, and moving a bundle to/from S3, without numpy.

The part of :mod:`shelfwise.bundle` that serving's cold start needs before anything heavy is
imported: the download of a bundle starts while numpy, ONNX Runtime and the HTTP layer import.
:mod:`shelfwise.bundle` re-exports every name here; callers keep importing from it.
"""

from __future__ import annotations

import base64
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

# Files up to this size are uploaded in one PUT, with their full-object SHA-256 checksum.
SINGLE_PUT_BYTES = 1 << 30

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
        key, sha = f"{prefix}/{name}", manifest["files"][name]
        if (root / name).stat().st_size <= SINGLE_PUT_BYTES:
            with open(root / name, "rb") as body:  # one PUT: a full-object checksum
                s3.put_object(Bucket=bucket, Key=key, Body=body, **checksummed_put_args(sha))
        else:  # multipart: S3 keeps a checksum of part checksums; readers hash the file themselves
            s3.upload_file(str(root / name), bucket, key, ExtraArgs={"Metadata": {"sha256": sha}})
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
        (staging / MANIFEST_FILE).write_bytes(_get(s3, bucket, f"{prefix}/{MANIFEST_FILE}")["Body"].read())
        manifest = read_manifest(staging)
        files = {k: str(v) for k, v in manifest["files"].items() if k not in skip_files}
        for name in files:
            if "/" in name or name.startswith("."):
                raise BundleMismatchError(f"manifest lists an unsafe file name {name!r}")
        if MODEL_FILE not in files:
            raise BundleMissingError(f"manifest does not list {MODEL_FILE}")

        def fetch(name: str) -> None:
            response = _get(s3, bucket, f"{prefix}/{name}", checksum=True)
            body, expected = response["Body"], files[name]
            # S3 vouches for the bytes when the object's stored SHA-256 (S3 checked it when the
            # bundle was uploaded, see upload_bundle) is the manifest's and the transport cannot
            # alter them unnoticed: then they are not hashed here again (~0.07 s of a cold start
            # at 60 MB). Otherwise every byte is hashed as it streams.
            vouched = response.get("IntegrityProtected") is True and response.get(
                "ChecksumSHA256"
            ) == sha256_base64(expected)
            digest = None if vouched else hashlib.sha256()
            size = 0
            # into one reused buffer: each byte is copied once from the socket, not once more
            # into a new bytes object per chunk (tens of ms of a cold start at 70 MB)
            buffer = memoryview(bytearray(_CHUNK))
            with open(staging / name, "wb") as out:
                while n := body.readinto(buffer):
                    if digest is not None:
                        digest.update(buffer[:n])
                    out.write(buffer[:n])
                    size += n
            if vouched and size != response.get("ContentLength"):
                raise BundleChecksumError(
                    f"{name}: {size} bytes read, S3 sent {response.get('ContentLength')}"
                )
            if digest is not None and digest.hexdigest() != expected:
                raise BundleChecksumError(
                    f"{name}: sha256 {digest.hexdigest()[:12]}... differs from manifest {expected[:12]}..."
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


def checksummed_put_args(hex_digest: str) -> dict[str, Any]:
    """``put_object`` arguments that store a file's SHA-256 with it: as metadata (a retry compares
    it) and as S3's checksum (S3 refuses bytes that differ; :func:`download_bundle` compares it
    with the manifest instead of hashing the file again)."""
    return {
        "Metadata": {"sha256": hex_digest},
        "ChecksumAlgorithm": "SHA256",
        "ChecksumSHA256": sha256_base64(hex_digest),
    }


def sha256_base64(hex_digest: str) -> str:
    """A hex SHA-256 (the manifest's form) as S3 writes checksums: base64 of the digest."""
    try:
        return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")
    except ValueError:
        return ""  # not a hex digest: matches no S3 checksum (the hash check then refuses it)


def _get(s3: Any, bucket: str, key: str, *, checksum: bool = False) -> Any:
    """GetObject's answer (its ``Body`` streams); BundleMissingError when the object is not there.

    ``checksum`` asks S3 for the object's stored checksums from a client that passes them through
    unverified (``passes_checksums_through``, the SDK-free one): botocore would hash the whole body
    again to check them itself.
    """
    extra = (
        {"ChecksumMode": "ENABLED"}
        if checksum and getattr(s3, "passes_checksums_through", False) is True
        else {}
    )
    try:
        return s3.get_object(Bucket=bucket, Key=key, **extra)
    except s3.exceptions.ClientError as exc:
        raise BundleMissingError(f"s3://{bucket}/{key} is missing: {exc}") from exc
