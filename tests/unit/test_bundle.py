"""Bundle write/read/verify and the S3 round trip, including every way a bundle can be refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import onnxruntime as ort
import pytest
from moto import mock_aws

from shelfwise import bundle as bd
from shelfwise import onnx_export as ox
from shelfwise.errors import ConflictError

N, D = 40, 4


def _items(n: int = N) -> dict[str, np.ndarray]:
    return {
        "item_id": np.array([f"sku-{i:03d}" for i in range(n)]),
        "category": np.array(["shoes" if i % 2 else "hats" for i in range(n)]),
        "title": np.array([f"Item number {i}" for i in range(n)]),
        "price": np.linspace(1, 100, n),
        "popularity": np.arange(n, 0, -1),
    }


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    model = ox.build_factor_model(ox.FactorModel.create(rng.normal(size=(N, D)), rng.normal(size=(3, D))))
    sim = (rng.integers(0, N, size=(N, 5)), rng.random((N, 5)))
    out = tmp_path / "v1"
    out.mkdir()
    (out / "report.html").write_text("<html>report</html>")
    bd.write_bundle(
        out,
        model=model,
        items=_items(),
        manifest={"algorithm": "als", "version": "v1"},
        users=np.array(["u1", "u2", "u3"]),
        similar=sim,
    )
    return out


def test_write_then_read_round_trip(bundle_dir: Path) -> None:
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert set(manifest["files"]) == {
        "model.onnx",
        "items.npz",
        "items.parquet",
        "users.npz",
        "similar.npz",
        "report.html",
    }
    assert manifest["n_items"] == N and manifest["n_users"] == 3 and manifest["algorithm"] == "als"
    b = bd.verify_bundle(bundle_dir)
    assert b.n_items == N and b.version == "v1"
    assert b.items["in_stock"].all() and b.items["price"].dtype == np.float32
    assert b.users is not None and b.users.tolist() == ["u1", "u2", "u3"]
    assert b.similar_indices is not None and b.similar_indices.shape == (N, 5)
    session = ort.InferenceSession(str(b.model_path))
    bd.check_graph_io(b, bd.GraphIO.from_session(session))


def test_items_parquet_matches_npz(bundle_dir: Path) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(bundle_dir / "items.parquet")
    assert table.column("item_id").to_pylist() == _items()["item_id"].tolist()
    assert table.column("item_index").to_pylist() == list(range(N))


def test_tampered_file_is_refused(bundle_dir: Path) -> None:
    with open(bundle_dir / "items.npz", "ab") as f:
        f.write(b"x")
    with pytest.raises(bd.BundleChecksumError, match=r"items\.npz"):
        bd.read_bundle(bundle_dir)


def test_missing_file_is_refused(bundle_dir: Path) -> None:
    (bundle_dir / "similar.npz").unlink()
    with pytest.raises(bd.BundleMissingError, match="similar"):
        bd.read_bundle(bundle_dir)


def test_missing_or_broken_manifest(tmp_path: Path, bundle_dir: Path) -> None:
    with pytest.raises(bd.BundleMissingError):
        bd.read_bundle(tmp_path)
    (bundle_dir / "manifest.json").write_text("{not json")
    with pytest.raises(bd.BundleMismatchError, match="JSON"):
        bd.read_bundle(bundle_dir)


def test_graph_with_other_item_count_is_refused(tmp_path: Path) -> None:
    model = ox.build_popularity_model(np.ones(N + 1))
    bd.write_bundle(tmp_path, model=model, items=_items(), manifest={}, parquet=False)
    with pytest.raises(bd.BundleMismatchError, match="items"):
        bd.verify_bundle(tmp_path)


def test_graph_with_wrong_io_is_refused(tmp_path: Path) -> None:
    b = bd.Bundle(tmp_path, {}, bd.normalise_items(_items()))
    io = bd.GraphIO(
        {name: (typ, (N,)) for name, (typ, _) in bd.GRAPH_INPUTS.items() if name != "k"},
        {name: (typ, ("k",)) for name, (typ, _) in bd.GRAPH_OUTPUTS.items()},
    )
    with pytest.raises(bd.BundleMismatchError, match="inputs"):
        bd.check_graph_io(b, io)


def test_items_are_validated() -> None:
    with pytest.raises(bd.BundleMismatchError, match="duplicates"):
        bd.normalise_items({"item_id": ["a", "a"]})
    with pytest.raises(bd.BundleMismatchError, match="price"):
        bd.normalise_items({"item_id": ["a", "b"], "price": [1.0]})
    table = bd.normalise_items({"item_id": ["a", "b"]})
    assert table["category"].tolist() == ["", ""] and np.isnan(table["price"]).all()


def test_unsorted_users_are_refused(tmp_path: Path) -> None:
    with pytest.raises(bd.BundleMismatchError, match="sorted"):
        bd.write_bundle(
            tmp_path,
            model=ox.build_popularity_model(np.ones(N)),
            items=_items(),
            manifest={},
            users=["b", "a"],
            parquet=False,
        )


@mock_aws
def test_s3_round_trip_and_corruption(bundle_dir: Path, tmp_path: Path) -> None:
    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(Bucket="models", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    keys = bd.upload_bundle(s3, bundle_dir, "models", "models/recs/v1")
    assert keys[-1] == "models/recs/v1/manifest.json"
    with pytest.raises(ConflictError):
        bd.upload_bundle(s3, bundle_dir, "models", "models/recs/v1")

    local = bd.download_bundle(s3, "models", "models/recs/v1", tmp_path / "cache" / "v1")
    b = bd.read_bundle(local)
    assert b.n_items == N and not (local / "items.parquet").exists()
    # A second call reuses the verified copy.
    assert bd.download_bundle(s3, "models", "models/recs/v1", local) == local

    s3.put_object(
        Bucket="models", Key="models/recs/v2/manifest.json", Body=(bundle_dir / "manifest.json").read_bytes()
    )
    for name in ("model.onnx", "users.npz", "similar.npz", "report.html"):
        s3.upload_file(str(bundle_dir / name), "models", f"models/recs/v2/{name}")
    s3.put_object(Bucket="models", Key="models/recs/v2/items.npz", Body=b"truncated")
    with pytest.raises(bd.BundleChecksumError):
        bd.download_bundle(s3, "models", "models/recs/v2", tmp_path / "cache" / "v2")
    assert not (tmp_path / "cache" / "v2").exists()
    with pytest.raises(bd.BundleMissingError):
        bd.download_bundle(s3, "models", "models/recs/v3", tmp_path / "cache" / "v3")


def test_import_pulls_no_pyarrow_pandas_or_onnx() -> None:
    code = (
        "import sys, shelfwise.bundle; "
        "bad = [m for m in ('pyarrow', 'pandas', 'onnx') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_purchased_csr_round_trip_and_validation(tmp_path: Path) -> None:
    model = ox.build_popularity_model(np.ones(N))
    bd.write_bundle(
        tmp_path / "ok",
        model=model,
        items=_items(),
        manifest={},
        users=["a", "b"],
        purchased=([0, 2, 3], [5, 6, 7]),
        parquet=False,
    )
    b = bd.read_bundle(tmp_path / "ok")
    assert b.purchased is not None and b.purchased[1].tolist() == [5, 6, 7]
    with pytest.raises(bd.BundleMismatchError, match="purchased"):
        bd.write_bundle(
            tmp_path / "bad",
            model=model,
            items=_items(),
            manifest={},
            users=["a", "b"],
            purchased=([0, 2], [5, 6]),
            parquet=False,
        )


@mock_aws
def test_concurrent_downloads_fetch_once_and_a_verified_copy_is_not_hashed_again(
    bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Serving's prefetch and its load ask for the same directory: one download, one verification."""
    from concurrent.futures import ThreadPoolExecutor

    from shelfwise import bundle_files

    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(Bucket="models", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    bd.upload_bundle(s3, bundle_dir, "models", "models/recs/v1")
    gets: list[str] = []
    real_get = s3.get_object

    def counting_get(**kwargs: Any) -> Any:
        gets.append(kwargs["Key"])
        return real_get(**kwargs)

    monkeypatch.setattr(s3, "get_object", counting_get)
    target = tmp_path / "cache" / "v1"
    with ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(lambda _: bd.download_bundle(s3, "models", "models/recs/v1", target), range(4))
        )
    assert results == [target] * 4
    assert len(gets) == len(set(gets)) and "models/recs/v1/model.onnx" in gets

    def no_hashing(path: Any) -> str:
        raise AssertionError(f"{path} hashed again")

    monkeypatch.setattr(bundle_files, "file_sha256", no_hashing)
    assert bd.download_bundle(s3, "models", "models/recs/v1", target) == target
    # A copy that disappeared is not taken for verified: it is fetched again.
    import shutil

    shutil.rmtree(target)
    monkeypatch.undo()
    assert bd.read_bundle(bd.download_bundle(s3, "models", "models/recs/v1", target)).n_items == N


def test_npz_members_are_aligned_mapped_and_equal_to_numpys(tmp_path: Path) -> None:
    """Bundles' .npz are read by np.load too; serving maps them, 64-byte aligned, read-only."""
    arrays = {
        "item_id": np.array(["sku-1", "sku-22", "ünïcode"]),
        "price": np.array([1.5, np.nan, 3.0]),
        "in_stock": np.array([True, False, True]),
        "empty": np.zeros(0, np.int64),
        "matrix": np.arange(12, dtype=np.float32).reshape(3, 4),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
    }
    bd.savez_aligned(tmp_path / "a.npz", arrays)
    np.savez(tmp_path / "b.npz", **arrays)  # what older bundles hold: members at any offset
    with np.load(tmp_path / "a.npz") as reference:
        assert sorted(reference.files) == sorted(arrays)
    for name in ("a.npz", "b.npz"):
        loaded = bd._load_npz(tmp_path / name)
        for key, value in arrays.items():
            assert np.array_equal(loaded[key], value, equal_nan=value.dtype.kind == "f"), (name, key)
            assert loaded[key].dtype == value.dtype and loaded[key].flags.aligned
    mapped = bd._load_npz(tmp_path / "a.npz")
    assert all(a.ctypes.data % bd.NPZ_ALIGN == 0 for a in mapped.values() if a.size)
    assert not mapped["price"].flags.writeable  # a bundle is immutable
    (tmp_path / "c.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(bd.BundleMismatchError, match="cannot be read"):
        bd._load_npz(tmp_path / "c.npz")


def _catalog(items: dict[str, np.ndarray]) -> Any:
    from shelfwise.serving.catalog import Catalog

    return Catalog.from_bundle(bd.Bundle(Path("."), {}, items))


def test_catalog_takes_the_bundles_lookups_and_computes_them_for_bundles_without(bundle_dir: Path) -> None:
    written = bd.read_bundle(bundle_dir)
    for key in ("item_id_order", "category_code", "category_names", "popularity_order"):
        assert key in written.items  # write_bundle stores them beside the columns
    columns = {k: written.items[k] for k in bd.ITEM_COLUMNS}  # a bundle from before the lookups
    for cat in (_catalog(dict(written.items)), _catalog(columns)):
        assert cat.lookup(["sku-007", "nope", "sku-000", "sku-0070", "sku-007\0", "x" * 100]) == (
            [7, 0],
            [1, 3, 4, 5],
        )
        assert cat.index_of("sku-039") == 39 and cat.index_of("") is None
        assert cat.indices([]).tolist() == []
        assert cat.categories == {"hats": 0, "shoes": 1}
        assert cat.category_codes.tolist() == [i % 2 for i in range(N)]
        assert cat.popularity_order.tolist() == list(range(N))  # popularity N..1


def test_catalog_ids_in_any_order_and_popularity_ties() -> None:
    items = bd.normalise_items(
        {
            "item_id": np.array(["b", "é", "a", "ab", "c"]),
            "category": np.array(["x", "y", "x", "z", "y"]),
            "popularity": np.array([1.0, 3.0, 3.0, 0.0, 1.0]),
        }
    )
    cat = _catalog({**items, **bd.item_lookups(items)})
    assert cat.lookup(["ab", "é", "a", "b", "c", "abc", "aa"]) == ([3, 1, 2, 0, 4], [5, 6])
    assert cat.popularity_order.tolist() == [1, 2, 0, 4, 3]  # ties to the lower index
    assert cat.categories == {"x": 0, "y": 1, "z": 2}


@pytest.mark.parametrize(
    ("key", "corrupt", "message"),
    [
        ("item_id_order", lambda a: a[::-1].copy(), "does not sort"),
        ("item_id_order", lambda a: np.zeros_like(a), "does not sort"),
        ("item_id_order", lambda a: a + 1, "not an index"),
        ("category_code", lambda a: 1 - a, "does not match"),
        ("category_code", lambda a: a + 5, "does not match"),
        ("category_names", lambda a: np.array(["hats", "hats"]), "does not match|duplicates"),
        ("popularity_order", lambda a: a[::-1].copy(), "does not rank"),
        ("popularity_order", lambda a: np.zeros_like(a), "not a permutation"),
        ("popularity_order", lambda a: a[:-1].copy(), "not a permutation"),
    ],
)
def test_catalog_refuses_lookups_that_disagree_with_the_columns(
    bundle_dir: Path, key: str, corrupt: Any, message: str
) -> None:
    items = dict(bd.read_bundle(bundle_dir).items)
    items[key] = corrupt(items[key])
    with pytest.raises(bd.BundleMismatchError, match=message):
        _catalog(items)


def test_catalog_refuses_duplicate_ids_without_lookups(bundle_dir: Path) -> None:
    items = {k: np.array(v) for k, v in bd.read_bundle(bundle_dir).items.items() if k in bd.ITEM_COLUMNS}
    items["item_id"][3] = items["item_id"][4]
    with pytest.raises(bd.BundleMismatchError, match="duplicates"):
        _catalog(items)


def test_large_initializers_go_to_external_data_and_the_graph_reads_back_whole(tmp_path: Path) -> None:
    import onnx

    rng = np.random.default_rng(3)
    n, d = 600, 32  # item factors of 75 KB: over EXTERNAL_DATA_MIN_BYTES
    model = ox.build_factor_model(ox.FactorModel.create(rng.normal(size=(n, d)), rng.normal(size=(3, d))))
    before = model.SerializeToString()
    users = np.array(["u1", "u2", "u3"])
    written = bd.write_bundle(tmp_path / "v1", model=model, items=_items(n), manifest={}, users=users)
    assert model.SerializeToString() == before  # the caller's graph keeps its tensors
    assert bd.MODEL_DATA_FILE in written["files"] and bd.MODEL_FILE in written["files"]
    assert (tmp_path / "v1" / bd.MODEL_FILE).stat().st_size < 64 * 1024
    reloaded = onnx.load(str(tmp_path / "v1" / bd.MODEL_FILE))
    assert {t.name: onnx.numpy_helper.to_array(t).tobytes() for t in reloaded.graph.initializer} == {
        t.name: onnx.numpy_helper.to_array(t).tobytes() for t in model.graph.initializer
    }
    # rewritten from its own path (the demo does this), and from bytes: the same files again
    again = bd.write_bundle(
        tmp_path / "v2", model=tmp_path / "v1" / bd.MODEL_FILE, items=_items(n), manifest={}, users=users
    )
    from_bytes = bd.write_bundle(tmp_path / "v3", model=before, items=_items(n), manifest={}, users=users)
    assert again["files"] == from_bytes["files"] == written["files"]
    bd.verify_bundle(tmp_path / "v1")
    (tmp_path / "v1" / bd.MODEL_DATA_FILE).unlink()
    with pytest.raises(bd.BundleError):
        bd.verify_bundle(tmp_path / "v1")


def test_text_is_stored_utf8_and_read_back_as_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    ids = np.array(["sku-1", "ünï-ç", "日本-2", "sku-10", "emoji-🙂"])
    items = {
        "item_id": ids,
        "category": np.array(["é", "b", "é", "日", "b"]),
        "title": np.array(["Crème brûlée", "", "抹茶", "x", "🙂 mug"]),
    }
    model = ox.build_factor_model(ox.FactorModel.create(rng.normal(size=(5, 4)), rng.normal(size=(0, 4))))
    bd.write_bundle(tmp_path / "v1", model=model, items=items, manifest={})
    stored = bd.read_bundle(tmp_path / "v1").items
    assert stored["item_id"].dtype.kind == "S" and stored["item_id"].nbytes < ids.nbytes / 2
    for col in ("item_id", "category", "title"):
        assert bd.text_list(stored[col]) == items[col].tolist()
    assert bd.normalise_items(stored)["title"].tolist() == items["title"].tolist()  # rewritten (the demo)
    legacy = {k: np.char.decode(v, "utf-8") if v.dtype.kind == "S" else v for k, v in stored.items()}
    for cat in (_catalog(dict(stored)), _catalog({k: legacy[k] for k in bd.ITEM_COLUMNS})):
        assert cat.lookup(["日本-2", "emoji-🙂", "ünï", "\ud800", "ünï-ç\0"]) == ([2, 4], [2, 3, 4])
        assert cat.categories == {"é": 0, "b": 1, "日": 2}
        assert bd.text_list(cat.titles[[0, 4]]) == ["Crème brûlée", "🙂 mug"]
