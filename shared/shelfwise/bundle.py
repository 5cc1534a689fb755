"""Model bundles: write, read and verify the directory of docs/contracts.md, and move it to/from S3.

A bundle is a flat directory (``model.onnx`` and its external data ``model.onnx.data``,
``items.npz``, ``users.npz``, ``similar.npz``, ``items.parquet``, ``manifest.json``, ...) whose manifest lists the sha256 of every other file.
Reading verifies the checksums, the tables against each other and, when given the graph's I/O,
the ONNX inputs/outputs and item count against the manifest, raising a typed :class:`BundleError`
so serving can refuse a bad bundle and keep the last good one.

Serving imports this module, so it needs numpy only: pyarrow (``items.parquet``) and onnx (graph
inspection on the training side) are imported lazily inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import mmap
import os
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

# The file-level half of the contract lives in bundle_files (no numpy); re-exported here.
from shelfwise.bundle_files import (  # noqa: F401
    _CHUNK,
    ITEMS_FILE,
    ITEMS_PARQUET,
    MANIFEST_FILE,
    MODEL_DATA_FILE,
    MODEL_FILE,
    REQUIRED_FILES,
    SIMILAR_FILE,
    USERS_FILE,
    BundleChecksumError,
    BundleError,
    BundleMismatchError,
    BundleMissingError,
    cached_copy_verified,
    download_bundle,
    file_sha256,
    read_manifest,
    upload_bundle,
    verify_checksums,
)

FORMAT_VERSION = 1


# items.npz columns and the numpy dtype kind each must have. Text ("U") is stored UTF-8 encoded
# (numpy "S"), a quarter of numpy's UTF-32 for the ASCII most ids and titles are: less to
# download, hash and map at a cold start. Bundles written with "U" columns are read as well.
ITEM_COLUMNS: dict[str, str] = {
    "item_id": "U",
    "category": "U",
    "title": "U",
    "price": "f",
    "popularity": "f",
    "in_stock": "b",
}

# Graph I/O of the contract: name -> (onnxruntime type string, rank).
GRAPH_INPUTS: dict[str, tuple[str, int]] = {
    "user_index": ("tensor(int64)", 1),
    "history_items": ("tensor(int64)", 1),
    "history_weights": ("tensor(float)", 1),
    "exclude_mask": ("tensor(bool)", 1),
    "k": ("tensor(int64)", 1),
}
GRAPH_OUTPUTS: dict[str, tuple[str, int]] = {"scores": ("tensor(float)", 1), "indices": ("tensor(int64)", 1)}

# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class GraphIO:
    """What a graph declares: inputs/outputs as name -> (type, shape) and its metadata props."""

    inputs: dict[str, tuple[str, tuple[Any, ...]]]
    outputs: dict[str, tuple[str, tuple[Any, ...]]]
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_session(cls, session: Any) -> GraphIO:
        """From an ``onnxruntime.InferenceSession`` (what serving has; no onnx package needed)."""
        return cls(
            {i.name: (i.type, tuple(i.shape)) for i in session.get_inputs()},
            {o.name: (o.type, tuple(o.shape)) for o in session.get_outputs()},
            dict(session.get_modelmeta().custom_metadata_map),
        )

    @classmethod
    def from_onnx_file(cls, path: str | Path) -> GraphIO:
        """From the file itself, with the ``onnx`` package (training side)."""
        import onnx  # training side only; serving does not ship onnx

        model = onnx.load_model(str(path), load_external_data=False)
        names = {v: k for k, v in onnx.TensorProto.DataType.items()}
        ort_names = {"INT64": "tensor(int64)", "FLOAT": "tensor(float)", "BOOL": "tensor(bool)"}

        def describe(values: Any) -> dict[str, tuple[str, tuple[Any, ...]]]:
            out = {}
            for v in values:
                t = v.type.tensor_type
                name = names.get(t.elem_type, str(t.elem_type))
                dims = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim)
                out[v.name] = (ort_names.get(name, name.lower()), dims)
            return out

        return cls(
            describe(model.graph.input),
            describe(model.graph.output),
            {p.key: p.value for p in model.metadata_props},
        )


@dataclass
class Bundle:
    """A verified bundle directory, its manifest and the tables serving needs."""

    path: Path
    manifest: dict[str, Any]
    items: dict[str, np.ndarray]
    users: np.ndarray | None = None
    similar_indices: np.ndarray | None = None
    similar_scores: np.ndarray | None = None
    # Optional CSR in users.npz (purchased_indptr [U+1], purchased_items): what each known user
    # bought, so serving can leave it out ("already bought" filter) without a database.
    purchased: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def n_items(self) -> int:
        return int(self.items["item_id"].shape[0])

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", self.path.name))


# --------------------------------------------------------------------------- writing


def normalise_items(items: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The items table with the contract's columns and dtypes; missing optional columns filled.

    ``item_id`` is required and must be unique; ``category`` and ``title`` default to "",
    ``price`` to NaN, ``popularity`` to 0, ``in_stock`` to True.
    """
    if "item_id" not in items:
        raise BundleMismatchError("items table needs an item_id column")
    ids = _as_str(np.asarray(items["item_id"]))
    n = ids.shape[0]
    if ids.ndim != 1 or n == 0:
        raise BundleMismatchError("items.item_id must be a non-empty 1-D array")
    if np.unique(ids).size != n:
        raise BundleMismatchError("items.item_id contains duplicates")
    defaults: dict[str, Any] = {
        "category": np.full(n, "", dtype=str),
        "title": np.full(n, "", dtype=str),
        "price": np.full(n, np.nan, dtype=np.float32),
        "popularity": np.zeros(n, dtype=np.float32),
        "in_stock": np.ones(n, dtype=bool),
    }
    out = {"item_id": ids}
    for col, default in defaults.items():
        value = np.asarray(items[col]) if col in items and items[col] is not None else default
        if value.shape != (n,):
            raise BundleMismatchError(f"items.{col} has shape {value.shape}, expected ({n},)")
        kind = ITEM_COLUMNS[col]
        out[col] = (
            _as_str(value) if kind == "U" else value.astype(np.float32) if kind == "f" else value.astype(bool)
        )
    return out


def _as_str(values: np.ndarray) -> np.ndarray:
    """A text column as numpy str ("U"), UTF-8 bytes ("S", as bundles store it) decoded."""
    return np.char.decode(values, "utf-8") if values.dtype.kind == "S" else values.astype(str)


def encode_text(values: np.ndarray) -> np.ndarray:
    """A "U" column as UTF-8 bytes ("S"), the form items.npz stores text in."""
    return np.char.encode(values, "utf-8") if values.size else np.zeros(0, "S1")


def text_list(values: np.ndarray) -> list[str]:
    """Python strings of a text column, stored UTF-8 ("S") or as numpy str ("U")."""
    if values.dtype.kind == "S":
        return [v.decode("utf-8") for v in values.tolist()]
    return values.tolist()


def item_lookups(items: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Lookups serving needs, derived from a normalised items table (:func:`normalise_items`).

    Written beside the columns in items.npz so serving's cold start does not compute them (over
    100k strings they cost 60-150 ms of a 0.6 s budget); optional, and checked at load either
    way (:meth:`shelfwise.serving.catalog.Catalog.from_bundle`):

    - ``item_id_order``: the argsort of ``item_id`` (the id index is a binary search over it);
    - ``category_code``: each item's position in ``category_names``, the distinct categories in
      order of first appearance;
    - ``popularity_order``: items by descending ``popularity``, ties to the lower index (the
      popularity fallback's ranking).
    """
    codes: dict[str, int] = {}
    category_code = np.fromiter(
        (codes.setdefault(c, len(codes)) for c in items["category"].tolist()),
        np.int32,
        count=items["category"].shape[0],
    )
    return {
        "item_id_order": np.argsort(items["item_id"], kind="stable").astype(np.int32),
        "category_code": category_code,
        "category_names": np.array(list(codes)) if codes else items["category"][:0],
        "popularity_order": popularity_order(items["popularity"]).astype(np.int32),
    }


def popularity_order(popularity: np.ndarray) -> np.ndarray:
    """Item indices by descending popularity, ties to the lower index (NaN last): the popularity
    fallback's ranking, a stable sort of the negated scores."""
    return np.argsort(-popularity, kind="stable")


# Initializers at least this large go to MODEL_DATA_FILE; a small graph stays one file.
EXTERNAL_DATA_MIN_BYTES = 64 * 1024


def _write_model(model: Any, root: Path) -> None:
    """``model.onnx`` in ``root``, its large initializers in ``model.onnx.data`` (ONNX external data).

    ONNX Runtime maps the external file rather than parsing it out of the protobuf and copying
    it: creating the session of a 100k-item bundle takes 15-20 ms instead of 50-75 ms, at every
    cold start and every model swap. The graph is unchanged; ``onnx.load`` reads it back whole.
    """
    import onnx  # training side only (serving reads bundles, never writes them)

    if isinstance(model, bytes | bytearray):
        proto = onnx.load_model_from_string(bytes(model))
    elif isinstance(model, str | os.PathLike):
        proto = onnx.load_model(str(model))  # with its external data, if it has any
    else:
        proto = onnx.ModelProto()
        proto.CopyFrom(model)  # saving with external data moves the caller's tensors out
    (root / MODEL_DATA_FILE).unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(
        proto,
        str(root / MODEL_FILE),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=MODEL_DATA_FILE,
        size_threshold=EXTERNAL_DATA_MIN_BYTES,
    )


def write_items_parquet(items: Mapping[str, np.ndarray], path: str | Path) -> None:
    """``items.parquet`` for people and analytics (imports pyarrow here, never at module load)."""
    import pyarrow as pa  # lazily: keep pyarrow out of the serving import graph
    import pyarrow.parquet as pq

    table = pa.table(
        {
            col: pa.array(np.asarray(items[col]).tolist() if ITEM_COLUMNS[col] == "U" else items[col])
            for col in ITEM_COLUMNS
        }
    )
    table = table.append_column("item_index", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    pq.write_table(table, str(path))


def write_bundle(
    directory: str | Path,
    *,
    model: Any,
    items: Mapping[str, Any],
    manifest: Mapping[str, Any],
    users: Any | None = None,
    similar: tuple[Any, Any] | None = None,
    purchased: tuple[Any, Any] | None = None,
    parquet: bool = True,
) -> dict[str, Any]:
    """Write a bundle directory and return its manifest (with ``files`` checksums filled in).

    ``model`` is an ``onnx.ModelProto``, serialised bytes, or a path to a ``.onnx`` file.
    ``users``: ids of the model's known users in user-index order, which must be sorted (serving
    finds a user's index with ``np.searchsorted``), so train with users numbered in sorted order.
    ``similar``: (indices [N,M], scores [N,M]) of related items. ``purchased``: optional CSR
    (indptr [U+1], item indices) of what each known user bought, stored in ``users.npz``. Any other file already in the
    directory (e.g. ``report.html``) is checksummed too. ``items.parquet`` is written only when
    ``parquet`` is true and pyarrow is importable.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    table = normalise_items(items)
    n = table["item_id"].shape[0]

    _write_model(model, root)

    arrays: dict[str, Any] = {**table, **item_lookups(table)}
    for col in [c for c, kind in ITEM_COLUMNS.items() if kind == "U"] + ["category_names"]:
        arrays[col] = encode_text(arrays[col])
    savez_aligned(root / ITEMS_FILE, arrays)
    n_users = 0
    if users is not None:
        ids = np.asarray(users).astype(str)
        if ids.size > 1 and not np.all(ids[1:] > ids[:-1]):
            raise BundleMismatchError("users must be sorted and unique (index = position)")
        extra: dict[str, Any] = {}
        if purchased is not None:
            extra = {
                "purchased_indptr": np.asarray(purchased[0], dtype=np.int64),
                "purchased_items": np.asarray(purchased[1], dtype=np.int64),
            }
            _check_purchased(extra["purchased_indptr"], extra["purchased_items"], int(ids.size), n)
        savez_aligned(root / USERS_FILE, {"user_id": ids, **extra})
        n_users = int(ids.size)
    if similar is not None:
        sim_idx = np.asarray(similar[0], dtype=np.int32)
        sim_val = np.asarray(similar[1], dtype=np.float32)
        _check_similar(sim_idx, sim_val, n)
        savez_aligned(root / SIMILAR_FILE, {"indices": sim_idx, "scores": sim_val})
    if parquet:
        with contextlib.suppress(ImportError):  # no pyarrow here: the npz copy is the contract
            write_items_parquet(table, root / ITEMS_PARQUET)

    out = dict(manifest)
    out.setdefault("created_at", datetime.now(UTC).isoformat(timespec="seconds"))
    out["format_version"] = FORMAT_VERSION
    out["n_items"] = n
    out["n_users"] = n_users
    out["files"] = {
        p.name: file_sha256(p) for p in sorted(root.iterdir()) if p.is_file() and p.name != MANIFEST_FILE
    }
    tmp = root / (MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps(out, indent=2, sort_keys=True, default=str))
    tmp.replace(root / MANIFEST_FILE)
    return out


# --------------------------------------------------------------------------- reading


NPZ_ALIGN = 64
_ZIP_PADDING_ID = 0xD935  # the extra-field id Android's zipalign uses for padding


def savez_aligned(path: str | Path | BinaryIO, arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez`` (uncompressed ``.npz``, same format), with each array's data 64-byte aligned.

    Readers memory-map the members (:func:`_load_npz`); ``np.savez`` puts them at whatever offset
    the zip headers leave, and numpy copies (or slows down on) an unaligned array. The local
    header of each member gets a padding extra field, as Android's zipalign does; the .npy
    header itself is already padded to a multiple of 64 bytes by numpy.
    """
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, value in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asanyarray(value), allow_pickle=False)
            data = buffer.getvalue()
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            # zipfile adds a zip64 extra field (20 bytes) to the local header of large members
            zip64 = 20 if len(data) * 1.05 > zipfile.ZIP64_LIMIT else 0  # zipfile's own rule
            start = archive.fp.tell() + 30 + len(info.filename.encode()) + zip64 + 4  # type: ignore[union-attr]
            header_len = data.index(b"\n") + 1  # .npy magic + header, a multiple of 64
            pad = -(start + header_len) % NPZ_ALIGN
            info.extra = struct.pack("<HH", _ZIP_PADDING_ID, pad) + b"\0" * pad
            archive.writestr(info, data)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz``: memory-mapped, read-only, when stored uncompressed (``np.savez``).

    A mapped array costs nothing until used, and only the pages used are read: a request reads
    ``k`` titles, not the 12 MB column. ``np.load`` cannot map an ``.npz``, and it would copy
    every member and check its CRC-32, which the sha256 of the whole file (verified at download)
    makes redundant. Compressed archives are read with ``np.load``.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
        if any(m.compress_type != zipfile.ZIP_STORED for m in members):
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        with open(path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if members else b""
            out = {}
            for member in members:
                f.seek(member.header_offset)
                local = f.read(30)  # the local file header: its name and extra field lengths vary
                if local[:4] != b"PK\x03\x04":
                    raise ValueError(f"member {member.filename} has no local header")
                name_len, extra_len = struct.unpack("<HH", local[26:30])
                f.seek(member.header_offset + 30 + name_len + extra_len)
                version = np.lib.format.read_magic(f)
                shape, fortran, dtype = (
                    np.lib.format.read_array_header_1_0(f)
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0(f)
                )
                if dtype.hasobject:
                    raise ValueError(f"{member.filename} holds Python objects")
                count = math.prod(shape)
                array = (
                    np.frombuffer(mapped, dtype=dtype, count=count, offset=f.tell())
                    if count
                    else np.zeros(0, dtype)
                )
                array = array.reshape(shape, order="F" if fortran else "C")
                # an archive written by np.savez leaves members unaligned: copy those (numpy
                # would copy or buffer them on use anyway); savez_aligned's are mapped as they are
                out[member.filename.removesuffix(".npy")] = array if array.flags.aligned else array.copy()
            return out
    except (OSError, ValueError, zipfile.BadZipFile, struct.error) as exc:
        raise BundleMismatchError(f"{path.name} cannot be read: {exc}") from exc


def _check_similar(indices: np.ndarray, scores: np.ndarray, n_items: int) -> None:
    if indices.ndim != 2 or indices.shape != scores.shape or indices.shape[0] != n_items:
        raise BundleMismatchError(
            f"similar table must be [{n_items}, M] indices and scores, got {indices.shape} and {scores.shape}"
        )
    if indices.size and (indices.min() < 0 or indices.max() >= n_items):
        raise BundleMismatchError(f"similar.indices must lie in [0, {n_items})")


def _check_purchased(indptr: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> None:
    if (
        indptr.shape != (n_users + 1,)
        or indptr[0] != 0
        or np.any(np.diff(indptr) < 0)
        or indptr[-1] != items.size
    ):
        raise BundleMismatchError(
            f"purchased CSR must have {n_users + 1} non-decreasing offsets ending at its length"
        )
    if items.size and (items.min() < 0 or items.max() >= n_items):
        raise BundleMismatchError(f"purchased_items must lie in [0, {n_items})")


def check_graph_io(bundle: Bundle, graph: GraphIO) -> None:
    """The graph has the contract's I/O and the bundle's item (and user) count."""
    for expected, actual, what in (
        (GRAPH_INPUTS, graph.inputs, "input"),
        (GRAPH_OUTPUTS, graph.outputs, "output"),
    ):
        if set(actual) != set(expected):
            raise BundleMismatchError(
                f"graph {what}s {sorted(actual)} differ from the contract {sorted(expected)}"
            )
        for name, (typ, rank) in expected.items():
            got_type, got_shape = actual[name]
            if got_type != typ or len(got_shape) != rank:
                raise BundleMismatchError(
                    f"graph {what} {name} is {got_type}{list(got_shape)}, expected {typ} rank {rank}"
                )
    mask_dim = graph.inputs["exclude_mask"][1][0]
    if mask_dim != bundle.n_items:
        raise BundleMismatchError(f"graph scores {mask_dim} items, the bundle has {bundle.n_items}")
    meta_items = graph.metadata.get("shelfwise.n_items")
    if meta_items is not None and int(meta_items) != bundle.n_items:
        raise BundleMismatchError(f"graph metadata says {meta_items} items, the bundle has {bundle.n_items}")
    meta_users = graph.metadata.get("shelfwise.n_users")
    n_users = 0 if bundle.users is None else int(bundle.users.size)
    if meta_users is not None and int(meta_users) not in (0, n_users):
        raise BundleMismatchError(f"graph knows {meta_users} users, users.npz has {n_users}")


def read_bundle(directory: str | Path, *, graph: GraphIO | None = None, checksums: bool = True) -> Bundle:
    """Read and verify a bundle directory (checksums, tables, and the graph's I/O when given).

    Serving passes ``GraphIO.from_session(session)`` after creating its session; the training
    side calls :func:`verify_bundle`, which reads the I/O with the onnx package.
    ``checksums=False`` is for a caller that has just verified them (``download_bundle`` does):
    hashing a 64 MB bundle twice costs 0.1-0.2 s of a cold start.
    """
    root = Path(directory)
    manifest = read_manifest(root)
    if checksums:
        verify_checksums(root, manifest)
    items = _load_npz(root / ITEMS_FILE)
    missing = [c for c in ITEM_COLUMNS if c not in items]
    if missing:
        raise BundleMismatchError(f"items.npz lacks columns {missing}")
    n = items["item_id"].shape[0]
    for col, kind in ITEM_COLUMNS.items():
        arr = items[col]
        if arr.shape != (n,) or arr.dtype.kind not in ("US" if kind == "U" else kind):
            raise BundleMismatchError(
                f"items.{col} is {arr.dtype}{list(arr.shape)}, expected kind {kind} [{n}]"
            )
    if "n_items" in manifest and int(manifest["n_items"]) != n:
        raise BundleMismatchError(f"manifest says {manifest['n_items']} items, items.npz has {n}")
    bundle = Bundle(root, manifest, items)
    if USERS_FILE in manifest["files"]:
        users_npz = _load_npz(root / USERS_FILE)
        users = users_npz.get("user_id")
        if users is None or users.ndim != 1 or users.dtype.kind != "U":
            raise BundleMismatchError("users.npz must hold a 1-D string array user_id")
        if users.size > 1 and not np.all(users[1:] > users[:-1]):
            raise BundleMismatchError("users.npz user_id is not sorted and unique")
        if "n_users" in manifest and int(manifest["n_users"]) != users.size:
            raise BundleMismatchError(
                f"manifest says {manifest['n_users']} users, users.npz has {users.size}"
            )
        bundle.users = users
        if "purchased_indptr" in users_npz and "purchased_items" in users_npz:
            _check_purchased(users_npz["purchased_indptr"], users_npz["purchased_items"], int(users.size), n)
            bundle.purchased = (users_npz["purchased_indptr"], users_npz["purchased_items"])
    if SIMILAR_FILE in manifest["files"]:
        sim = _load_npz(root / SIMILAR_FILE)
        if "indices" not in sim or "scores" not in sim:
            raise BundleMismatchError("similar.npz must hold indices and scores")
        _check_similar(sim["indices"], sim["scores"], n)
        bundle.similar_indices, bundle.similar_scores = sim["indices"], sim["scores"]
    if graph is not None:
        check_graph_io(bundle, graph)
    return bundle


def verify_bundle(directory: str | Path) -> Bundle:
    """Full verification including the ONNX graph's I/O (needs the onnx package)."""
    bundle = read_bundle(directory)
    check_graph_io(bundle, GraphIO.from_onnx_file(bundle.model_path))
    return bundle
