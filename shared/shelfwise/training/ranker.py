"""Neural ranker: an MLP that re-ranks a retrieval model's top-C candidates (PyTorch).

The retrieval model (any family) proposes its top ``candidates`` items for a request, the user's
excluded items left out; the MLP scores each (user, candidate) from features the served graph
computes itself (``shelfwise.onnx_ranker``), and the list is re-ordered by that score:

- retrieval: the candidate's score standardised within the list, and its rank (log1p);
- the user: the share of their history's event weight in the candidate's category, and the
  history's length (log1p); a known user's history is their last ``history`` stored events plus
  the request's events, an anonymous one's the request's events;
- the item, as of the end of the training data: all-time and 7-day popularity (log1p, scaled by
  the catalogue's largest), the trend (7 days against the 30-day weekly rate, log ratio), the
  price (log1p, and whether it is known), its freshness (days since first seen) and the days
  since it was last seen (log1p, scaled).

Training lists come from the loop's own feedback where the log has it: served lists (impression
rows with positions and, when exploring, propensities) joined with clicks and purchases by
recommendation id and item (``shelfwise.offpolicy_log``). Each list's logits get a learnt
position-bias term, so what the position explains is not put on the items; serving leaves the term
out (every candidate is scored as if at the same slot), and explored items are weighted by the
inverse of their propensity. The retrieval model's candidates on that window (the positives: the
items the user then touched) are lists too, always: they are what the ranker meets at serving;
where the log has no served lists (a plain event log), they are all.

The loss is a listwise softmax cross-entropy (the target spread over a list's positives). Lists
are split by user: most fit, a fifth stops early (NDCG@10 of the re-ranked candidates). The job
(``shelfwise.training.ranker_stage``) serves the ranker only where it beats the retrieval model
alone on validation users it did not learn from (paired bootstrap, ``shelfwise.training.guard``).

PyTorch is imported only while fitting and in the parity reference; serving runs the ONNX graph.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shelfwise.errors import InputError
from shelfwise.evaluation import hits_matrix, metrics_from_hits
from shelfwise.onnx_export import NEG_INF, _topk
from shelfwise.training.base import Recommender
from shelfwise.training.data import MS_PER_DAY, Interactions, Split
from shelfwise.training.sequential import _torch

Progress = Callable[[str, dict[str, Any]], None]

RANKER = "ranker"
ITEM_FEATURES: tuple[str, ...] = (
    "popularity_all",
    "popularity_7d",
    "trend_7d_vs_30d",
    "log_price",
    "has_price",
    "freshness",
    "days_since_last_seen",
    "category_share",
)
LIST_FEATURES: tuple[str, ...] = (
    "retrieval_score_z",
    "retrieval_rank",
    "category_affinity",
    "history_length",
    "last_category",
)
FEATURES: tuple[str, ...] = LIST_FEATURES + ITEM_FEATURES
EPS = np.float32(1e-6)
MAX_POSITIONS = 64  # position-bias terms learnt; later slots share the last one
IPS_CAP = 20.0
CONSTANT_STD = 1e-3  # a feature's spread in training below which it counts as constant


@dataclass
class ItemTable:
    """Per-item features (float32 [N, len(ITEM_FEATURES)], float16-exact) and category codes (int32 [N])."""

    features: np.ndarray
    category: np.ndarray


def item_table(data: Interactions) -> ItemTable:
    """The item features as of the end of ``data``."""
    n = data.n_items
    end = int(data.ts[-1]) if data.n_events else 0
    w = data.weight.astype(np.float64)
    pop = np.bincount(data.item, weights=w, minlength=n)
    week = data.ts >= end - 7 * MS_PER_DAY
    month = data.ts >= end - 30 * MS_PER_DAY
    p7 = np.bincount(data.item[week], weights=w[week], minlength=n)
    p30 = np.bincount(data.item[month], weights=w[month], minlength=n)
    first = np.full(n, end, dtype=np.int64)
    last = np.zeros(n, dtype=np.int64)
    np.minimum.at(first, data.item, data.ts)
    np.maximum.at(last, data.item, data.ts)
    age = np.maximum(end - first, 0) / MS_PER_DAY
    idle = np.maximum(end - last, 0) / MS_PER_DAY
    price = np.asarray(data.item_info["price"], dtype=np.float64)
    known = np.isfinite(price) & (price > 0)

    def scaled(x: np.ndarray) -> np.ndarray:
        top = np.log1p(x.max(initial=0.0))
        return np.log1p(x) / top if top > 0 else np.zeros_like(x)

    _, category = np.unique(np.asarray(data.item_info["category"], dtype=str), return_inverse=True)
    # the item's (log) share of its category's events: popularity where the user's taste already
    # chose the category, which the shop-wide popularity columns cannot tell
    cat_pop = np.bincount(category, weights=pop, minlength=int(category.max(initial=0)) + 1)
    share = np.log((pop + 1.0) / (cat_pop[category] + 1.0))
    feats = np.stack(
        [
            scaled(pop),
            scaled(p7),
            np.clip(np.log((p7 + 1.0) / (p30 * 7.0 / 30.0 + 1.0)), -3.0, 3.0),
            np.where(known, np.log1p(np.where(known, price, 0.0)), 0.0),
            known.astype(np.float64),
            scaled(age),
            scaled(idle),
            share,
        ],
        axis=1,
    ).astype(np.float32)
    # float16 in the graph (half the bytes at 1M items): rounded here, so the reference reads the
    # same values the graph does
    return ItemTable(
        np.ascontiguousarray(feats.astype(np.float16).astype(np.float32)), category.astype(np.int32)
    )


def stored_histories(data: Interactions, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each user's last ``length`` events as CSR ``(indptr, items int32, weights float32)``."""
    order = np.argsort(data.user, kind="stable")  # data is time-sorted: each user's events stay in order
    user = data.user[order].astype(np.int64)
    counts = np.bincount(user, minlength=data.n_users)
    full_ptr = np.concatenate([[0], np.cumsum(counts)])
    rank_from_end = full_ptr[user + 1] - np.arange(len(order)) - 1
    keep = rank_from_end < length
    kept = np.minimum(counts, length)
    indptr = np.concatenate([[0], np.cumsum(kept)]).astype(np.int64)
    weights = (
        data.weight[order][keep].astype(np.float16).astype(np.float32)
    )  # stored as float16 (event weights are exact)
    return indptr, data.item[order][keep].astype(np.int32), weights


def list_features(
    table: ItemTable,
    cand: np.ndarray,
    scores: np.ndarray,
    hist_items: np.ndarray,
    hist_weights: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """float32 features [C, F] of one candidate list, and which candidates are valid (finite score).

    The same arithmetic, in the same order, as the graph (``shelfwise.onnx_ranker``)."""
    s = np.asarray(scores, dtype=np.float32)
    valid, s0, mean, std = score_stats(s)
    z = (s0 - mean) / (std + EPS)
    rank = np.log1p(np.arange(len(s), dtype=np.float32))
    w = np.maximum(np.asarray(hist_weights, dtype=np.float32), np.float32(0.0))
    h_cat = table.category[np.asarray(hist_items, dtype=np.int64)]
    c_cat = table.category[cand]
    same = (c_cat[:, None] == h_cat[None, :]).astype(np.float32)
    affinity = (same @ w).astype(np.float32) / (w.sum(dtype=np.float32) + EPS)
    n_hist = np.float32(np.log1p(np.float32(len(w))))
    # the candidate is in the category of the history's last event (the mission at hand)
    last = same[:, -1] if len(h_cat) else np.zeros(len(s), np.float32)
    cols = [z, rank, affinity, np.full(len(s), n_hist, np.float32), last]
    x = np.concatenate([np.stack(cols, axis=1).astype(np.float32), table.features[cand]], axis=1)
    return x.astype(np.float32), valid


def score_stats(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.float32, np.float32]:
    """(valid, scores with invalid ones 0, mean and standard deviation of the valid ones)."""
    valid = np.isfinite(s)
    s0 = np.where(valid, s, np.float32(0.0)).astype(np.float32)
    count = np.float32(max(int(valid.sum()), 1))
    mean = np.float32(s0.sum(dtype=np.float32) / count)
    dev = np.where(valid, s0 - mean, np.float32(0.0)).astype(np.float32)
    std = np.float32(np.sqrt(np.float32((dev * dev).sum(dtype=np.float32) / count)))
    return valid, s0, mean, std


Candidates = tuple[np.ndarray, np.ndarray, np.ndarray]  # (indices, scores, features) per user


@dataclass
class Lists:
    """Training lists: features [L, C, F], labels and weights [L, C], valid [L, C], position [L, C]."""

    x: np.ndarray
    label: np.ndarray
    weight: np.ndarray
    valid: np.ndarray
    position: np.ndarray | None
    source: str


def _top_candidates(scores: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-``c`` (indices, scores), highest first, ties to the lower index."""
    part = (
        np.argpartition(-scores, c - 1, axis=1)[:, :c]
        if c < scores.shape[1]
        else np.tile(np.arange(scores.shape[1]), (scores.shape[0], 1))
    )
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    idx = np.take_along_axis(part, order, axis=1)
    return idx.astype(np.int64), np.take_along_axis(vals, order, axis=1)


class Ranker:
    """The retrieval model's top-C re-ranked by an MLP; fit on lists, then ``attach`` to a fitted retrieval."""

    algorithm = RANKER

    def __init__(
        self,
        candidates: int = 100,
        hidden: tuple[int, ...] = (64, 32),
        history: int = 50,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        batch_lists: int = 64,
        epochs: int = 30,
        patience: int = 3,
        seed: int = 42,
    ) -> None:
        if candidates < 10:
            raise InputError("the ranker needs at least 10 candidates")
        self.params: dict[str, Any] = {
            "candidates": int(candidates),
            "hidden": [int(h) for h in hidden],
            "history": int(history),
            "lr": float(lr),
            "weight_decay": float(weight_decay),
            "batch_lists": int(batch_lists),
            "epochs": int(epochs),
            "patience": int(patience),
            "seed": int(seed),
        }
        self.progress: Progress | None = None
        self.net: Any = None
        self.mu = np.zeros(len(FEATURES), np.float32)
        self.sigma = np.ones(len(FEATURES), np.float32)
        self.loss_curve: list[float] = []
        self.validation_curve: list[float] = []
        self.training_data = ""
        self.fit_seconds = 0.0
        # set by attach(): the retrieval model and the data it was fitted on
        self.retrieval: Recommender | None = None
        self.data: Interactions | None = None
        self.items: ItemTable | None = None
        self.stored: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._seen: Any = None

    # ------------------------------------------------------------------ candidates and features
    def attach(self, retrieval: Recommender, data: Interactions) -> Ranker:
        """Use ``retrieval`` (fitted on ``data``) for candidates and ``data``'s item and user features."""
        self.retrieval = retrieval
        self.data = data
        self.items = item_table(data)
        self.stored = stored_histories(data, self.params["history"])
        self._seen = data.matrix("user")
        return self

    def on(self, retrieval: Recommender, data: Interactions) -> Ranker:
        """This fitted ranker re-ranking ``retrieval`` (fitted on ``data``), with ``data``'s features."""
        other = copy.copy(self)
        return other.attach(retrieval, data)

    def _ready(
        self,
    ) -> tuple[Recommender, Interactions, ItemTable, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        if self.retrieval is None or self.data is None or self.items is None or self.stored is None:
            raise RuntimeError("attach a fitted retrieval model first")
        return self.retrieval, self.data, self.items, self.stored

    @property
    def n_items(self) -> int:
        return self._ready()[1].n_items

    def user_history(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        indptr, items, weights = self._ready()[3]
        return items[indptr[user] : indptr[user + 1]].astype(np.int64), weights[
            indptr[user] : indptr[user + 1]
        ]

    def candidate_lists(
        self, users: np.ndarray, c: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Known users' candidates (their training items excluded): (indices [B, C], scores, features [B, C, F])."""
        retrieval, data, table, _ = self._ready()
        c = min(c or self.params["candidates"], data.n_items)
        users = np.asarray(users, dtype=np.int64)
        out_i = np.zeros((len(users), c), np.int64)
        out_s = np.zeros((len(users), c), np.float32)
        out_x = np.zeros((len(users), c, len(FEATURES)), np.float32)
        batch = max(1, (1 << 22) // max(data.n_items, 1))
        for lo in range(0, len(users), batch):
            u = users[lo : lo + batch]
            s = np.array(retrieval.score_users(u), dtype=np.float32, copy=True)
            rows = self._seen[u]
            s[np.repeat(np.arange(len(u)), np.diff(rows.indptr)), rows.indices] = NEG_INF
            idx, vals = _top_candidates(s, c)
            out_i[lo : lo + len(u)], out_s[lo : lo + len(u)] = idx, vals
            for j, user in enumerate(u.tolist()):
                h, w = self.user_history(user)
                out_x[lo + j] = list_features(table, idx[j], vals[j], h, w)[0]
        return out_i, out_s, out_x

    # ------------------------------------------------------------------ training lists
    def lists_from_candidates(
        self, split: Split, users: np.ndarray, candidates: Candidates | None = None
    ) -> tuple[Lists, np.ndarray]:
        """Lists for ``split.users[users]``: candidates from the attached retrieval (fitted on
        ``split.train``; ``candidates`` of every ``split.users`` if already computed), positives the
        items each user touched after the cut. Returns the lists of users with at least one positive
        among their candidates, and those users' positions."""
        if candidates is None:
            idx, vals, x = self.candidate_lists(split.users[users])
        else:
            idx, vals, x = (a[users] for a in candidates)
        label = np.stack([np.isin(idx[j], split.targets[u]) for j, u in enumerate(users.tolist())]).astype(
            np.float32
        )
        keep = label.sum(axis=1) > 0
        lists = Lists(
            x[keep], label[keep], np.ones_like(label[keep]), np.isfinite(vals[keep]), None, "candidates"
        )
        return lists, users[keep]

    def lists_from_impressions(
        self, table: pa.Table, cut_ms: int, end_ms: int, users: np.ndarray | None = None
    ) -> Lists | None:
        """Served lists shown to known users (of the attached data; only ``users`` among them when
        given) in ``[cut_ms, end_ms)`` with their clicks and purchases, featured with the attached
        retrieval (fitted before ``cut_ms``); None when there are none.

        The shopper of a list is the impression rows' ``user_id`` where they have one, else the
        served list's ``user_hash`` (``shelfwise.served_lists.user_hash`` of the user id)."""
        from shelfwise.offpolicy_log import logged_lists
        from shelfwise.served_lists import user_hash

        retrieval, data, items, _ = self._ready()
        if not {"recommendation_id", "position"} <= set(table.column_names):
            return None
        try:
            logged = logged_lists(table)
        except InputError:
            return None
        imp = table.filter(
            pc.and_(
                pc.equal(pc.cast(table["event_type"], pa.string()), "impression"),
                pc.and_(pc.is_valid(table["recommendation_id"]), pc.is_valid(table["position"])),
            )
        )
        rec = np.asarray(pc.cast(imp["recommendation_id"], pa.string()).to_pylist(), dtype=object)
        uid = (
            pc.cast(imp["user_id"], pa.string()).to_pylist()
            if "user_id" in imp.column_names
            else [None] * imp.num_rows
        )
        ts = pc.cast(imp["timestamp"], pa.timestamp("ms")).cast(pa.int64()).to_numpy(zero_copy_only=False)
        first: dict[str, tuple[str | None, int]] = {}
        for r, u, t in zip(rec.tolist(), uid, ts.tolist(), strict=True):
            first.setdefault(r, (u, t))
        by_hash: dict[str, int] = {}

        def shopper(user_id: str | None, ref: str | None) -> int:
            if user_id is not None:
                u = int(np.searchsorted(data.user_ids, user_id))
                return u if u < data.n_users and data.user_ids[u] == user_id else -1
            if ref is None:
                return -1
            if not by_hash:
                by_hash.update({user_hash(str(x)): i for i, x in enumerate(data.user_ids.tolist())})
            return by_hash.get(ref, -1)

        ll = logged.lists
        ids = np.asarray(logged.item_ids, dtype=str)
        pos_in_items = np.searchsorted(data.item_ids, ids)
        pos_in_items = np.minimum(pos_in_items, max(data.n_items - 1, 0))
        code_to_item = np.where(data.item_ids[pos_in_items] == ids, pos_in_items, -1)
        c = self.params["candidates"]
        allowed = None
        if users is not None:
            allowed = np.zeros(data.n_users, dtype=bool)
            allowed[users] = True
        xs, labels, weights, valids, positions = [], [], [], [], []
        for li, rid in enumerate(logged.recommendation_ids.tolist()):
            user_id, at = first.get(rid, (None, -1))
            if not cut_ms <= at < end_ms:
                continue
            u = shopper(user_id, logged.user_refs[li])
            if u < 0:
                continue  # anonymous or new shopper: no stored history to feature
            if allowed is not None and not allowed[u]:
                continue
            codes = ll.items[li]
            shown = codes >= 0
            item = np.where(shown, code_to_item[np.maximum(codes, 0)], -1)
            ok = shown & (item >= 0)
            y = np.maximum(ll.clicks[li], ll.conversions[li]) * ok
            if not ok.any() or y.sum() == 0:
                continue
            s = np.array(retrieval.score_users(np.array([u]))[0], dtype=np.float32, copy=True)
            row = self._seen[u]
            s[row.indices] = NEG_INF
            _, top_vals = _top_candidates(s[None, :], min(c, data.n_items))
            item_ok = np.where(ok, item, 0)
            got = s[item_ok]
            # list statistics as serving sees them (the top-C), the logged items' own scores and ranks
            x = list_features(items, item_ok, got, *self.user_history(u))[0]
            _, _, mean, std = score_stats(top_vals[0])
            x[:, 0] = (np.where(np.isfinite(got), got, mean) - mean) / (std + EPS)
            x[:, 1] = np.log1p((s[None, :] > got[:, None]).sum(axis=1)).astype(np.float32)
            valid = ok & np.isfinite(got)
            x[~valid] = 0.0
            xs.append(x)
            labels.append(y.astype(np.float32))
            weights.append(np.minimum(1.0 / ll.propensity[li], IPS_CAP).astype(np.float32))
            valids.append(valid)
            positions.append(np.minimum(np.arange(len(codes)), MAX_POSITIONS - 1))
        if not xs:
            return None
        width = max(len(x) for x in xs)

        def pad(arrs: list[np.ndarray], fill: Any, dtype: Any) -> np.ndarray:
            shape = (len(arrs), width, *arrs[0].shape[1:])
            out = np.full(shape, fill, dtype=dtype)
            for i, a in enumerate(arrs):
                out[i, : len(a)] = a
            return out

        return Lists(
            pad(xs, 0.0, np.float32),
            pad(labels, 0.0, np.float32),
            pad(weights, 0.0, np.float32),
            pad(valids, False, bool),
            pad(positions, 0, np.int64),
            "impressions",
        )

    # ------------------------------------------------------------------ fitting
    def fit_lists(self, train: Lists, stop: Callable[[Ranker], float], metric: str = "ndcg@10") -> Ranker:
        """Fit on ``train``; after each epoch ``stop(self)`` decides early stopping (best epoch kept)."""
        torch = _torch()
        p = self.params
        t0 = time.perf_counter()
        torch.manual_seed(p["seed"])
        torch.set_num_threads(1)
        rng = np.random.default_rng(p["seed"])
        if len(train.x) == 0:
            raise InputError("the ranker has no training list with a positive")
        self.training_data = train.source
        flat = train.x[train.valid]
        self.mu = flat.mean(axis=0).astype(np.float32)
        std = flat.std(axis=0)
        # a feature constant in training (no categories: the affinity and the last-category flag)
        # keeps unit scale, so a value it never took in training moves the MLP by its weight, not
        # by a thousandfold of it
        self.sigma = np.where(std < CONSTANT_STD, 1.0, std).astype(np.float32)
        self.net = _build_net(torch, len(FEATURES), p["hidden"], self.mu, self.sigma)
        bias = torch.nn.Parameter(torch.zeros(MAX_POSITIONS)) if train.position is not None else None
        params = list(self.net.parameters()) + ([bias] if bias is not None else [])
        opt = torch.optim.Adam(params, lr=p["lr"], weight_decay=p["weight_decay"])
        x = torch.from_numpy(train.x)
        target = train.label * train.weight
        target = target / np.maximum(target.sum(axis=1, keepdims=True), 1e-9)
        y = torch.from_numpy(target.astype(np.float32))
        valid = torch.from_numpy(train.valid)
        pos = torch.from_numpy(train.position) if train.position is not None else None
        self.loss_curve, self.validation_curve = [], []
        best_value, best_epoch, best_state = -1.0, 0, None
        for epoch in range(1, p["epochs"] + 1):
            self.net.train()
            total = 0.0
            order = rng.permutation(len(train.x))
            for lo in range(0, len(order), p["batch_lists"]):
                sel = torch.from_numpy(order[lo : lo + p["batch_lists"]])
                logits = self.net(x[sel]).squeeze(-1)
                if bias is not None and pos is not None:
                    logits = logits + bias[pos[sel]]
                logits = logits.masked_fill(~valid[sel], -1e9)
                loss = -(y[sel] * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(sel)
            self.net.eval()
            self.loss_curve.append(round(total / len(order), 6))
            value = float(stop(self))
            self.validation_curve.append(round(value, 6))
            if self.progress is not None:
                self.progress(
                    "epoch",
                    {
                        "family": RANKER,
                        "epoch": epoch,
                        "loss": self.loss_curve[-1],
                        f"validation_{metric}": value,
                    },
                )
            if value > best_value:
                best_value, best_epoch = value, epoch
                best_state = {n: t.detach().clone() for n, t in self.net.state_dict().items()}
            if epoch - best_epoch >= p["patience"]:
                break
        if best_state is not None:
            self.net.load_state_dict(best_state)
        self.params["epochs"] = best_epoch
        self.fit_seconds = time.perf_counter() - t0
        return self

    def mlp(self, x: np.ndarray) -> np.ndarray:
        """The PyTorch MLP's score of feature rows [..., F] (float32)."""
        torch = _torch()
        if self.net is None:
            raise RuntimeError("fit the ranker first")
        with torch.no_grad():
            return self.net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).squeeze(-1).numpy()

    def rerank(self, idx: np.ndarray, vals: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
        """Top-``k`` item indices [B, k] of candidate lists re-ranked by the MLP (-1 past the valid ones)."""
        s = np.where(np.isfinite(vals), self.mlp(x), -np.inf)
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        out = np.take_along_axis(idx, order, axis=1)
        out[~np.isfinite(np.take_along_axis(s, order, axis=1))] = -1
        return out

    # ------------------------------------------------------------------ the Recommender protocol
    def fit(self, data: Interactions) -> Ranker:
        """Not fitted on interactions alone: it needs labelled lists (:func:`train_ranker`)."""
        raise InputError("the ranker is trained on labelled candidate lists: use train_ranker")

    def score_users(self, users: np.ndarray) -> np.ndarray:
        """Dense scores [B, N]: the MLP's on each user's candidates (training items excluded), -inf elsewhere."""
        data = self._ready()[1]
        idx, vals, x = self.candidate_lists(users)
        s = np.where(np.isfinite(vals), self.mlp(x), -np.inf).astype(np.float32)
        out = np.full((len(idx), data.n_items), NEG_INF, np.float32)
        np.put_along_axis(out, idx, s, axis=1)
        return out

    def request_history(
        self, user_index: int, history_items: np.ndarray, history_weights: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The history the features read: a known user's stored events then the request's."""
        h = np.asarray(history_items, dtype=np.int64)
        w = np.asarray(history_weights, dtype=np.float32)
        if user_index >= 0:
            sh, sw = self.user_history(user_index)
            h, w = np.concatenate([sh, h]), np.concatenate([sw, w])
        return h, w

    def reference(
        self,
        user_index: int,
        history_items: np.ndarray,
        history_weights: np.ndarray,
        exclude: np.ndarray,
        k: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The retrieval reference's top-max(k, C), features in numpy, the PyTorch MLP, masked top-k."""
        retrieval, data, table, _ = self._ready()
        c = min(max(k, self.params["candidates"]), data.n_items)
        vals, idx = retrieval.reference(user_index, history_items, history_weights, exclude, c)
        h, w = self.request_history(user_index, history_items, history_weights)
        x, valid = list_features(table, idx, vals, h, w)
        s = np.where(valid, self.mlp(x), NEG_INF).astype(np.float32)
        top_s, top = _topk(s, np.zeros(len(s), bool), k)
        return top_s, idx[top]

    def export_arrays(self) -> dict[str, np.ndarray]:
        """Everything the graph needs besides the retrieval graph."""
        _, _, table, (indptr, items, weights) = self._ready()
        if self.net is None:
            raise RuntimeError("fit the ranker first")
        layers = [m for m in self.net.layers if hasattr(m, "weight")]
        out: dict[str, np.ndarray] = {
            "item_features": table.features,
            "item_category": table.category,
            "user_indptr": indptr,
            "user_items": items,
            "user_weights": weights,
            "mu": self.mu,
            "sigma": self.sigma,
        }
        for i, layer in enumerate(layers):
            out[f"w{i}"] = layer.weight.detach().numpy().T.astype(np.float32).copy()
            out[f"b{i}"] = layer.bias.detach().numpy().astype(np.float32).copy()
        return out

    def to_onnx(self, retrieval_graph: Any = None) -> Any:
        from shelfwise import onnx_ranker

        retrieval = self._ready()[0]
        graph = retrieval_graph if retrieval_graph is not None else retrieval.to_onnx()
        return onnx_ranker.build_ranker_model(graph, self.export_arrays(), self.params["candidates"])

    def describe(self) -> dict[str, Any]:
        return {
            "loss_curve": self.loss_curve,
            "validation_curve": self.validation_curve,
            "epochs": self.params["epochs"],
            "features": list(FEATURES),
            "training_data": self.training_data,
            "retrieval": getattr(self.retrieval, "algorithm", None),
            "fit_seconds": round(self.fit_seconds, 3),
        }


def _build_net(torch: Any, n_in: int, hidden: list[int], mu: np.ndarray, sigma: np.ndarray) -> Any:
    nn = torch.nn

    class MLP(nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            dims = [n_in, *hidden]
            mods: list[Any] = []
            for a, b in itertools.pairwise(dims):
                mods += [nn.Linear(a, b), nn.ReLU()]
            mods.append(nn.Linear(dims[-1], 1))
            self.layers = nn.Sequential(*mods)
            self.register_buffer("mu", torch.from_numpy(mu.copy()))
            self.register_buffer("sigma", torch.from_numpy(sigma.copy()))

        def forward(self, x: Any) -> Any:
            return self.layers((x - self.mu) / self.sigma)

    return MLP()


# --------------------------------------------------------------------------- the job's use


def merge_lists(served: Lists, candidates: Lists) -> Lists:
    """Served lists and candidate lists in one training set (``impressions+candidates``).

    The served lists carry the loop's feedback and their positions; the candidate lists are what
    the ranker meets at serving (the retrieval model's top-C), so it is not fitted only to the
    range of lists another model showed. A candidate list's slots all take position 0: a term
    shared by every slot of a list does not change its softmax."""
    width = max(served.x.shape[1], candidates.x.shape[1])

    def pad(a: np.ndarray, fill: Any) -> np.ndarray:
        out = np.full((a.shape[0], width, *a.shape[2:]), fill, dtype=a.dtype)
        out[:, : a.shape[1]] = a
        return out

    position = served.position if served.position is not None else np.zeros(served.label.shape, np.int64)
    return Lists(
        np.concatenate([pad(served.x, 0.0), pad(candidates.x, 0.0)]),
        np.concatenate([pad(served.label, 0.0), pad(candidates.label, 0.0)]),
        np.concatenate([pad(served.weight, 0.0), pad(candidates.weight, 0.0)]),
        np.concatenate([pad(served.valid, False), pad(candidates.valid, False)]),
        np.concatenate([pad(position, 0), np.zeros((len(candidates.x), width), np.int64)]),
        f"{served.source}+{candidates.source}",
    )


def user_parts(n: int, seed: int, stop_share: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Positions of a split's users in two seeded parts: fit, and stop early (``stop_share``)."""
    perm = np.random.default_rng(seed).permutation(n)
    cut = round(n * (1 - stop_share))
    return np.sort(perm[:cut]), np.sort(perm[cut:])


def folds(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of a split's users in two seeded halves, for cross-fitting."""
    perm = np.random.default_rng(seed + 1).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])


def per_user_values(ranked: np.ndarray, split: Split, users: np.ndarray, metric: str) -> np.ndarray:
    """``metric`` (e.g. ``ndcg@10``) per user of ``split.users[users]`` for their ranked lists."""
    name, k = metric.split("@")
    targets = [split.targets[u] for u in users.tolist()]
    n = np.array([len(t) for t in targets], dtype=np.int64)
    return metrics_from_hits(hits_matrix(ranked[:, : int(k)], targets), n)[name]


def train_ranker(
    retrieval: Recommender,
    split: Split,
    users: np.ndarray,
    stop_users: np.ndarray,
    *,
    metric: str,
    params: dict[str, Any] | None = None,
    table: pa.Table | None = None,
    progress: Progress | None = None,
    candidates: Candidates | None = None,
) -> Ranker:
    """A ranker on ``retrieval`` (fitted on ``split.train``): served lists after the cut when ``table``
    holds them for ``split.users[users]``, else those users' candidate lists; early stopping on
    ``split.users[stop_users]``. ``candidates``: every ``split.users``' lists, when already computed."""
    ranker = Ranker(**(params or {})).attach(retrieval, split.train)
    ranker.progress = progress
    k = int(metric.split("@")[1])
    served = (
        ranker.lists_from_impressions(table, split.cut_ms, split.end_ms + 1, split.users[users])
        if table is not None
        else None
    )
    lists, _ = ranker.lists_from_candidates(split, users, candidates)
    if served is not None:
        lists = merge_lists(served, lists)
    if candidates is None:
        s_idx, s_vals, s_x = ranker.candidate_lists(split.users[stop_users])
    else:
        s_idx, s_vals, s_x = (a[stop_users] for a in candidates)

    def stop(r: Ranker) -> float:
        return float(per_user_values(r.rerank(s_idx, s_vals, s_x, k), split, stop_users, metric).mean())

    return ranker.fit_lists(lists, stop, metric)
