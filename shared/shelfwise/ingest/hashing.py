"""Vectorised string hashing for dedup and derived ids, and keyed pseudonymisation of user ids.

pyarrow has no scalar hash kernel, and a per-row ``hashlib`` call costs about a microsecond, which
is the whole ingest budget. So ids are hashed in numpy: each string is laid out in 8-byte words
(zero copy when every value has the same length, the usual case for generated ids; else padded
with zero bytes by pyarrow kernels, per width class) and the words
are folded with a multiply-xorshift mixer (MurmurHash3's finaliser), seeded with the length. The
result is a deterministic 64-bit value per string; two seeds give 128 bits for derived event ids.
Not cryptographic: pseudonymisation uses keyed BLAKE2b instead (see ``Pseudonymiser``).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import shelfwise.pseudonym

_C1 = np.uint64(0xFF51AFD7ED558CCD)
_C2 = np.uint64(0xC4CEB9FE1A85EC53)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_S33 = np.uint64(33)
_NULL = np.uint64(0x6A09E667F3BCC908)
SEED_A = 0x5BD1E9955BD1E995
SEED_B = 0x2545F4914F6CDD1D
# Rows are padded to the smallest of these widths that holds them (so one long value does not
# widen every row); longer values are hashed with BLAKE2b one by one (rare: ids are capped at 256).
_WIDTHS = (8, 16, 32, 64, 128, 256, 512)


def _fmix(h: np.ndarray) -> np.ndarray:
    h ^= h >> _S33
    h *= _C1
    h ^= h >> _S33
    h *= _C2
    h ^= h >> _S33
    return h


def _as_binary(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if arr.type in (pa.large_string(), pa.large_binary()):
        arr = arr.cast(pa.binary())
    if arr.type == pa.string():
        arr = arr.view(pa.binary())
    if arr.type != pa.binary():
        arr = pc.cast(arr, pa.string()).view(pa.binary())
    return arr


def _fixed_words(arr: pa.Array, width: int) -> np.ndarray:
    """The values of a binary array padded with zero bytes to ``width``, as (n, width/8) words."""
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], np.int32, count=n + 1, offset=arr.offset * 4)
    data = (
        np.frombuffer(arr.buffers()[2], np.uint8) if arr.buffers()[2] is not None else np.zeros(0, np.uint8)
    )
    total = int(offsets[-1] - offsets[0])
    if total == n * width and np.all(np.diff(offsets) == width):
        return data[offsets[0] : offsets[0] + total].view("<u8").reshape(n, width // 8)  # zero copy
    mat = np.zeros((n, width), np.uint8)
    # Row-major boolean assignment lays the concatenated bytes out row by row.
    mat[np.arange(width)[None, :] < np.diff(offsets)[:, None]] = data[offsets[0] : offsets[-1]]
    return mat.view("<u8")


def _fold(h: np.ndarray, words: np.ndarray) -> np.ndarray:
    for j in range(words.shape[1]):
        h ^= words[:, j]
        h *= _C1
        h ^= h >> _S33
    return h


def hash64_lanes(arr: pa.Array | pa.ChunkedArray, seeds: tuple[int, ...]) -> list[np.ndarray]:
    """Deterministic 64-bit hashes of every value, one array per seed, reading the bytes once."""
    arr = _as_binary(arr)
    n = len(arr)
    if n == 0:
        return [np.zeros(0, np.uint64) for _ in seeds]
    lens = np.asarray(pc.binary_length(arr).fill_null(0).to_numpy(zero_copy_only=False), np.int64)
    mixed_len = lens.astype(np.uint64) * _GOLDEN
    hs = [np.full(n, np.uint64(seed), np.uint64) ^ mixed_len for seed in seeds]
    nulls = np.asarray(pc.is_null(arr).to_numpy(zero_copy_only=False), bool) if arr.null_count else None
    if nulls is not None:
        arr = arr.fill_null(b"")
    cls = np.searchsorted(np.array(_WIDTHS), lens)  # index of the smallest width >= len
    lo, hi = int(cls.min()), int(cls.max())
    present = np.array([lo]) if lo == hi else np.unique(cls)
    if lo == hi and lo < len(_WIDTHS):
        words = _fixed_words(arr, _WIDTHS[lo])
        hs = [_fold(h, words) for h in hs]
    else:
        for c in present:
            rows = np.flatnonzero(cls == c)
            if c == len(_WIDTHS):
                for i in rows.tolist():
                    value = arr[i].as_py()
                    for h, seed in zip(hs, seeds, strict=True):
                        digest = hashlib.blake2b(
                            value, digest_size=8, salt=seed.to_bytes(8, "little")
                        ).digest()
                        h[i] ^= np.frombuffer(digest, "<u8")[0]
                continue
            words = _fixed_words(arr.take(pa.array(rows)), _WIDTHS[c])
            for h in hs:
                h[rows] = _fold(h[rows], words)
    out = []
    for h in hs:
        h = _fmix(h)
        if nulls is not None:
            h[nulls] = _NULL
        out.append(h)
    return out


def hash64(arr: pa.Array | pa.ChunkedArray, seed: int = SEED_A) -> np.ndarray:
    """A deterministic 64-bit hash of every value of a string/binary array (nulls get a constant)."""
    return hash64_lanes(arr, (seed,))[0]


def hash_rows(columns: list[pa.Array], seeds: tuple[int, ...] = (SEED_A,)) -> list[np.ndarray]:
    """64-bit hashes per row over several columns (strings by content, numbers by value bits)."""
    n = len(columns[0])
    hs = [np.full(n, np.uint64(seed), np.uint64) for seed in seeds]
    for k, col in enumerate(columns):
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        t = col.type
        if col.null_count == n:
            lanes = [np.full(n, _NULL ^ np.uint64(k), np.uint64) for _ in seeds]
        elif pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_timestamp(t):
            values = pc.cast(col, pa.float64()) if pa.types.is_floating(t) else pc.cast(col, pa.int64())
            bits = np.asarray(values.fill_null(0).to_numpy(zero_copy_only=False)).view(np.uint64)
            lanes = [_fmix(bits ^ np.uint64(seed + k)) for seed in seeds]
            if col.null_count:
                null = np.asarray(pc.is_null(col).to_numpy(zero_copy_only=False), bool)
                for lane in lanes:
                    lane[null] = _NULL
        else:
            lanes = hash64_lanes(col, tuple(seed + k for seed in seeds))
        for i, lane in enumerate(lanes):
            hs[i] = _fmix((hs[i] ^ lane) * _C2 + _GOLDEN)
    return hs


_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def hex_strings(*lanes: np.ndarray) -> pa.Array:
    """Format 64-bit lanes side by side as fixed-width lowercase hex strings (one per row)."""
    n = len(lanes[0])
    raw = np.stack([lane.astype(">u8") for lane in lanes], axis=1).view(np.uint8).reshape(n, 8 * len(lanes))
    chars = np.empty((n, raw.shape[1] * 2), np.uint8)
    chars[:, 0::2] = _HEX[raw >> 4]
    chars[:, 1::2] = _HEX[raw & 15]
    width = chars.shape[1]
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


def hash128_hex(columns: list[pa.Array]) -> pa.Array:
    """32 hex characters per row: two independently seeded 64-bit row hashes (for derived ids)."""
    return hex_strings(*hash_rows(columns, (SEED_A, SEED_B)))


class Pseudonymiser(shelfwise.pseudonym.Pseudonymiser):
    """Keyed BLAKE2b of user ids (:mod:`shelfwise.pseudonym`), so raw personal ids never reach
    curated data; here also over whole string arrays.

    Deterministic for a given key (the same user gets the same pseudonym in every object, so
    models still join a user's history) and irreversible without the key. Each distinct id is
    hashed once per batch; a bounded cache spans batches.
    """

    def __call__(self, arr: pa.Array) -> pa.Array:
        """Pseudonymise a string array (nulls stay null), hashing each distinct value once."""
        if len(arr) == 0 or arr.null_count == len(arr):
            return arr
        encoded = pc.dictionary_encode(arr)
        mapped = pa.array([self.one(v) for v in encoded.dictionary.to_pylist()], pa.string())
        return pc.take(mapped, encoded.indices)
