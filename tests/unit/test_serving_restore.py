"""SnapStart: a restored environment re-reads its aliases (and loads what they name) before serving;
the prefetch of a cold start warms the loader's cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from shelfwise.registry import Aliases
from shelfwise.serving import ModelLoader, Recommender, ServingConfig
from shelfwise_local.bench.serve import build_synthetic_bundle


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("remote")
    for seed, version in enumerate(("v1", "v2"), start=1):
        build_synthetic_bundle(root / version, n_items=60, dim=4, n_users=5, seed=seed, version=version)
    return root


def _fetch(remote: Path, fetched: list[str]):
    def fetch(version: str, directory: Path) -> Path:
        fetched.append(version)
        if not directory.exists():
            shutil.copytree(remote / version, directory)
        return directory

    return fetch


def test_after_restore_reads_aliases_again_and_loads_the_new_champion(remote: Path, tmp_path: Path) -> None:
    aliases = {"now": Aliases(champion="v1")}
    config = ServingConfig(model_name="recs", cache_dir=str(tmp_path), alias_ttl_seconds=3600)
    loader = ModelLoader(None, "b", "recs", tmp_path, fetch=_fetch(remote, []))
    rec = Recommender(config, loader, lambda: aliases["now"], background=False)
    rec.start()  # the init that the snapshot captured
    assert rec.recommend(user_id="user-000001", k=3).model_version == "v1"
    aliases["now"] = Aliases(champion="v2", previous="v1")  # promoted while the snapshot slept
    assert rec.recommend(user_id="user-000001", k=3).model_version == "v1"  # within the alias TTL
    rec.after_restore()
    assert set(rec.state.models) == {"v2"}
    assert rec.recommend(user_id="user-000001", k=3).model_version == "v2"


def test_prefetch_downloads_the_aliased_versions_and_survives_errors(remote: Path, tmp_path: Path) -> None:
    fetched: list[str] = []
    loader = ModelLoader(None, "b", "recs", tmp_path, fetch=_fetch(remote, fetched))
    loader.prefetch(lambda: Aliases(champion="v1", challenger="v2", canary_weight=0.1)).join(timeout=30)
    assert fetched == ["v1", "v2"]
    assert (tmp_path / "recs" / "v2" / "manifest.json").is_file()

    def broken() -> Aliases:
        raise RuntimeError("SSM throttled")

    loader.prefetch(broken).join(timeout=30)  # nothing raised: the load reports it
    missing = ModelLoader(None, "b", "recs", tmp_path / "other", fetch=_fetch(remote / "nowhere", []))
    missing.prefetch(lambda: Aliases(champion="v1")).join(timeout=30)
    assert not (tmp_path / "other" / "recs" / "v1").exists()


def test_serving_function_registers_snapstart_hooks_that_work(
    remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under SnapStart the runtime calls the hooks: before the snapshot every route is analysed, after
    a restore the aliases are read again (a promotion while the snapshot slept is served at once)."""
    import importlib.util
    import sys
    import types

    import boto3
    from moto.server import ThreadedMotoServer

    from shelfwise.aws import reset_clients
    from shelfwise.bundle import upload_bundle

    hooks: dict[str, list] = {"before": [], "after": []}
    stub = types.ModuleType("snapshot_restore_py")
    stub.register_before_snapshot = hooks["before"].append  # type: ignore[attr-defined]
    stub.register_after_restore = hooks["after"].append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", stub)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for key, value in {
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
            "MODELS_BUCKET": "snap-models",
            "MODEL_NAME": "recs",
            "SHELFWISE_ENV": "snap",
            "ALIAS_TTL_SECONDS": "3600",
            "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        }.items():
            monkeypatch.setenv(key, value)
        reset_clients()
        s3, ssm = boto3.client("s3"), boto3.client("ssm")
        s3.create_bucket(Bucket="snap-models", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        for version in ("v1", "v2"):
            upload_bundle(s3, remote / version, "snap-models", f"models/recs/{version}")
        ssm.put_parameter(Name="/shelfwise/snap/models/recs/champion", Value="v1", Type="String")
        root = Path(__file__).resolve().parents[2]
        spec = importlib.util.spec_from_file_location(
            "serve_snap", root / "functions/serve_recommendations/app.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, "serve_snap", module)
        spec.loader.exec_module(module)
        assert len(hooks["before"]) == 1 and len(hooks["after"]) == 1
        hooks["before"][0]()  # the snapshot: every route's parameters analysed
        assert module.recommender.state.aliases.champion == "v1"
        ssm.put_parameter(
            Name="/shelfwise/snap/models/recs/champion", Value="v2", Type="String", Overwrite=True
        )
        hooks["after"][0]()  # restored hours later
        assert set(module.recommender.state.models) == {"v2"}
    finally:
        reset_clients()
        server.stop()


def test_a_cold_start_reads_the_aliases_once(remote: Path, tmp_path: Path) -> None:
    """The load takes the aliases the prefetch read; when that read failed, it reads them itself."""
    reads: list[int] = []

    def read() -> Aliases:
        reads.append(1)
        if len(reads) == 1 and fail_first:
            raise RuntimeError("SSM throttled")
        return Aliases(champion="v1")

    for fail_first, expected_reads in ((False, 1), (True, 2)):
        reads.clear()
        config = ServingConfig(
            model_name="recs", cache_dir=str(tmp_path / str(fail_first)), alias_ttl_seconds=3600
        )
        loader = ModelLoader(None, "b", "recs", config.cache_dir, fetch=_fetch(remote, []))
        prefetch = loader.prefetch(read)
        prefetch.join(timeout=30)  # this test's fetch copies without download_bundle's lock
        rec = Recommender(config, loader, read, background=False)
        state = rec.start_in_background(prefetch.aliases)()
        assert set(state.models) == {"v1"} and len(reads) == expected_reads
        assert state.alias_error is None
