"""The loop with a pseudonymisation key configured: ingest -> train -> serve -> feedback -> monitor.

template.yaml runs with ``PseudonymisationKeyParameter`` set (an SSM SecureString). The ingest
hashes user ids, the model is trained on the hashes, serving hashes the raw user id of the path
the same way (so a known shopper gets a personalised answer, not the fallback), collection
hashes the feedback's user id (so its click joins the served list and the user's history), and
no raw user id or e-mail address reaches curated data, quarantine, served-list lines or the
functions' logs.
"""

from __future__ import annotations

import gzip
import io
import json
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from shelfwise.pseudonym import Pseudonymiser
from shelfwise_local.runtime import LocalRuntime
from shelfwise_local.runtime.httpapi import LOCAL_API_PARAMETERS
from shelfwise_local.runtime.testing import new_runtime

REPO = Path(__file__).resolve().parents[2]
KEY_NAME = "/shop/pseudonymisation-key"
KEY = "e2e-secret-key"
EMAIL = "jane.doe@example.com"


def _post(url: str, doc: Any) -> tuple[int, Any]:
    req = urllib.request.Request(
        url, data=json.dumps(doc).encode(), method="POST", headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return int(resp.status), json.loads(resp.read())


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=60) as resp:
        return json.loads(resp.read())


def _curated_rows(rt: LocalRuntime, prefix: str = "curated/events/") -> list[dict[str, Any]]:
    bucket = rt.physical_name("CuratedBucket")
    keys = [
        o["Key"]
        for o in rt.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        if o["Key"].endswith(".parquet")
    ]
    return [
        row
        for k in keys
        for row in pq.read_table(
            io.BytesIO(rt.s3.get_object(Bucket=bucket, Key=k)["Body"].read())
        ).to_pylist()
    ]


def _objects_text(rt: LocalRuntime, bucket_id: str, prefix: str = "") -> str:
    bucket = rt.physical_name(bucket_id)
    out = []
    for o in rt.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
        body = rt.s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        out.append((gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body).decode("utf-8", "replace"))
    return "\n".join(out)


@pytest.fixture
def keyed() -> Any:
    rt = new_runtime(
        REPO / "template.yaml",
        parameters={**LOCAL_API_PARAMETERS, "PseudonymisationKeyParameter": KEY_NAME},
    )
    try:
        rt.client("ssm").put_parameter(Name=KEY_NAME, Value=KEY, Type="SecureString")
        yield rt
    finally:
        rt.close()


def test_the_loop_with_a_pseudonymisation_key(keyed: LocalRuntime, tmp_path: Path) -> None:
    from shelfwise.simulator.generate import simulate_to_files
    from shelfwise.simulator.params import ShopParams

    rt = keyed
    hasher = Pseudonymiser(KEY.encode())
    simulate_to_files(ShopParams(n_users=800, n_items=300, n_days=4), seed=11, out_dir=tmp_path)
    files = sorted((tmp_path / "events").iterdir())
    users: Counter[str] = Counter()
    for f in files:
        for line in f.read_text().splitlines()[1:]:
            user = line.split(",")[2].strip('"')
            if user:  # anonymous rows have a session only
                users[user] += 1
    for f in files:
        rt.put_object("RawBucket", f"raw/native/{f.name}", f.read_bytes(), pump=False)
    # A bad row carrying a raw user id and an e-mail: quarantined, but not as raw text.
    rt.put_object(
        "RawBucket",
        "raw/native/bad.jsonl",
        json.dumps(
            {
                "event_type": "teleport",
                "user_id": "raw-user-4711",
                "item_id": "1",
                "timestamp": "2026-01-05T10:00:00Z",
                "properties": {"email": EMAIL},
            }
        )
        + "\n",
        pump=False,
    )
    rt.pump()
    ingests = rt.invocations_of("IngestEventsFunction")
    assert ingests and all(i.ok for i in ingests), [i.error for i in ingests if not i.ok]

    # curated: only pseudonyms
    rows = _curated_rows(rt)
    curated_users = {r["user_id"] for r in rows if r["user_id"]}
    assert curated_users and all(u.startswith("p_") and len(u) == 34 for u in curated_users)
    assert hasher.one(users.most_common(1)[0][0]) in curated_users
    # the ingest's bot flags name actors by the same pseudonyms, never by a raw id
    flagged = {r["actor"] for r in _curated_rows(rt, "curated/_bots/")}
    assert not flagged & set(users) and all(a.startswith("p_") for a in flagged)
    quarantine = _objects_text(rt, "QuarantineBucket")
    assert "teleport" in quarantine and "raw-user-4711" not in quarantine and EMAIL not in quarantine

    # train on the pseudonymised data: the first version becomes champion
    payload = rt.invoke("TrainModelFunction", {"mode": "train"})
    assert payload["training"]["version"], payload

    # serve: a known shopper by the raw id the shop knows, personalised
    known = [u for u, n in users.most_common(40)]
    answers = [_get(f"{rt.api_url}/v1/users/{u}/recommendations?k=5") for u in known]
    personalised = [a for a in answers if a["variant"] != "fallback"]
    assert len(personalised) >= len(known) // 2, Counter(a["variant"] for a in answers)
    # the pseudonym itself names the same shopper (hashing is idempotent), a stranger gets the fallback
    again = _get(f"{rt.api_url}/v1/users/{hasher.one(known[0])}/recommendations?k=5")
    assert again["variant"] == answers[0]["variant"]
    assert _get(f"{rt.api_url}/v1/users/nobody-knows-me/recommendations?k=5")["variant"] == "fallback"

    # feedback on a served list, by the raw id and with an e-mail in its properties
    served = personalised[0]
    user = known[answers.index(served)]
    status, ack = _post(
        f"{rt.api_url}/v1/events",
        {
            "events": [
                {
                    "event_type": "click",
                    "user_id": user,
                    "session_id": "s-e2e",
                    "item_id": served["items"][0]["item_id"],
                    "timestamp": "2026-12-06T10:00:00Z",
                    "recommendation_id": served["recommendation_id"],
                    "position": 0,
                    "properties": {"contact": f"write to {EMAIL}", "phone": "+44 20 7946 0958"},
                }
            ]
        },
    )
    assert status == 200 and ack["accepted"] == 1, ack
    rt.pump()
    for _ in range(3):  # served lists reach raw/ through the log subscription at the next pumps
        rt.advance(60)
        rt.pump()
    raw_events = _objects_text(rt, "RawBucket", "raw/events/")
    assert hasher.one(user) in raw_events and f'"{user}"' not in raw_events and EMAIL not in raw_events
    rows = _curated_rows(rt)
    clicks = [
        r
        for r in rows
        if r["recommendation_id"] == served["recommendation_id"] and str(r["event_type"]) == "click"
    ]
    impressions = [
        r
        for r in rows
        if r["recommendation_id"] == served["recommendation_id"] and str(r["event_type"]) == "impression"
    ]
    assert clicks and impressions, "the click does not join its served list"
    assert clicks[0]["user_id"] == hasher.one(user)
    assert EMAIL not in (clicks[0]["properties"] or "") and "+44" not in (clicks[0]["properties"] or "")

    # monitor: a pass over the pseudonymised data
    monitored = rt.invoke("ComputeMetricsFunction", {"pass": "fast+deep"})
    assert monitored, monitored

    # no raw user id in any function's output (served lists name items, and the simulated shop
    # numbers items and users alike, so their item ids are left out of the comparison)
    raw_ids = set(known) | {"raw-user-4711", EMAIL}
    values: set[str] = set()
    for inv in rt.invocations:
        for line in inv.stdout.splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                values.update(line.split())
                continue
            if isinstance(doc, dict) and doc.get("shelfwise") == "served_list":
                doc = {k: v for k, v in doc.items() if k != "items"}
            values.update(_strings(doc))
    assert not raw_ids & values, raw_ids & values
    assert not any(EMAIL in v for v in values)


def _strings(doc: Any) -> list[str]:
    if isinstance(doc, dict):
        return [s for k, v in doc.items() for s in (str(k), *_strings(v))]
    if isinstance(doc, list):
        return [s for v in doc for s in _strings(v)]
    return [str(doc)] if doc is not None else []
