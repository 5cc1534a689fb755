"""The in-session view of the temporal protocol: requests from the first event after the cut."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from shelfwise.events import EVENT_WEIGHTS
from shelfwise.training.data import interactions_from_table, temporal_split
from shelfwise.training.popularity import Popularity
from shelfwise.training.session_eval import evaluate_in_session, session_requests

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 5, tzinfo=UTC)
TRAIN = [
    ("u1", "i1"), ("u2", "i1"), ("u3", "i2"), ("u1", "i2"), ("u2", "i3"),
    ("u3", "i4"), ("u1", "i1"), ("u2", "i1"), ("u3", "i2"), ("u1", "i2"),
    ("u2", "i3"), ("u3", "i4"), ("u2", "i5"), ("u3", "i5"), ("u2", "i4"),
]  # fmt: skip
# after the cut: u1 opens with i3 and goes on to i4 and i5; u2 and u3 touch one new item each
TEST = [("u1", "i3"), ("u1", "i4"), ("u2", "i2"), ("u3", "i1"), ("u1", "i5")]


def _table() -> pa.Table:
    rows = TRAIN + TEST
    n = len(rows)
    return pa.table(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "event_type": pa.array(["view"] * n).dictionary_encode(),
            "user_id": [u for u, _ in rows],
            "session_id": [f"{u}-{i // 5}" for i, (u, _) in enumerate(rows)],
            "item_id": [i for _, i in rows],
            "timestamp": pa.array(
                [T0 + timedelta(minutes=i) for i in range(n)], pa.timestamp("ms", tz="UTC")
            ),
            "weight": pa.array([EVENT_WEIGHTS["view"]] * n, pa.float32()),
        }
    )


def test_requests_are_the_first_event_after_the_cut_and_targets_the_rest() -> None:
    data = interactions_from_table(_table())
    split = temporal_split(data, 0.8)
    assert split.train.n_events == len(TRAIN)
    requests = session_requests(data, split)
    train = split.train
    # u2 and u3 have nothing left to find once their only new item is the request's
    assert train.user_ids[requests.users].tolist() == ["u1"]
    assert train.item_ids[requests.items].tolist() == ["i3"]
    assert requests.weights.tolist() == [EVENT_WEIGHTS["view"]]
    assert [sorted(train.item_ids[t].tolist()) for t in requests.targets] == [["i4", "i5"]]
    assert len(session_requests(data, split, max_users=1)) == 1


def test_in_session_metrics_by_hand() -> None:
    data = interactions_from_table(_table())
    split = temporal_split(data, 0.8)
    requests = session_requests(data, split)
    popularity = Popularity().fit(split.train)
    # u1 saw i1, i2 and asks with i3: popularity's best of the rest is i4 (3 events), then i5 (2)
    got = evaluate_in_session(popularity, requests, split, k=1)
    assert got["ndcg@1"] == 1.0 and got["recall@1"] == 0.5 and got["users"] == 1
    assert evaluate_in_session(popularity, requests, split, k=2)["recall@2"] == 1.0


def test_fold_in_answers_from_the_training_items_and_the_visit() -> None:
    data = interactions_from_table(_table())
    split = temporal_split(data, 0.8)
    requests = session_requests(data, split)
    seen: list[tuple[int, list[int], list[float]]] = []

    class Recorder(Popularity):
        def reference(self, user_index, items, weights, exclude, k):  # type: ignore[no-untyped-def]
            seen.append((int(user_index), items.tolist(), weights.tolist()))
            return super().reference(user_index, items, weights, exclude, k)

    model = Recorder().fit(split.train)
    evaluate_in_session(model, requests, split, k=1)
    evaluate_in_session(model, requests, split, k=1, route="visit")
    evaluate_in_session(model, requests, split, k=1, route="session")
    train = split.train
    u1 = int(requests.users[0])
    (served_user, served_items, _), (folded_user, folded_items, folded_weights), anonymous = seen
    assert served_user == u1 and train.item_ids[served_items].tolist() == ["i3"]
    # the anonymous route, u1's training items (i1, i2: two views each) then the visit's i3
    assert folded_user == -1
    assert train.item_ids[folded_items].tolist() == ["i1", "i2", "i3"]
    assert folded_weights == pytest.approx([2 * EVENT_WEIGHTS["view"]] * 2 + [EVENT_WEIGHTS["view"]])
    # an anonymous visit: the request's event alone
    assert anonymous[0] == -1 and train.item_ids[anonymous[1]].tolist() == ["i3"]
    with pytest.raises(ValueError, match="route must be one of"):
        evaluate_in_session(model, requests, split, k=1, route="elsewhere")
