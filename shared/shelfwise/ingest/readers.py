"""Byte-level readers: local files (plain or gzip) as CSV, JSON Lines or Parquet, in record batches.

Every reader yields ``RawChunk``s: a record batch of source columns, the 1-based source line of
each row, and the records that could not be parsed at all. Memory stays flat in the file size: a
CSV is cut into blocks at line ends and each block is parsed by ``pyarrow.csv.read_csv`` (multi-
threaded); a block that fails the fast typed parse (bad UTF-8, a non-number in a number column) is
re-parsed as raw bytes so validation can file each bad row under its reason.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from shelfwise.events import NATIVE_COLUMNS, properties_json
from shelfwise.ingest.errors import CorruptInputError
from shelfwise.served_lists import ServedListError, is_served_list, served_list_rows

BLOCK_BYTES = 8 << 20
# A single line may be this long (a 10 MB line is fine); longer is a corrupt file, not a row.
MAX_LINE_BYTES = 64 << 20
PARQUET_BATCH_ROWS = 131_072
JSONL_BATCH_LINES = 50_000
GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
BOM = b"\xef\xbb\xbf"
DELIMITERS = (",", ";", "\t", "|")


@dataclass
class Malformed:
    """A record that could not be parsed into columns (kept whole in quarantine)."""

    line: int | None
    reason: str
    raw: str


@dataclass
class RawChunk:
    batch: pa.RecordBatch
    lines: np.ndarray
    malformed: list[Malformed] = field(default_factory=list)


def _open(path: Path) -> tuple[pa.NativeFile, bool]:
    with open(path, "rb") as f:
        magic = f.read(2)
    gz = magic == GZIP_MAGIC
    return pa.input_stream(str(path), compression="gzip" if gz else None), gz


def peek(path: Path, size: int = 65536) -> tuple[str, bytes]:
    """The kind of container (``parquet``, ``jsonl``, ``csv`` or ``empty``) and its first bytes."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:4] == PARQUET_MAGIC:
        return "parquet", head
    stream, _ = _open(path)
    try:
        data = _read(stream, size)
    finally:
        stream.close()
    text = data[len(BOM) :] if data.startswith(BOM) else data
    stripped = text.lstrip()
    if not stripped:
        return "empty", b""
    if stripped[:1] == b"{":
        return "jsonl", text
    return "csv", text


def _read(stream: pa.NativeFile, size: int) -> bytes:
    try:
        return stream.read(size)
    except (OSError, pa.ArrowInvalid, EOFError, zlib.error) as exc:
        raise CorruptInputError(f"cannot read the object to the end: {exc}") from exc


def header_fields(first_line: bytes) -> dict[str, list[str]]:
    """The header split by every candidate delimiter (quoted names unquoted)."""
    text = first_line.decode("utf-8", errors="strict").rstrip("\r\n")
    return {d: [c.strip() for c in next(csv.reader([text], delimiter=d))] for d in DELIMITERS}


def _line_blocks(stream: pa.NativeFile, block_bytes: int) -> Iterator[pa.Buffer]:
    """Blocks of whole lines from a stream (gzip): each ends with a newline, except maybe the last."""
    rest = b""
    while True:
        chunk = _read(stream, block_bytes)
        if not chunk:
            if rest:
                yield pa.py_buffer(rest)
            return
        buf = rest + chunk if rest else chunk
        cut = buf.rfind(b"\n") + 1
        if cut == 0:
            if len(buf) > MAX_LINE_BYTES:
                raise CorruptInputError(f"a line is longer than {MAX_LINE_BYTES >> 20} MiB")
            rest = buf
            continue
        rest = buf[cut:]
        yield pa.py_buffer(buf[:cut])


def _last_newline(buf: pa.Buffer) -> int:
    """Offset just past the last newline of ``buf`` (0 if none), looking at the tail first."""
    view = memoryview(buf)
    tail = min(len(view), 1 << 16)
    pos = bytes(view[len(view) - tail :]).rfind(b"\n")
    if pos >= 0:
        return len(view) - tail + pos + 1
    return bytes(view).rfind(b"\n") + 1


def _file_blocks(path: Path, block_bytes: int) -> Iterator[pa.Buffer]:
    """Blocks of whole lines of a plain file, read at offsets (one copy, no re-stitching)."""
    with pa.OSFile(str(path), "rb") as f:
        size = f.size()
        offset = 0
        want = block_bytes
        while offset < size:
            f.seek(offset)
            # Never more than the line limit + 1 at once: a last line that runs to the end of the
            # object is held to the limit too, whatever the object's size.
            buf = f.read_buffer(min(want, size - offset, max(block_bytes, MAX_LINE_BYTES + 1)))
            if offset + buf.size < size:
                cut = _last_newline(buf)
                if cut == 0:  # one line longer than the block: read more of it
                    if buf.size > MAX_LINE_BYTES:
                        raise CorruptInputError(f"a line is longer than {MAX_LINE_BYTES >> 20} MiB")
                    want *= 2
                    continue
                buf = buf.slice(0, cut)
            want = block_bytes
            offset += buf.size
            yield buf


def read_csv_chunks(
    path: Path,
    *,
    delimiter: str,
    column_names: list[str],
    column_types: dict[str, pa.DataType],
    has_header: bool,
    block_bytes: int = BLOCK_BYTES,
) -> Iterator[RawChunk]:
    """Parse a CSV (plain or gzip) block by block, numbering records from the header's line 1."""
    with open(path, "rb") as f:
        gz = f.read(2) == GZIP_MAGIC
    stream = pa.input_stream(str(path), compression="gzip") if gz else None
    try:
        blocks = _line_blocks(stream, block_bytes) if stream is not None else _file_blocks(path, block_bytes)
        records_before = 1 if has_header else 0
        first = True
        for block in blocks:
            if first:
                first = False
                head = bytes(memoryview(block)[: 1 << 16])
                skip = len(BOM) if head.startswith(BOM) else 0
                if has_header:
                    nl = head.find(b"\n", skip)
                    if nl < 0:
                        nl = block.to_pybytes().find(b"\n", skip)
                    skip = nl + 1 if nl >= 0 else block.size
                block = block.slice(skip)
            if block.size < 4096 and not block.to_pybytes().strip():
                continue
            chunk = _parse_block(block, delimiter, column_names, column_types, records_before)
            records_before += chunk.batch.num_rows + len(chunk.malformed)
            yield chunk
    finally:
        if stream is not None:
            stream.close()


def _csv_read(
    block: pa.Buffer,
    delimiter: str,
    names: list[str],
    types: dict[str, pa.DataType],
    threads: bool,
    bad: list[pcsv.InvalidRow],
) -> pa.Table:
    def on_invalid(row: pcsv.InvalidRow) -> str:
        bad.append(row)
        return "skip"

    size = max(1 << 20, min(block.size // 2 + 1, 4 << 20)) if threads else block.size + 1
    return pcsv.read_csv(
        pa.BufferReader(block),
        read_options=pcsv.ReadOptions(column_names=names, use_threads=threads, block_size=size),
        parse_options=pcsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid),
        convert_options=pcsv.ConvertOptions(
            column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=True, null_values=[""]
        ),
    )


def _parse_block(
    block: pa.Buffer, delimiter: str, names: list[str], types: dict[str, pa.DataType], records_before: int
) -> RawChunk:
    bad: list[pcsv.InvalidRow] = []
    try:
        try:
            table = _csv_read(block, delimiter, names, types, True, bad)
        except pa.ArrowInvalid as exc:
            if "straddling" not in str(exc) and "block size" not in str(exc):
                raise
            bad = []
            table = _csv_read(block, delimiter, names, types, False, bad)
    except pa.ArrowInvalid:
        # A value does not fit its fast type (bad UTF-8, text in a number column): re-parse the
        # block as raw bytes and let validation say which rows are bad and why.
        bad = []
        table = _csv_read(block, delimiter, names, dict.fromkeys(names, pa.binary()), False, bad)
    if bad and bad[0].number is None:
        # Multi-threaded parsing does not number invalid rows; re-parse this block serially.
        bad = []
        table = _csv_read(block, delimiter, names, {f.name: f.type for f in table.schema}, False, bad)
    total = table.num_rows + len(bad)
    malformed_numbers = np.array([row.number for row in bad], np.int64)
    ordinals = np.setdiff1d(np.arange(1, total + 1, dtype=np.int64), malformed_numbers, assume_unique=True)
    malformed = [Malformed(records_before + int(row.number), "malformed_row", row.text) for row in bad]
    batch = table.combine_chunks().to_batches()
    rb = batch[0] if batch else pa.RecordBatch.from_pylist([], schema=table.schema)
    return RawChunk(rb, ordinals + records_before, malformed)


def read_parquet_chunks(path: Path, batch_rows: int = PARQUET_BATCH_ROWS) -> Iterator[RawChunk]:
    """Parquet in record batches; the "line" is the 1-based row number."""
    try:
        pf = pq.ParquetFile(str(path))
        start = 1
        for batch in pf.iter_batches(batch_size=batch_rows):
            yield RawChunk(batch, np.arange(start, start + batch.num_rows, dtype=np.int64))
            start += batch.num_rows
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorruptInputError(f"cannot read the Parquet object: {exc}") from exc


def parquet_columns(path: Path) -> list[str]:
    try:
        return pq.ParquetFile(str(path)).schema_arrow.names
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorruptInputError(f"cannot read the Parquet footer: {exc}") from exc


def _json_value(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _has_structure(obj: dict[str, object], known: set[str]) -> bool:
    """An array or object where a native scalar belongs (an id, a price): a wrong type, as the API says.

    Stringified it would become an id like ``["a","b"]`` that no one ever sent.
    """
    return any(isinstance(v, list | dict) for k, v in obj.items() if k in known and k != "properties")


def read_jsonl_chunks(path: Path, batch_lines: int = JSONL_BATCH_LINES) -> Iterator[RawChunk]:
    """JSON Lines of native events (the ``/events`` API's format), parsed line by line.

    Unknown keys are merged into ``properties``; a line that is not a JSON object is malformed.
    A served-list line (``{"shelfwise": "served_list", ...}``, serving's impression log line)
    becomes its impression rows, all numbered with the line's number; a broken one is quarantined
    whole as ``malformed_served_list``.
    This path runs Python per line (JSON Lines come from the API and are small); bulk logs
    should be CSV or Parquet.
    """
    with open(path, "rb") as f:
        gz = f.read(2) == GZIP_MAGIC
    reader: io.BufferedIOBase = gzip.open(path, "rb") if gz else open(path, "rb")  # noqa: SIM115
    known = set(NATIVE_COLUMNS)
    try:
        line_no = 0
        rows: list[dict[str, object]] = []
        lines: list[int] = []
        malformed: list[Malformed] = []
        while True:
            try:
                line = reader.readline(MAX_LINE_BYTES + 1)
            except (OSError, EOFError, zlib.error, gzip.BadGzipFile, pa.ArrowInvalid) as exc:
                raise CorruptInputError(f"cannot read the object to the end: {exc}") from exc
            if not line:
                break
            if len(line) > MAX_LINE_BYTES:
                raise CorruptInputError(f"a line is longer than {MAX_LINE_BYTES >> 20} MiB")
            line_no += 1
            if line_no == 1 and line.startswith(BOM):
                line = line[len(BOM) :]
            if not line.strip():
                line_no -= 1
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                malformed.append(Malformed(line_no, "invalid_utf8", line.decode("utf-8", "backslashreplace")))
                continue
            try:
                obj = json.loads(text)
            except (ValueError, RecursionError):  # deeply nested JSON is a bad row, not a crash
                malformed.append(Malformed(line_no, "malformed_row", text.rstrip("\r\n")))
                continue
            if not isinstance(obj, dict):
                malformed.append(Malformed(line_no, "malformed_row", text.rstrip("\r\n")))
                continue
            if is_served_list(obj):
                # One served list (serving's log line, docs/contracts.md): its impression rows.
                try:
                    expanded = served_list_rows(obj)
                except ServedListError:
                    malformed.append(Malformed(line_no, "malformed_served_list", text.rstrip("\r\n")))
                    continue
                for impression in expanded:
                    rows.append({k: _json_value(v) for k, v in impression.items()})
                    lines.append(line_no)
                if len(rows) + len(malformed) >= batch_lines:
                    yield _jsonl_chunk(rows, lines, malformed)
                    rows, lines, malformed = [], [], []
                continue
            if _has_structure(obj, known):
                malformed.append(Malformed(line_no, "wrong_type", text.rstrip("\r\n")))
                continue
            row: dict[str, object] = {
                k: _json_value(v) for k, v in obj.items() if k in known and k != "properties"
            }
            props = obj.get("properties")
            extras = {k: v for k, v in obj.items() if k not in known}
            if extras:
                merged = dict(props) if isinstance(props, dict) else ({"properties": props} if props else {})
                merged.update(extras)
                props = merged
            try:
                row["properties"] = properties_json(props) if props not in (None, {}) else None
            except ValueError:  # NaN or Infinity inside: not JSON any reader downstream accepts
                malformed.append(Malformed(line_no, "wrong_type", text.rstrip("\r\n")))
                continue
            rows.append(row)
            lines.append(line_no)
            if len(rows) + len(malformed) >= batch_lines:
                yield _jsonl_chunk(rows, lines, malformed)
                rows, lines, malformed = [], [], []
        if rows or malformed:
            yield _jsonl_chunk(rows, lines, malformed)
    finally:
        reader.close()


def _jsonl_chunk(rows: list[dict[str, object]], lines: list[int], malformed: list[Malformed]) -> RawChunk:
    columns = {
        name: pa.array([r.get(name) for r in rows], pa.string())
        for name in NATIVE_COLUMNS
        if any(name in r for r in rows)
    }
    batch = pa.RecordBatch.from_pydict(columns) if columns else pa.RecordBatch.from_pydict({})
    if not columns and rows:
        batch = pa.RecordBatch.from_pydict({"properties": pa.nulls(len(rows), pa.string())})
    return RawChunk(batch, np.array(lines, np.int64), malformed)
