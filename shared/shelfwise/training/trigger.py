"""When and where to train: the decision the ``train_model`` function takes on every invocation.

- *When*: the daily schedule always trains; the hourly check trains only when at least
  ``min_new_events`` curated events arrived since the last registered version (row counts read
  from Parquet footers with ranged GETs, so the check downloads kilobytes, not the data).
- *Where*: in process when the training libraries are importable here (a container-image Lambda,
  the local runtime, a Batch container) and the curated data is small enough; otherwise it
  submits the AWS Batch job on Fargate, which runs ``shelfwise train`` on the same code.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow.parquet as pq

TRAINING_MODULES = ("scipy", "implicit", "onnx", "onnxruntime")


@dataclass(frozen=True)
class CuratedObject:
    key: str
    size: int
    last_modified: datetime


@dataclass(frozen=True)
class Decision:
    """``action`` is ``skip``, ``train_here`` or ``submit_batch``, with the facts behind it."""

    action: str
    reason: str
    new_events: int | None
    curated_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "reason": self.reason,
            "new_events": self.new_events,
            "curated_bytes": self.curated_bytes,
        }


def list_curated(s3: Any, bucket: str, prefix: str = "curated/events/") -> list[CuratedObject]:
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(".parquet"):
                out.append(CuratedObject(obj["Key"], int(obj["Size"]), obj["LastModified"]))
    return out


class _RangedS3File:
    """A read-only, seekable file over an S3 object that fetches only the byte ranges asked for."""

    def __init__(self, s3: Any, bucket: str, key: str, size: int) -> None:
        self.s3, self.bucket, self.key, self.size, self.pos = s3, bucket, key, size, 0
        self.closed = False

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 else self.size + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self.pos + n)
        if end <= self.pos:
            return b""
        rng = f"bytes={self.pos}-{end - 1}"
        data: bytes = self.s3.get_object(Bucket=self.bucket, Key=self.key, Range=rng)["Body"].read()
        self.pos += len(data)
        return data

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


def parquet_rows(s3: Any, bucket: str, obj: CuratedObject) -> int:
    """Row count of a Parquet object from its footer (two small ranged GETs)."""
    return int(pq.ParquetFile(_RangedS3File(s3, bucket, obj.key, obj.size)).metadata.num_rows)


# Families whose training needs PyTorch (the training image has it; the zip function never does).
TORCH_FAMILIES = frozenset({"sequential"})


def training_available(extra_families: str = "") -> bool:
    """Whether this process can train the default families plus ``extra_families`` (the zip Lambda
    cannot train at all: see docs/training.md, "size"; PyTorch families need the training image)."""
    needed = list(TRAINING_MODULES)
    if TORCH_FAMILIES & {f.strip() for f in extra_families.split(",")}:
        needed.append("torch")
    return all(importlib.util.find_spec(m) is not None for m in needed)


def decide(
    s3: Any,
    bucket: str,
    *,
    mode: str,
    last_trained_at: datetime | None,
    min_new_events: int,
    in_process_max_bytes: int,
    can_train_here: bool,
) -> Decision:
    """Whether to train now (``mode`` ``train`` or ``if_new_data``) and where."""
    objects = list_curated(s3, bucket)
    total = sum(o.size for o in objects)
    if not objects:
        return Decision("skip", "no curated data yet", 0, 0)
    new_events: int | None = None
    if mode == "if_new_data":
        fresh = [o for o in objects if last_trained_at is None or o.last_modified > last_trained_at]
        new_events = sum(parquet_rows(s3, bucket, o) for o in fresh)
        if new_events < min_new_events:
            return Decision("skip", f"{new_events} new events < {min_new_events}", new_events, total)
    elif mode != "train":
        return Decision("skip", f"unknown mode {mode!r}", None, total)
    if can_train_here and total <= in_process_max_bytes:
        return Decision("train_here", "data fits this function", new_events, total)
    why = "training libraries not in this package" if not can_train_here else "data too large for a function"
    return Decision("submit_batch", why, new_events, total)
