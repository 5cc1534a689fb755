"""The S3 side of the ingest: one raw object in, curated/quarantine/summary objects out.

The object is downloaded (by version, or pinned to the notified ETag) to local temporary storage
and run through the same pipeline as ``ingest_file``; outputs are uploaded only when the whole
object was read, and the summary goes last as the commit marker. Output keys derive from
(bucket, key, version or ETag), so a redelivered notification finds the summary and does nothing.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, ValidationError

from shelfwise.bots import FLAGS_PREFIX
from shelfwise.errors import InputError
from shelfwise.events import MIN_TS_MS
from shelfwise.ingest.catalogue import S3Store, is_catalogue_key
from shelfwise.ingest.errors import SourceGoneError
from shelfwise.ingest.pipeline import (
    CURATED_PREFIX,
    QUARANTINE_PREFIX,
    SUMMARY_PREFIX,
    IngestOptions,
    IngestSummary,
    ingest_catalogue_to,
    object_hash,
    run_file,
)


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _S3Object(_Loose):
    key: str
    size: int | None = None
    eTag: str | None = None
    versionId: str | None = None


class _S3Bucket(_Loose):
    name: str


class _S3Entity(_Loose):
    bucket: _S3Bucket
    object: _S3Object


class _S3Record(_Loose):
    eventName: str
    s3: _S3Entity


class _S3Notification(_Loose):
    Records: list[_S3Record] = []
    Event: str | None = None


class ObjectRef(BaseModel):
    """One raw object named by an S3 notification (key decoded)."""

    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None


def parse_notification(body: str) -> list[ObjectRef]:
    """The objects an S3 event notification (an SQS message body) announces.

    Keys arrive URL-encoded (spaces as ``+``) and are decoded with ``unquote_plus``. The
    ``s3:TestEvent`` S3 sends when notifications are configured announces nothing. Anything that
    is not an S3 notification raises ``InputError`` (a poison message: it ends in the DLQ).
    """
    try:
        note = _S3Notification.model_validate_json(body)
    except ValidationError as exc:
        raise InputError(f"not an S3 event notification: {exc.error_count()} problem(s)") from exc
    if note.Event == "s3:TestEvent":
        return []
    if not note.Records and note.Event is None:
        raise InputError("S3 event notification without Records")
    return [
        ObjectRef(
            bucket=r.s3.bucket.name,
            key=unquote_plus(r.s3.object.key),
            version_id=r.s3.object.versionId or None,
            etag=r.s3.object.eTag or None,
            size=r.s3.object.size,
        )
        for r in note.Records
        if r.eventName.startswith("ObjectCreated")
    ]


_GONE = {"NoSuchKey", "NoSuchVersion", "404", "NotFound", "PreconditionFailed", "412"}


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def format_for_key(key: str, formats_by_prefix: dict[str, str] | None) -> str:
    """The configured format of the longest matching key prefix, else ``auto``."""
    best, fmt = -1, "auto"
    for prefix, name in (formats_by_prefix or {}).items():
        if key.startswith(prefix) and len(prefix) > best:
            best, fmt = len(prefix), name
    return fmt


def _stored_summary(s3: Any, bucket: str, key: str) -> IngestSummary | None:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if _error_code(exc) in {"NoSuchKey", "404", "NotFound"}:
            return None
        raise
    summary = IngestSummary.from_dict(json.loads(body))
    summary.skipped = True
    return summary


def ingest_object(
    s3: Any,
    bucket: str,
    key: str,
    *,
    curated_bucket: str,
    quarantine_bucket: str,
    version_id: str | None = None,
    etag: str | None = None,
    fmt: str = "auto",
    formats_by_prefix: dict[str, str] | None = None,
    pseudonymisation_key: bytes | None = None,
    min_ts_ms: int = MIN_TS_MS,
    tmp_dir: str | None = None,
) -> IngestSummary:
    """Ingest ``s3://bucket/key`` (the given version) into the curated and quarantine buckets.

    ``min_ts_ms``: events (or catalogue rows) timed before it (epoch ms) are quarantined as out of
    range; default the Unix epoch. A stored summary is answered as it is, whatever the floor now."""
    if etag is None and version_id is None:
        try:
            head = s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) in _GONE:
                raise SourceGoneError(f"s3://{bucket}/{key} no longer exists") from exc
            raise
        etag = head.get("ETag")
        version_id = head.get("VersionId")
    identity = version_id or (etag or "").strip('"')
    name = object_hash("s3", bucket, key, identity)
    summary_key = f"{SUMMARY_PREFIX}/{name}.json"
    done = _stored_summary(s3, curated_bucket, summary_key)
    if done is not None:
        return done

    request: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        request["VersionId"] = version_id
    elif etag:
        request["IfMatch"] = etag if etag.startswith('"') else f'"{etag}"'
    if fmt == "auto":
        fmt = format_for_key(key, formats_by_prefix)
    with tempfile.TemporaryDirectory(prefix="shelfwise-ingest-", dir=tmp_dir) as tmp:
        local = Path(tmp) / "object"
        try:
            response = s3.get_object(**request)
            with open(local, "wb") as f:
                for chunk in response["Body"].iter_chunks(chunk_size=8 << 20):
                    f.write(chunk)
        except ClientError as exc:
            if _error_code(exc) in _GONE:
                raise SourceGoneError(
                    f"s3://{bucket}/{key} (version {identity}) is gone or changed before it was read"
                ) from exc
            raise
        if fmt == "catalogue" or is_catalogue_key(key):  # a product catalogue (docs/catalogue.md)
            summary = ingest_catalogue_to(
                local.read_bytes(),
                S3Store(s3, curated_bucket, quarantine_bucket),
                source=f"s3://{bucket}/{key}",
                name=name,
                uploaded=response["LastModified"],
                min_ts_ms=min_ts_ms,
            )
        else:
            summary = _run_events(
                s3,
                local,
                Path(tmp),
                bucket,
                key,
                name,
                curated_bucket,
                quarantine_bucket,
                IngestOptions(fmt=fmt, pseudonymisation_key=pseudonymisation_key, min_ts_ms=min_ts_ms),
                response["LastModified"],
            )
        summary.summary = f"s3://{curated_bucket}/{summary_key}"
        s3.put_object(
            Bucket=curated_bucket,
            Key=summary_key,
            Body=json.dumps(summary.to_dict(), indent=1, sort_keys=True).encode("utf-8"),
            ContentType="application/json",
        )
    return summary


def _run_events(
    s3: Any,
    local: Path,
    tmp: Path,
    bucket: str,
    key: str,
    name: str,
    curated_bucket: str,
    quarantine_bucket: str,
    options: IngestOptions,
    uploaded: Any,
) -> IngestSummary:
    """An events object: the pipeline into a work directory, then its files to the buckets."""
    result = run_file(
        local,
        tmp / "work",
        source_key=f"s3://{bucket}/{key}",
        name=name,
        options=options,
        reference_time=uploaded,
    )
    summary = result.summary
    for rel, path in result.curated_files:
        out_key = f"{CURATED_PREFIX}/{rel}"
        s3.upload_file(str(path), curated_bucket, out_key)
        summary.outputs.append(f"s3://{curated_bucket}/{out_key}")
    if result.quarantine_file is not None:
        q_key = f"{QUARANTINE_PREFIX}/{name}.jsonl.gz"
        s3.upload_file(str(result.quarantine_file), quarantine_bucket, q_key)
        summary.quarantine = f"s3://{quarantine_bucket}/{q_key}"
    if result.bot_file is not None:
        b_key = f"{FLAGS_PREFIX}/{name}.parquet"
        s3.upload_file(str(result.bot_file), curated_bucket, b_key)
        summary.bot_flags = f"s3://{curated_bucket}/{b_key}"
    return summary
