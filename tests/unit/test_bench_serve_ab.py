"""The serving bench's in-handler A/B: arms take turns on the same requests, the loaded version's
graph is swapped for another and put back."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from shelfwise_local.bench.serve.handler import graph_ab
from shelfwise_local.bench.serve.ranker import RETRIEVAL_GRAPH
from shelfwise_local.bench.serve.synthetic import build_synthetic_bundle


class _App:
    """A handler that records which session the champion version holds for each request."""

    def __init__(self, model: Any) -> None:
        aliases = SimpleNamespace(champion="v1")
        self.recommender = SimpleNamespace(state=SimpleNamespace(aliases=aliases, models={"v1": model}))
        self.served: list[tuple[int, Any]] = []

    def lambda_handler(self, event: dict[str, int], ctx: Any) -> dict[str, int]:
        self.served.append((event["n"], self.recommender.state.models["v1"].session))
        return {"statusCode": 200}


def test_graph_ab_alternates_blocks_of_the_same_requests_and_puts_the_graph_back(tmp_path: Path) -> None:
    build_synthetic_bundle(
        tmp_path / "bundle",
        n_items=300,
        dim=8,
        n_users=20,
        model_kind="ranker",
        save_items=tmp_path / "items.npy",
    )
    model = SimpleNamespace(session="the bundle's session")
    app = _App(model)
    events = [{"n": i} for i in range(10)]
    out = graph_ab(app, events, None, tmp_path / RETRIEVAL_GRAPH, ("ranker", "retrieval"), block=4)

    assert model.session == "the bundle's session"
    assert out["requests_per_arm"] == 10
    assert {"ranker_p50_ms", "retrieval_cpu_p99_ms", "p50_delta_ms", "p99_delta_ms"} <= out.keys()
    own = [n for n, s in app.served if s == "the bundle's session"]
    other = [n for n, s in app.served if s != "the bundle's session"]
    assert sorted(own) == sorted(other) == list(range(10))
    # blocks of 4: ranker first, then the retrieval graph first, then ranker first again
    turns = [s == "the bundle's session" for _, s in app.served]
    assert turns == [True] * 4 + [False] * 4 + [False] * 4 + [True] * 4 + [True] * 2 + [False] * 2
    assert all(type(s).__name__ == "InferenceSession" for _, s in app.served if s != "the bundle's session")
