"""Logged lists for off-policy evaluation, read from curated events (impressions + feedback).

Impression rows carry, in their ``properties``, what serving logged for off-policy evaluation
(``propensity``, ``spread``, ``list_propensity``; the shopper: ``user_hash``; docs/contracts.md, "Served
lists"); rows without them were served as ranked (probability 1). Clicks and purchases join an
impression by ``recommendation_id`` and ``item_id`` within the monitoring's attribution windows
(click 30 min, purchase 24 h). Everything is Arrow compute and numpy: the properties are read with
regular expressions in Arrow rather than parsed row by row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shelfwise.bundle import text_list
from shelfwise.errors import InputError
from shelfwise.offpolicy import DirectModel, LoggedLists, rank_direct_model
from shelfwise.served_lists import user_hash

if TYPE_CHECKING:
    from shelfwise.serving.config import ServingRules
    from shelfwise.serving.model import LoadedModel

CLICK_SECONDS = 30 * 60
PURCHASE_SECONDS = 24 * 3600
RANK_DEPTH = 200  # how deep :func:`logging_ranks` reads a model's ranking for the direct model
_NUM = r"-?[0-9.]+(?:[eE][-+]?[0-9]+)?"


@dataclass
class LoggedData:
    """Logged lists and what identifies each: ids, variant, version, user reference."""

    lists: LoggedLists
    item_ids: np.ndarray  # vocabulary: code -> item id
    recommendation_ids: np.ndarray
    variants: np.ndarray
    model_versions: np.ndarray
    user_refs: np.ndarray  # object array: the lines' user hash (of the routing key), None when absent
    explored_share: float

    def subset(self, keep: np.ndarray) -> LoggedData:
        ll = self.lists
        return LoggedData(
            LoggedLists(
                ll.items[keep],
                ll.propensity[keep],
                ll.spread[keep],
                ll.clicks[keep],
                ll.conversions[keep],
                ll.list_propensity[keep],
            ),
            self.item_ids,
            self.recommendation_ids[keep],
            self.variants[keep],
            self.model_versions[keep],
            self.user_refs[keep],
            self.explored_share,
        )


def _extract(props: pa.ChunkedArray, key: str, pattern: str) -> pa.ChunkedArray:
    got = pc.extract_regex(props, f'"{key}":\\s*(?P<v>{pattern})')
    return pc.struct_field(got, [0])


def _ms(col: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_timestamp(col.type):
        return np.asarray(
            pc.cast(pc.cast(col, pa.timestamp("ms", tz="UTC")), pa.int64()).to_numpy(zero_copy_only=False)
        )
    return np.asarray(
        pc.cast(
            pc.cast(pc.strptime(col, "%Y-%m-%dT%H:%M:%S", "ms", error_is_null=True), pa.timestamp("ms")),
            pa.int64(),
        ).to_numpy(zero_copy_only=False)
    )


def logged_lists(events: pa.Table) -> LoggedData:
    """The served lists in ``events`` (curated columns), with their clicks and purchases."""
    need = {"event_type", "recommendation_id", "item_id", "timestamp", "position"}
    missing = need - set(events.column_names)
    if missing:
        raise InputError(f"the events lack columns {sorted(missing)}")
    etype = pc.cast(events["event_type"], pa.string())
    imp = events.filter(pc.and_(pc.equal(etype, "impression"), pc.is_valid(events["recommendation_id"])))
    imp = imp.filter(pc.is_valid(imp["position"]))
    if imp.num_rows == 0:
        raise InputError("the events hold no impressions (served lists)")
    n_rows = imp.num_rows
    rec = pc.cast(imp["recommendation_id"], pa.string())
    rec_codes = pc.dictionary_encode(rec).combine_chunks()
    list_idx = np.asarray(rec_codes.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    rec_ids = np.asarray(rec_codes.dictionary.to_numpy(zero_copy_only=False), dtype=object)
    n = rec_ids.size
    pos = np.asarray(pc.cast(imp["position"], pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    if pos.min() < 0:
        raise InputError("impression positions must be >= 0")
    width = int(pos.max()) + 1
    item = pc.cast(imp["item_id"], pa.string())
    if item.null_count:
        raise InputError("impressions without an item id")
    item_codes = pc.dictionary_encode(item).combine_chunks()
    codes = np.asarray(item_codes.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    vocab = np.asarray(item_codes.dictionary.to_numpy(zero_copy_only=False), dtype=object)

    if "properties" in imp.column_names:
        props = pc.cast(imp["properties"], pa.string())
        prop = pc.cast(_extract(props, "propensity", _NUM), pa.float64())
        lprop = pc.cast(_extract(props, "list_propensity", _NUM), pa.float64())
        spread = pc.equal(_extract(props, "spread", "true|false"), "true")
        ref = pc.utf8_slice_codeunits(_extract(props, "user_hash", '"[^"]*"'), 1, -1)
        propensity = np.asarray(pc.fill_null(prop, 1.0).to_numpy(zero_copy_only=False), dtype=np.float64)
        # no logging keys: served as ranked (1); keys with a null list propensity: unknown (NaN)
        list_p_row = np.asarray(
            pc.if_else(pc.is_null(prop), 1.0, pc.fill_null(lprop, float("nan"))).to_numpy(
                zero_copy_only=False
            ),
            dtype=np.float64,
        )
        spread_row = np.asarray(pc.fill_null(spread, False).to_numpy(zero_copy_only=False), dtype=bool)
        ref_row = np.asarray(ref.to_numpy(zero_copy_only=False), dtype=object)
    else:
        propensity = np.ones(n_rows)
        list_p_row = np.ones(n_rows)
        spread_row = np.zeros(n_rows, bool)
        ref_row = np.full(n_rows, None, dtype=object)
    if not np.all((propensity > 0) & (propensity <= 1)):
        raise InputError("impression propensities must be in (0, 1]")

    items = np.full((n, width), -1, dtype=np.int64)
    items[list_idx, pos] = codes
    prop_m = np.ones((n, width))
    prop_m[list_idx, pos] = propensity
    spread_m = np.zeros((n, width), bool)
    spread_m[list_idx, pos] = spread_row
    list_p = np.ones(n)
    list_p[list_idx] = list_p_row
    refs = np.full(n, None, dtype=object)
    refs[list_idx] = ref_row
    variants = np.full(n, None, dtype=object)
    versions = np.full(n, None, dtype=object)
    for name, out in (("variant", variants), ("model_version", versions)):
        if name in imp.column_names:
            out[list_idx] = np.asarray(
                pc.cast(imp[name], pa.string()).to_numpy(zero_copy_only=False), dtype=object
            )
    # positions must be 0..len-1 without gaps (served lists are)
    valid = items >= 0
    lengths = valid.sum(axis=1)
    if not np.all(valid[np.arange(width)[None, :] < lengths[:, None]]):
        raise InputError("a served list's positions have gaps; impressions are incomplete")

    clicks = np.zeros((n, width))
    conv = np.zeros((n, width))
    imp_ts = np.zeros(n, dtype=np.int64)
    imp_ts[list_idx] = _ms(imp["timestamp"])
    lookup: dict[str, np.ndarray] = {}  # sorted (list, item code) keys -> position
    targets: tuple[tuple[str, np.ndarray, int], ...] = (
        ("click", clicks, CLICK_SECONDS),
        ("purchase", conv, PURCHASE_SECONDS),
    )
    for kind, out, horizon in targets:
        fb = events.filter(pc.and_(pc.equal(etype, kind), pc.is_valid(events["recommendation_id"])))
        if fb.num_rows == 0:
            continue
        f_list = pc.index_in(pc.cast(fb["recommendation_id"], pa.string()), value_set=rec_codes.dictionary)
        f_item = pc.index_in(pc.cast(fb["item_id"], pa.string()), value_set=item_codes.dictionary)
        fl = np.asarray(pc.fill_null(f_list, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
        fi = np.asarray(pc.fill_null(f_item, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
        ft = _ms(fb["timestamp"])
        ok = (fl >= 0) & (fi >= 0)
        fl, fi, ft = fl[ok], fi[ok], ft[ok]
        if not lookup:
            lookup_keys = list_idx * (vocab.size + 1) + codes
            order = np.argsort(lookup_keys, kind="stable")
            lookup = {"keys": lookup_keys[order], "pos": pos[order]}
        keys = fl * (vocab.size + 1) + fi
        at = np.searchsorted(lookup["keys"], keys)
        at = np.minimum(at, lookup["keys"].size - 1)
        hit = lookup["keys"][at] == keys
        delay = ft - imp_ts[fl]
        hit &= (delay >= -60_000) & (delay <= horizon * 1000)
        out[fl[hit], lookup["pos"][at[hit]]] = 1.0  # a double click counts once
    explored = float((spread_m & valid).any(axis=1).mean())
    lists = LoggedLists(items, prop_m, spread_m & valid, clicks, conv, list_p)
    return LoggedData(lists, vocab, rec_ids, variants, versions, refs, explored)


class Scorer(Protocol):
    """What a candidate needs to offer: its top-k item ids for a user reference (None: unknown)."""

    def __call__(self, user_ref: str, k: int, /) -> list[str] | None: ...


def bundle_scorer(model: LoadedModel, rules: ServingRules | None = None) -> Scorer:
    """A loaded bundle as a candidate: known users' top-k as serving ranks them for
    ``GET /v1/users/{id}/recommendations`` under ``rules`` (default: the default serving rules:
    out of stock and the user's stored purchases excluded), without exploration.

    Users are matched by the served-list line's ``user`` (``user_hash`` of each id in the bundle)."""
    from shelfwise.serving.config import ServingRules

    rules = rules or ServingRules()
    cat = model.catalog
    users = [] if cat.users is None else cat.users.tolist()
    by_ref = {user_hash(u.decode() if isinstance(u, bytes) else str(u)): i for i, u in enumerate(users)}
    base = ~cat.in_stock if rules.exclude_out_of_stock else np.zeros(cat.n_items, dtype=bool)
    base = np.ascontiguousarray(base, dtype=bool)
    blocked = [cat.categories[c] for c in rules.blocked_categories if c in cat.categories]
    if blocked:
        base |= np.isin(cat.category_codes, blocked)
    no_items, no_weights = np.zeros(0, np.int64), np.zeros(0, np.float32)
    cache: dict[tuple[int, int], list[str]] = {}

    def mask_for(uidx: int) -> np.ndarray:
        if not rules.exclude_purchased:
            return base
        bought = cat.stored_purchases(uidx, rules.max_stored_purchases)
        if not len(bought):
            return base
        mask = base.copy()
        mask[np.asarray(bought, dtype=np.int64)] = True
        return mask

    def score(ref: str, k: int, /) -> list[str] | None:
        uidx = by_ref.get(ref)
        if uidx is None:
            return None
        got = cache.get((uidx, k))
        if got is None:
            _, idx = model.score(uidx, no_items, no_weights, mask_for(uidx), k)
            got = text_list(cat.item_ids[np.asarray(idx, dtype=np.intp)])
            cache[(uidx, k)] = got
        return got

    return score


def candidate_lists(data: LoggedData, scorer: Scorer) -> tuple[LoggedData, np.ndarray, int]:
    """(the lists the candidate can be scored on, its lists as item codes, the number of codes).

    A list counts when it has a user reference the candidate knows; the candidate ranks as many
    items as the logged list showed."""
    lengths = (data.lists.items >= 0).sum(axis=1)
    code_of = {str(v): i for i, v in enumerate(data.item_ids.tolist())}
    keep = np.zeros(data.lists.n, dtype=bool)
    width = data.lists.items.shape[1]
    target = np.full((data.lists.n, width), -1, dtype=np.int64)
    for row in range(data.lists.n):
        ref = data.user_refs[row]
        if ref is None:
            continue
        ranked = scorer(str(ref), int(lengths[row]))
        if ranked is None:
            continue
        keep[row] = True
        for p, item in enumerate(ranked[:width]):
            code = code_of.get(item)
            if code is None:
                code = code_of[item] = len(code_of)
            target[row, p] = code
    sub = data.subset(keep)
    sub.item_ids = np.asarray(list(code_of), dtype=object)  # codes the candidate added included
    return sub, target[keep], len(code_of)


def logging_ranks(
    data: LoggedData, target: np.ndarray, logging_model: Scorer, max_rank: int = RANK_DEPTH
) -> tuple[np.ndarray, np.ndarray]:
    """The logging model's rank of every logged and every target item, per list's shopper
    (``max_rank`` beyond its top ``max_rank``): what :func:`shelfwise.offpolicy.rank_direct_model` fits."""
    vocab = data.item_ids
    n, width = data.lists.items.shape
    ranks_l = np.full((n, width), max_rank, dtype=np.int64)
    ranks_t = np.full(target.shape, max_rank, dtype=np.int64)
    cache: dict[str, dict[str, int]] = {}
    for row in range(n):
        ref = data.user_refs[row]
        if ref is None:
            continue
        table = cache.get(ref)
        if table is None:
            top = logging_model(str(ref), max_rank) or []
            table = cache[ref] = {item: r for r, item in enumerate(top)}
        for q, code in enumerate(data.lists.items[row].tolist()):
            if code >= 0:
                ranks_l[row, q] = table.get(str(vocab[code]), max_rank)
        for p, code in enumerate(target[row].tolist()):
            if code >= 0 and code < vocab.size:
                ranks_t[row, p] = table.get(str(vocab[code]), max_rank)
    return ranks_l, ranks_t


def two_rank_direct_model(
    data: LoggedData,
    target: np.ndarray,
    logging_model: Scorer,
    candidate: Scorer,
    n_ranked: int,
    theta: np.ndarray | None = None,
) -> DirectModel:
    """DR's direct model by the logging model's and the candidate's rank of each item for the
    shopper (:func:`shelfwise.offpolicy.rank_direct_model`, normal rank quantiles among
    ``n_ranked`` catalogue items): what the gate and ``evaluate --logging-model`` use."""
    ranks_l, ranks_t = logging_ranks(data, target, logging_model)
    own_l, _ = logging_ranks(data, target, candidate)
    return rank_direct_model(
        data.lists,
        ranks_l,
        ranks_t,
        theta,
        candidate_ranks_logged=own_l,
        scale="normal",
        n_ranked=max(int(n_ranked), RANK_DEPTH + 1),
    )
