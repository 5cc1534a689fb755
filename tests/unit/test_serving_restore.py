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
