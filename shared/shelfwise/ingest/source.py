"""Opening a raw source: detect its container and format, iterate its parsed blocks, read ahead."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from shelfwise.ingest import readers
from shelfwise.ingest.errors import UnknownFormatError
from shelfwise.ingest.formats import ADAPTERS, Adapter, adapter_for, headerless_source
from shelfwise.ingest.readers import RawChunk


@dataclass
class Source:
    adapter: Adapter
    kind: str
    chunks: Iterator[RawChunk]
    delimiter: str = ","
    column_types: dict[str, pa.DataType] = field(default_factory=dict)


def open_source(path: Path, fmt: str = "auto", block_bytes: int = readers.BLOCK_BYTES) -> Source | None:
    """Detect the container and format of a local file and return its chunk iterator (None if empty)."""
    kind, head = readers.peek(path)
    if kind == "empty":
        return None
    if kind == "parquet":
        return Source(
            adapter_for(readers.parquet_columns(path), fmt), kind, readers.read_parquet_chunks(path)
        )
    if kind == "jsonl":
        if fmt not in ("auto", "native"):
            raise UnknownFormatError(f"JSON Lines are read as the native format, not {fmt!r}")
        return Source(ADAPTERS["native"], kind, readers.read_jsonl_chunks(path))
    nl = head.find(b"\n")
    first_line = head if nl < 0 else head[:nl]
    try:
        candidates = readers.header_fields(first_line)
    except UnicodeDecodeError as exc:
        raise UnknownFormatError("the first line (header) is not UTF-8 text") from exc
    except Exception as exc:  # csv.Error on a broken header line
        raise UnknownFormatError(f"the first line cannot be parsed as a CSV header: {exc}") from exc
    adapter: Adapter | None = None
    delimiter = ","
    has_header = True
    names: list[str] = []
    errors: list[str] = []
    for delim, fields_ in candidates.items():
        if len(fields_) < 2:
            continue
        try:
            adapter = adapter_for(fields_, fmt)
        except UnknownFormatError as exc:
            errors.append(str(exc))
            continue
        delimiter, names = delim, fields_
        break
    if adapter is None:
        headerless = headerless_source(first_line.decode("utf-8", errors="replace"))
        if headerless is not None and fmt in ("auto", headerless[0].name):
            adapter, delimiter, names = headerless
            has_header = False
    if adapter is None:
        raise UnknownFormatError(
            errors[0] if errors else f"cannot detect a format from the header {first_line[:200]!r}"
        )
    if len(set(names)) != len(names):
        raise UnknownFormatError(f"the header repeats a column name: {names}")
    types = {n: adapter.csv_types.get(adapter.aliases.get(n, n), pa.string()) for n in names}
    chunks = readers.read_csv_chunks(
        path,
        delimiter=delimiter,
        column_names=names,
        column_types=types,
        has_header=has_header,
        block_bytes=block_bytes,
    )
    return Source(adapter, kind, chunks, delimiter, types)


_DONE = object()


def prefetch(chunks: Iterator[RawChunk], depth: int = 2) -> Iterator[RawChunk]:
    """Read and parse the next blocks on a background thread while this one is processed."""
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in chunks:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(exc)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None and stop.is_set():
                close()

    thread = threading.Thread(target=produce, name="ingest-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
