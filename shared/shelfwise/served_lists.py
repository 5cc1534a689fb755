"""The served-list contract: what serving writes for each list it serves, and what ingest reads.

Serving writes one compact JSON line per served list (``served_list_line``) to its log; the log
subscription ships the lines to ``raw/impressions/``; the ingest expands each line into the native
``impression`` rows (``served_list_rows``): exactly the rows ``impression_rows`` defines, one per
item. Both sides import this module (it sits next to ``events.py``, the event contract), so
neither reaches into the other.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from shelfwise.events import SCHEMA_VERSION, derive_event_id

# The marker key and value of a served-list line (the subscription filter matches on them).
MARKER_KEY = "shelfwise"
SERVED_LIST = "served_list"
FILTER_PATTERN = '{ $.shelfwise = "served_list" }'
# A served list never has more items than `k` allows (the API caps k at 500).
MAX_SERVED_ITEMS = 500

# (recommendation_id, variant, model_version, endpoint, k, epoch seconds, item ids, scores)
Served = (
    tuple[str, str, str, str, int, float, Sequence[str], Sequence[float]]
    | tuple[str, str, str, str, int, float, Sequence[str], Sequence[float], str | None]
    | tuple[str, str, str, str, int, float, Sequence[str], Sequence[float], str | None, Sequence[str]]
)
# An interleaved list (variant ``interleaved``) ends with each item's contributing model version.
# A served list may end with the hash of its routing key (user id, else session id): user_hash.
_USER_HASH_CHARS = frozenset("0123456789abcdef")


def user_hash(user_key: str) -> str:
    """The pseudonymous key a served list records for its user (hex BLAKE2b-128 of the id).

    "What was user U served at T" is answered by hashing U the same way; the logs, raw files and
    curated rows never hold the id itself. (Pseudonymous, not anonymous: whoever knows an id can
    find that user's lists, which is the point.)
    """
    return hashlib.blake2b(user_key.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


@dataclass(frozen=True)
class ListLogging:
    """What off-policy evaluation needs of a served list, written when serving explores.

    ``propensities[p]``: the probability that the serving policy put the item shown at position
    ``p`` there (1 for a list served as ranked); ``spread[p]``: that item's probability is the same
    at every position of the list (an item swapped in from the exploration pool), else it belongs
    to its position only; ``list_propensity``: the probability of the whole list; ``policy``: the
    policy's name and parameters. (Which shopper: the line's ``user``, ``user_hash`` of the
    routing key, so a candidate can be scored for the same shopper.)
    """

    propensities: Sequence[float]
    spread: Sequence[bool]
    list_propensity: float | None  # None: not known (written null; the list level is refused)
    policy: Mapping[str, Any]


def _stamp(ts: float) -> str:
    """ISO 8601 UTC with milliseconds and a ``Z``: the impression rows' timestamp spelling."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def impression_rows(served: Served, logging: ListLogging | None = None) -> list[dict[str, Any]]:
    """The native-schema impression rows of one served list, one per item, positions 0-based.

    The reference definition of what a served list becomes in ``raw/``: the ingest's expansion of
    a served-list line (``served_list_rows``) must give exactly these rows. With ``logging``, each
    row's properties also carry its propensity (``_logging_props``).
    """
    rec_id, variant, version, endpoint, k, ts, items, scores, *rest = served
    user = cast("str | None", rest[0]) if rest else None
    sources = cast("Sequence[str]", rest[1]) if len(rest) > 1 else None
    stamp = _stamp(ts)
    props: dict[str, Any] = {"endpoint": endpoint, "k": k, "schema_version": SCHEMA_VERSION}
    if user is not None:
        props["user_hash"] = user
    return [
        _row(
            derive_event_id("impression", rec_id, pos),
            rec_id,
            item,
            stamp,
            pos,
            score,
            variant,
            version if sources is None else sources[pos],
            props if logging is None else {**props, **_logging_props(logging, pos)},
        )
        for pos, (item, score) in enumerate(zip(items, scores, strict=True))
    ]


def _g9(value: float) -> float:
    """A probability as the line writes it (9 significant digits), so both sides agree exactly."""
    return float(f"{value:.9g}")


def _logging_props(logging: ListLogging, pos: int) -> dict[str, Any]:
    """The impression row's properties for off-policy evaluation (position ``pos`` of its list)."""
    props: dict[str, Any] = {
        "propensity": _g9(logging.propensities[pos]),
        "spread": bool(logging.spread[pos]),
        "list_propensity": None if logging.list_propensity is None else _g9(logging.list_propensity),
        "policy": dict(logging.policy),
    }
    return props


def _row(
    event_id: str,
    rec_id: str,
    item: str,
    stamp: str,
    pos: int,
    score: float | None,
    variant: str,
    version: str,
    props: dict[str, Any],
) -> dict[str, Any]:
    """One impression row in the native schema (both ``impression_rows`` and the ingest's
    ``served_list_rows`` build theirs here)."""
    return {
        "event_id": event_id,
        "event_type": "impression",
        "session_id": rec_id,
        "item_id": item,
        "timestamp": stamp,
        "recommendation_id": rec_id,
        "position": pos,
        "score": None if score is None else round(float(score), 6),
        "variant": variant,
        "model_version": version,
        "properties": props,
    }


_SCORE_FORMATS: dict[int, str] = {}  # n -> "%.6f,%.6f,..." (n times): one format op per list


def _plain(text: str) -> bool:
    """Whether ``text`` is its own JSON string body (printable ASCII, no quote or backslash)."""
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


_PROP_FORMATS: dict[int, str] = {}  # n -> "%.9g,%.9g,..." (n times)
_POLICY_JSON: dict[tuple[tuple[str, Any], ...], str] = {}  # a policy's JSON, rendered once


def _logging_tail(logging: ListLogging) -> str:
    """The line's off-policy keys, as the JSON text that goes before its closing brace."""
    n = len(logging.propensities)
    fmt = _PROP_FORMATS.get(n)
    if fmt is None:
        fmt = _PROP_FORMATS.setdefault(n, ",".join(["%.9g"] * n))
    props = fmt % tuple(logging.propensities) if n else ""
    spread = ",".join(["true" if s else "false" for s in logging.spread])
    list_p = "null" if logging.list_propensity is None else f"{logging.list_propensity:.9g}"
    key = tuple(sorted(logging.policy.items()))
    try:
        policy = _POLICY_JSON.get(key)
    except TypeError:  # an unhashable value: render it each time
        policy = None
        key = ()
    if policy is None:
        policy = json.dumps(dict(logging.policy), separators=(",", ":"), sort_keys=True)
        if key and len(_POLICY_JSON) < 64:
            _POLICY_JSON[key] = policy
    return f',"propensities":[{props}],"spread":[{spread}],"list_propensity":{list_p},"policy":{policy}'


def served_list_line(served: Served, logging: ListLogging | None = None) -> str:
    """The served-list log line (compact JSON, newline-terminated) of one served list.

    Scores have 6 decimals, as the impression rows carry them (``"%.6f"`` parses back to exactly
    ``round(score, 6)``). Hand-assembled, because it runs on every request: the usual ids and
    scores cost about a third of ``json.dumps`` (whose float formatting dominates). Anything
    unusual (ids needing escapes, a non-finite score, no items) takes ``json.dumps``; a non-finite
    score is written as ``null``, as the line must stay valid JSON or the subscription filter
    would not match it and the whole list would be lost.
    """
    rec_id, variant, version, endpoint, k, ts, items, scores, *rest = served
    user = cast("str | None", rest[0]) if rest else None
    sources = cast("Sequence[str]", rest[1]) if len(rest) > 1 else None
    n = len(items)
    if logging is not None and len(logging.propensities) != n:
        raise ValueError(f"{len(logging.propensities)} propensities for {n} items")
    tail = "" if logging is None else _logging_tail(logging)
    if (
        sources is None
        and n
        and n == len(scores)
        and type(k) is int
        and math.isfinite(sum(scores))
        and _plain("".join(items) + rec_id + variant + version + endpoint + (user or ""))
    ):
        fmt = _SCORE_FORMATS.get(n)
        if fmt is None:
            fmt = _SCORE_FORMATS.setdefault(n, ",".join(["%.6f"] * n))
        ids = '","'.join(items)
        return (
            f'{{"{MARKER_KEY}":"{SERVED_LIST}","schema_version":{SCHEMA_VERSION},'
            f'"recommendation_id":"{rec_id}","variant":"{variant}","model_version":"{version}",'
            f'"endpoint":"{endpoint}","k":{k},"timestamp":"{_stamp(ts)}",'
            + (f'"user":"{user}",' if user is not None else "")
            + f'"items":["{ids}"],"scores":[{fmt % tuple(scores)}]{tail}}}\n'
        )
    doc = {
        MARKER_KEY: SERVED_LIST,
        "schema_version": SCHEMA_VERSION,
        "recommendation_id": rec_id,
        "variant": variant,
        "model_version": version,
        "endpoint": endpoint,
        "k": k,
        "timestamp": _stamp(ts),
        **({"user": user} if user is not None else {}),
        "items": list(items),
        "scores": [round(float(s), 6) if math.isfinite(s) else None for s in scores],
    }
    if sources is not None:
        doc["sources"] = list(sources)
    text = json.dumps(doc, separators=(",", ":"))
    return text[:-1] + tail + "}\n"


# ---------------------------------------------------------------- the ingest side
class ServedListError(ValueError):
    """A served-list line that breaks its contract (the message says how); quarantined whole."""


def is_served_list(doc: Any) -> bool:
    """Whether a parsed JSON line is a served-list line (rather than a native event)."""
    return isinstance(doc, dict) and doc.get(MARKER_KEY) == SERVED_LIST


def _str_field(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str):
        raise ServedListError(f"{name} must be a string, got {type(value).__name__}")
    return value


def _int_field(doc: dict[str, Any], name: str) -> int:
    value = doc.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ServedListError(f"{name} must be an integer, got {type(value).__name__}")
    return value


def served_list_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The native impression rows of a parsed served-list line: ``impression_rows`` of its list.

    Checks the line's structure (types, items and scores of equal length, 1 to 500 items) and
    raises ``ServedListError`` when it is broken, so the whole line is quarantined rather than
    half-expanded. Values (timestamp range, id lengths) are left to the ingest's row validation,
    like every other row. Unknown keys are ignored. Event ids are
    ``derive_event_id("impression", recommendation_id, position)``, with the hash of the common
    prefix computed once per list.
    """
    rec_id = _str_field(doc, "recommendation_id")
    variant = _str_field(doc, "variant")
    version = _str_field(doc, "model_version")
    endpoint = _str_field(doc, "endpoint")
    stamp = _str_field(doc, "timestamp")
    k = _int_field(doc, "k")
    schema_version = _int_field(doc, "schema_version")
    items, scores = doc.get("items"), doc.get("scores")
    if not isinstance(items, list) or not isinstance(scores, list):
        raise ServedListError("items and scores must be lists")
    if len(items) != len(scores):
        raise ServedListError(f"{len(items)} items but {len(scores)} scores")
    if not 1 <= len(items) <= MAX_SERVED_ITEMS:
        raise ServedListError(f"a served list has 1 to {MAX_SERVED_ITEMS} items, not {len(items)}")
    if not all(isinstance(i, str) for i in items):
        raise ServedListError("item ids must be strings")
    if not all(s is None or (isinstance(s, int | float) and not isinstance(s, bool)) for s in scores):
        raise ServedListError("scores must be numbers")
    sources = doc.get("sources")
    if sources is not None and (
        not isinstance(sources, list)
        or len(sources) != len(items)
        or not all(isinstance(v, str) for v in sources)
    ):
        raise ServedListError("sources must be one model version (a string) per item")
    props: dict[str, Any] = {"endpoint": endpoint, "k": k, "schema_version": schema_version}
    user = doc.get("user")
    if user is not None:
        if not isinstance(user, str) or len(user) != 32 or not _USER_HASH_CHARS.issuperset(user):
            raise ServedListError("user must be a user hash (32 lower-case hex characters)")
        props["user_hash"] = user
    logging = _read_logging(doc, len(items))
    prefix = hashlib.blake2b(digest_size=12)
    prefix.update(b"impression\x1e" + rec_id.encode("utf-8", "surrogatepass") + b"\x1e")
    rows = []
    for pos, (item, score) in enumerate(zip(items, scores, strict=True)):
        h = prefix.copy()
        h.update(b"%d\x1e" % pos)
        source = version if sources is None else sources[pos]
        row_props = props if logging is None else {**props, **_logging_props(logging, pos)}
        rows.append(_row(h.hexdigest(), rec_id, item, stamp, pos, score, variant, source, row_props))
    return rows


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _read_logging(doc: dict[str, Any], n: int) -> ListLogging | None:
    """The line's off-policy keys (all or none), checked: propensities in (0, 1], one per item."""
    if "propensities" not in doc:
        return None
    props, spread, list_p, policy = (
        doc.get("propensities"),
        doc.get("spread"),
        doc.get("list_propensity"),
        doc.get("policy"),
    )
    if not isinstance(props, list) or len(props) != n or not all(_number(p) and 0 < p <= 1 for p in props):
        raise ServedListError(f"propensities must be {n} numbers in (0, 1]")
    if not isinstance(spread, list) or len(spread) != n or not all(isinstance(x, bool) for x in spread):
        raise ServedListError(f"spread must be {n} booleans")
    if list_p is not None and (not _number(list_p) or not 0 < float(list_p) <= 1):
        raise ServedListError("list_propensity must be a number in (0, 1] or null")
    if not isinstance(policy, dict):
        raise ServedListError("policy must be an object")
    return ListLogging(props, spread, None if list_p is None else float(list_p), policy)
