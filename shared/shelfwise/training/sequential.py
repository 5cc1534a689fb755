"""Sequential recommender: SASRec-style causal self-attention over a user's recent events (PyTorch).

Each user's events (time order; repeated consecutive events on one item merged into one token with
the strongest event type) become tokens of item + event type, the type marked on the last token of
each visit (``visit_ends``: a known user arriving is then scored from a visit's end, one with events
in the request from inside a visit); a window of the last ``max_len``
tokens, right-aligned with left padding, goes through item + type + position embeddings,
``blocks`` pre-layer-norm causal self-attention blocks and a final layer norm. The item
embeddings start from ALS item factors of the same log (``init="als"``; ``"random"``: small normal
values). Every position
predicts a target item (:class:`Targets`: by default an item the user goes on to touch for the first
time within the next ``horizon_days``, drawn afresh every epoch):
softmax cross-entropy against the shared item embeddings plus an item bias (started at the items'
log frequency), over the whole catalogue when it is small, else over ``negatives`` uniform items
plus as many drawn from the batch's targets (sampled softmax with mixed negatives, log-Q
corrected; the positive is in).

Training is seeded (torch, numpy, the batch order), runs one intra-op thread, and reports
each epoch (loss, and validation NDCG when a validation split is given) to ``progress``. With a
validation split (:meth:`fit_validated`), it stops when NDCG has not improved for ``patience``
epochs and keeps the best epoch's weights; ``epochs`` then becomes that epoch count, so the test
and final fits train exactly as long without looking at their own windows.

PyTorch is imported inside the methods that need it: the package imports this module everywhere,
and only the training job (its Batch image, or a local environment with ``make torch``) has torch.
Serving runs the exported ONNX graph (``shelfwise.onnx_sequential``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx

from shelfwise import onnx_sequential as osq
from shelfwise.errors import InputError
from shelfwise.onnx_export import _topk
from shelfwise.training.data import Interactions, Split

Progress = Callable[[str, dict[str, Any]], None]
TARGET_MODES: tuple[str, ...] = ("next", "new", "future")
INITS: tuple[str, ...] = ("als", "random")
# The ALS fit whose item factors start the item embeddings: the ALS family's quick setting.
INIT_ALS_REGULARIZATION, INIT_ALS_ALPHA = 0.1, 1.0
EMBEDDING_STD = 0.02  # the random init's scale, which the ALS factors are brought to
# The ``future`` targets' horizon when none is given: a week, or as many of the log's typical gaps
# between a user's visits if that is longer (a wholesaler's customers come back every few weeks).
MIN_HORIZON_DAYS, HORIZON_VISITS = 7.0, 3


class TorchMissingError(InputError):
    """The sequential family needs PyTorch, which this environment lacks."""


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise TorchMissingError(
            "the sequential family needs PyTorch: `make torch` (requirements/torch.txt) installs it"
        ) from exc
    return torch


def user_sequences(data: Interactions, visit_ends: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per user, time-ordered (item, type token) with consecutive repeats of an item merged.

    Returns CSR ``(indptr [U+1], items [T], types [T])``; the merged token keeps the strongest type,
    plus ``osq.VISIT_END`` with ``visit_ends`` where the token ended its visit.
    """
    return _tokens(data, visit_ends)[:3]


def _tokens(
    data: Interactions, visit_ends: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`user_sequences` plus each token's time (ms, its first event).

    A token ends its visit when the user's next token starts in another session (the log's session
    ids: the source's, or a 30-minute inactivity gap where it has none; an invoice for Online Retail),
    and every user's last token ends one: a stored history is read on a later visit.
    """
    order = np.argsort(data.user, kind="stable")  # data is time-sorted, so each user stays in order
    user, item, session = data.user[order], data.item[order], data.session[order]
    types = osq.type_tokens(data.weight[order])
    new = np.ones(len(order), dtype=bool)
    new[1:] = (user[1:] != user[:-1]) | (item[1:] != item[:-1])
    group = np.cumsum(new) - 1
    merged_types = np.zeros(int(new.sum()), dtype=np.int64)
    np.maximum.at(merged_types, group, types)
    keep_user, keep_item = user[new], item[new]
    if visit_ends and len(keep_user):
        last_session = np.zeros(len(keep_user), dtype=session.dtype)
        last_session[group] = session  # each token's last event's session (events are in order)
        ends = np.ones(len(keep_user), dtype=bool)
        ends[:-1] = (keep_user[1:] != keep_user[:-1]) | (session[new][1:] != last_session[:-1])
        merged_types += osq.VISIT_END * ends
    indptr = np.zeros(data.n_users + 1, dtype=np.int64)
    np.add.at(indptr, keep_user.astype(np.int64) + 1, 1)
    return np.cumsum(indptr), keep_item.astype(np.int64), merged_types, data.ts[order][new]


def visit_horizon_days(data: Interactions) -> float:
    """``MIN_HORIZON_DAYS``, or ``HORIZON_VISITS`` times the median gap between the starts of a
    user's consecutive visits (sessions) if longer: a horizon in the log's own time scale."""
    order = np.argsort(data.user, kind="stable")  # data is time-sorted, as in _tokens
    user, session, ts = data.user[order], data.session[order], data.ts[order].astype(np.int64)
    start = np.ones(len(order), dtype=bool)
    start[1:] = (user[1:] != user[:-1]) | (session[1:] != session[:-1])
    visit_user, visit_ts = user[start], ts[start]
    gaps = (visit_ts[1:] - visit_ts[:-1])[visit_user[1:] == visit_user[:-1]]
    if not len(gaps):
        return MIN_HORIZON_DAYS
    return max(MIN_HORIZON_DAYS, HORIZON_VISITS * float(np.median(gaps)) / 86_400_000)


class Targets:
    """Per token of the CSR sequences, the item its position learns to predict (-1 = none).

    ``next``: the following token's item. ``new``: the first later item not among the user's
    tokens so far (repeats skipped). ``future``: an item drawn at random, afresh every epoch, from
    the user's later tokens within ``horizon_days`` that are not among their tokens so far (a
    dense all-action objective, as in PinnerFormer). ``new`` and ``future`` leave out repeats
    because the evaluation protocol, and serving with ``exclude_seen``, never recommend an item
    the user already touched; ``future`` also teaches a position what the user goes on to want
    over the next days, not only the very next click (a shop list is read now and acted on later).
    """

    def __init__(
        self, indptr: np.ndarray, items: np.ndarray, ts: np.ndarray, mode: str, horizon_days: float
    ) -> None:
        if mode not in TARGET_MODES:
            raise InputError(f"targets must be one of {', '.join(TARGET_MODES)}, got {mode!r}")
        n = len(items)
        self.mode, self.items = mode, items
        pos = np.arange(n, dtype=np.int64)
        user = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
        self.end = indptr[1:][user]  # one past the user's last token
        # each token's (user, item) first occurrence: a token j is new to position p iff first[j] > p
        key = user * (int(items.max(initial=0)) + 1) + items
        _, inverse = np.unique(key, return_inverse=True)
        first_of_key = np.full(int(inverse.max(initial=-1)) + 1, n, dtype=np.int64)
        np.minimum.at(first_of_key, inverse, pos)
        self.first = first_of_key[inverse]
        firsts = np.flatnonzero(self.first == pos)
        nxt = firsts[np.minimum(np.searchsorted(firsts, pos + 1), max(len(firsts) - 1, 0))] if n else pos
        self.next_new = np.where(nxt > pos, nxt, self.end)  # the first later token new to each position
        self.fixed: np.ndarray | None = None
        if mode == "next":
            self.fixed = self._item_at(pos + 1)
        elif mode == "new":
            self.fixed = self._item_at(self.next_new)
        else:
            # the last token within the horizon, per position (tokens are time-ordered per user)
            horizon_ms = int(horizon_days * 86_400_000)
            t = ts.astype(np.int64) - int(ts.min(initial=0))
            key_t = user * (int(t.max(initial=0)) + horizon_ms + 1) + t  # users apart, each in time order
            self.reach = np.searchsorted(key_t, key_t + horizon_ms, side="right")
            self.reach = np.minimum(self.reach, self.end)

    def _item_at(self, j: np.ndarray) -> np.ndarray:
        ok = j < self.end
        return np.where(ok, self.items[np.minimum(j, max(len(self.items) - 1, 0))], -1).astype(np.int64)

    def draw(self, positions: np.ndarray, rng: np.random.Generator, tries: int = 4) -> np.ndarray:
        """Targets of the token ``positions`` (any shape, -1 = padding) for one epoch."""
        if self.fixed is not None:
            return np.where(positions >= 0, self.fixed[np.maximum(positions, 0)], -1)
        p = positions.ravel()
        out = np.full(p.shape, -1, dtype=np.int64)
        real = np.flatnonzero(p >= 0)
        q = p[real]
        span = self.reach[q] - q - 1  # later tokens within the horizon
        for _ in range(tries):  # a draw that lands on a repeat is drawn again
            todo = np.flatnonzero((out[real] < 0) & (span > 0))
            if not len(todo):
                break
            j = q[todo] + 1 + (rng.random(len(todo)) * span[todo]).astype(np.int64)
            fresh = self.first[j] > q[todo]
            out[real[todo[fresh]]] = self.items[j[fresh]]
        # a position whose draws all hit repeats takes its next new item, if within the horizon
        left = np.flatnonzero(out[real] < 0)
        j = self.next_new[q[left]]
        within = j < self.reach[q[left]]
        out[real[left[within]]] = self.items[j[within]]
        return out.reshape(positions.shape)


class Sequential:
    """The sequential family: fit with PyTorch, score known users, export the ONNX graph."""

    algorithm = "sequential"

    def __init__(
        self,
        dim: int = 64,
        blocks: int = 2,
        heads: int = 1,
        max_len: int = 50,
        dropout: float = 0.2,
        lr: float = 1e-3,
        batch_size: int = 128,
        negatives: int = 256,
        targets: str = "future",
        horizon_days: float | None = None,
        epochs: int = 20,
        patience: int = 2,
        seed: int = 42,
        threads: int = 2,
        init: str = "als",
        visit_ends: bool = True,
    ) -> None:
        if dim % heads:
            raise InputError(f"dim {dim} must be divisible by heads {heads}")
        if targets not in TARGET_MODES:
            raise InputError(f"targets must be one of {', '.join(TARGET_MODES)}, got {targets!r}")
        if init not in INITS:
            raise InputError(f"init must be one of {', '.join(INITS)}, got {init!r}")
        if horizon_days is not None and not horizon_days > 0:
            raise InputError(f"horizon_days must be positive, got {horizon_days!r}")
        self.params: dict[str, Any] = {
            "dim": int(dim),
            "blocks": int(blocks),
            "heads": int(heads),
            "max_len": int(max_len),
            "dropout": float(dropout),
            "lr": float(lr),
            "batch_size": int(batch_size),
            "negatives": int(negatives),
            "targets": str(targets),
            "horizon_days": None if horizon_days is None else float(horizon_days),
            "epochs": int(epochs),
            "patience": int(patience),
            "seed": int(seed),
            "init": str(init),
            "visit_ends": bool(visit_ends),
        }
        self.threads = threads
        self.progress: Progress | None = None
        self.net: Any = None
        self.n_items = 0
        self.seqs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.loss_curve: list[float] = []
        self.validation_curve: list[float] = []
        self.fit_seconds = 0.0
        self.horizon_days: float | None = None
        self._export: osq.SequentialModel | None = None

    # ------------------------------------------------------------------ training
    def fit(self, data: Interactions) -> Sequential:
        """Train for ``epochs`` epochs on ``data`` (no early stopping: the count was chosen on validation)."""
        return self._train(data, None, "")

    def fit_validated(
        self, validation: Split, metric: str, score: Callable[[Sequential], float]
    ) -> Sequential:
        """Train on ``validation.train``; after each epoch ``score(self)`` (``metric`` on
        ``validation``'s targets) decides early stopping."""
        return self._train(validation.train, score, metric)

    def _train(
        self, data: Interactions, score: Callable[[Sequential], float] | None, metric: str
    ) -> Sequential:
        torch = _torch()
        p = self.params
        t0 = time.perf_counter()
        torch.manual_seed(p["seed"])
        rng = np.random.default_rng(p["seed"])
        # One intra-op thread: the matrices are small (a batch of windows x 64), and on a busy
        # 2-core machine two OpenMP threads made a step ~15x slower (each waits for the other at
        # every op's barrier); evaluation batches still run on ``threads`` Python threads.
        torch.set_num_threads(1)
        self.n_items = data.n_items
        indptr, items, types, ts = _tokens(data, p["visit_ends"])
        self.seqs = (indptr, items, types)
        self._export = None
        self.horizon_days = p["horizon_days"] or visit_horizon_days(data)
        targets = Targets(indptr, items, ts, p["targets"], self.horizon_days)
        inputs, types, where = self._windows()
        if len(inputs) == 0:
            raise InputError("the sequential model needs users with at least two events")
        self.net = _build_net(torch, self.n_items, p)
        with torch.no_grad():
            # The item bias starts at each item's log frequency as a target (smoothed), so the first
            # epoch starts from popularity; from zero, Adam moves it ~1e-3 a step, and on a
            # 50k-item shop the first epochs ranked little better than at random.
            counts = np.bincount(
                targets.draw(where, np.random.default_rng(p["seed"])).ravel() + 1, minlength=self.n_items + 1
            )
            log_f = np.log(counts[1:] + 1.0)
            self.net.item_bias.copy_(torch.from_numpy((log_f - log_f.mean()).astype(np.float32)))
            if p["init"] == "als":
                self.net.item_emb.weight[1:].copy_(torch.from_numpy(self._als_embeddings(data)))
        opt = torch.optim.Adam(self.net.parameters(), lr=p["lr"], fused=True)
        x_items = torch.from_numpy(inputs)
        x_types = torch.from_numpy(types)
        self.loss_curve, self.validation_curve = [], []
        best_value, best_epoch, best_state = -1.0, 0, None
        lengths = (inputs > 0).sum(axis=1)
        for epoch in range(1, p["epochs"] + 1):
            self.net.train()
            total, count = 0.0, 0
            y = torch.from_numpy(targets.draw(where, rng))
            for idx in _batches(lengths, p["batch_size"], rng):
                width = int(lengths[idx].max())  # leading columns that are padding everywhere are cut
                sel = torch.from_numpy(idx)
                y_batch = y[sel, -width:]
                if not bool((y_batch >= 0).any()):
                    continue  # every position's later items are repeats (or beyond the horizon)
                loss, n = self._batch_loss(torch, x_items[sel, -width:], x_types[sel, -width:], y_batch, rng)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * n
                count += n
            self.loss_curve.append(round(total / max(count, 1), 6))
            event: dict[str, Any] = {"family": self.algorithm, "epoch": epoch, "loss": self.loss_curve[-1]}
            if score is not None:
                self.net.eval()  # scored as it will be served: no dropout
                value = float(score(self))
                self.validation_curve.append(round(value, 6))
                event[f"validation_{metric}"] = value
                if value > best_value:
                    best_value, best_epoch = value, epoch
                    best_state = {n: t.detach().clone() for n, t in self.net.state_dict().items()}
            if self.progress is not None:
                self.progress("epoch", event)
            if score is not None and epoch - best_epoch >= p["patience"]:
                break
        if score is not None and best_state is not None:
            self.net.load_state_dict(best_state)
            self.params["epochs"] = best_epoch
        self.net.eval()
        self.fit_seconds = time.perf_counter() - t0
        return self

    def _als_embeddings(self, data: Interactions) -> np.ndarray:
        """ALS item factors of ``data`` (``dim`` factors), scaled to the random init's spread.

        Trained from random embeddings on a shop-sized log, the transformer spends its epochs
        learning which items go together and still ranks no better than ALS on a user's next days;
        started from ALS's factors (which see every user's whole history at once), it begins where
        ALS is and learns the order on top.
        """
        from shelfwise.training.mf import ALS

        als = ALS(
            factors=self.params["dim"],
            regularization=INIT_ALS_REGULARIZATION,
            alpha=INIT_ALS_ALPHA,
            seed=self.params["seed"],
            threads=self.threads,
        )
        factors = np.asarray(als.fit(data).item_factors, dtype=np.float32)
        return (factors * (EMBEDDING_STD / max(float(factors.std()), 1e-12))).astype(np.float32)

    def _windows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Training windows: each user's tokens cut from the end into pieces of ``max_len + 1``.

        Returns inputs and types (left-padded with 0, item indices shifted by one) and each cell's
        token position in the CSR sequences (-1 = padding), from which :class:`Targets` draws.
        """
        assert self.seqs is not None
        indptr, items, types = self.seqs
        L = self.params["max_len"]
        starts: list[int] = []
        ends: list[int] = []
        for u in range(len(indptr) - 1):
            lo, hi = int(indptr[u]), int(indptr[u + 1])
            end = hi
            while end - lo >= 2:
                starts.append(max(lo, end - L - 1))
                ends.append(end)
                end -= L
        n = len(starts)
        x_items = np.zeros((n, L), dtype=np.int64)
        x_types = np.zeros((n, L), dtype=np.int64)
        where = np.full((n, L), -1, dtype=np.int64)
        for w, (s, e) in enumerate(zip(starts, ends, strict=True)):
            m = e - s - 1
            x_items[w, L - m :] = items[s : e - 1] + 1
            x_types[w, L - m :] = types[s : e - 1]
            where[w, L - m :] = np.arange(s, e - 1)
        return x_items, x_types, where

    def _batch_loss(self, torch: Any, items: Any, types: Any, y: Any, rng: np.random.Generator) -> Any:
        """Mean cross-entropy of the target items over the batch's positions that have one."""
        hidden = self.net(items, types)  # [B, L, d]
        real = y >= 0
        h = hidden[real]  # [P, d]
        target = y[real]
        emb = self.net.item_emb.weight[1:]  # [N, d]
        bias = self.net.item_bias
        n_neg = self.params["negatives"]
        if self.n_items <= 2 * n_neg:
            logits = h @ emb.T + bias
            loss = torch.nn.functional.cross_entropy(logits, target)
        else:
            # Sampled softmax with mixed negatives: uniform items, and as many drawn from the
            # batch's own targets (so in proportion to popularity). Uniform ones alone are mostly
            # items nobody looks at, and the model learns little in the epochs it gets. Every
            # logit is corrected by log Q (the item's expected count among the negatives), so the
            # loss estimates the full softmax: without it, popular items are pushed down in
            # proportion to how often they are drawn as negatives, and the longer the model
            # trains the more it recommends the long tail.
            uniform = torch.from_numpy(rng.integers(0, self.n_items, n_neg))
            in_batch = target[torch.from_numpy(rng.integers(0, len(target), n_neg))]
            neg = torch.cat([uniform, in_batch])
            share = torch.bincount(target, minlength=self.n_items).to(h.dtype) / len(target)
            log_q = torch.log(n_neg / self.n_items + n_neg * share)
            pos_logit = (h * emb[target]).sum(-1, keepdim=True) + (bias[target] - log_q[target]).unsqueeze(-1)
            neg_logit = h @ emb[neg].T + (bias[neg] - log_q[neg])
            neg_logit = neg_logit.masked_fill(neg.unsqueeze(0) == target.unsqueeze(1), float("-inf"))
            logits = torch.cat([pos_logit, neg_logit], dim=1)
            loss = torch.nn.functional.cross_entropy(logits, torch.zeros_like(target))
        return loss, int(target.numel())

    # ------------------------------------------------------------------ scoring
    def _fitted(self) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
        if self.net is None or self.seqs is None:
            raise RuntimeError("fit the model first")
        return (self.net, *self.seqs)

    def _stored(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each user's last ``max_len`` tokens (CSR): what the graph stores for known users."""
        _, indptr, items, types = self._fitted()
        L = self.params["max_len"]
        lengths = np.minimum(np.diff(indptr), L)
        new_ptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        take = np.concatenate(
            [np.arange(indptr[u + 1] - n, indptr[u + 1]) for u, n in enumerate(lengths.tolist())]
            or [np.zeros(0, np.int64)]
        ).astype(np.int64)
        return new_ptr, items[take], types[take]

    def _scores(self, seqs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """float32 scores [len(seqs), N] of (items, types) sequences, each right-aligned and padded."""
        torch = _torch()
        net = self._fitted()[0]
        L = self.params["max_len"]
        width = max([min(len(it), L) for it, _ in seqs] + [1])  # columns all padding are not computed
        x_items = np.zeros((len(seqs), width), dtype=np.int64)
        x_types = np.zeros((len(seqs), width), dtype=np.int64)
        for r, (it, ty) in enumerate(seqs):
            it, ty = it[-L:], ty[-L:]
            if len(it):
                x_items[r, width - len(it) :] = it + 1
                x_types[r, width - len(it) :] = ty
        with torch.no_grad():
            hidden = net(torch.from_numpy(x_items), torch.from_numpy(x_types))[:, -1, :]
            # an empty sequence: the graph's zero vector (scores = item bias)
            empty = torch.from_numpy(np.array([len(s[0]) == 0 for s in seqs]))
            hidden = hidden.masked_fill(empty.unsqueeze(1), 0.0)
            scores = hidden @ net.item_emb.weight[1:].T + net.item_bias
        return np.ascontiguousarray(scores.numpy(), dtype=np.float32)

    def score_users(self, users: np.ndarray) -> np.ndarray:
        _, indptr, items, types = self._fitted()
        seqs = [
            (items[indptr[u] : indptr[u + 1]], types[indptr[u] : indptr[u + 1]])
            for u in np.asarray(users, dtype=np.int64).tolist()
        ]
        return self._scores(seqs)

    def reference(
        self,
        user_index: int,
        history_items: np.ndarray,
        history_weights: np.ndarray,
        exclude: np.ndarray,
        k: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The PyTorch model on the graph's sequence for this request, masked top-k (the parity reference)."""
        items, types = osq.sequence_for(self.export_arrays(), user_index, history_items, history_weights)
        return _topk(self._scores([(items, types)])[0], exclude, k)

    # ------------------------------------------------------------------ export
    def export_arrays(self) -> osq.SequentialModel:
        if self._export is not None:
            return self._export
        net = self._fitted()[0]
        sd = {n: t.detach().cpu().numpy().astype(np.float32) for n, t in net.state_dict().items()}
        # Block field -> (module parameter, transposed?): nn.Linear keeps [out, in], the graph x @ W.
        fields = {"ln1_g": ("ln1.weight", False), "ln1_b": ("ln1.bias", False)}
        for name, module in (("q", "q"), ("k", "k"), ("v", "v"), ("o", "o"), ("1", "ff1"), ("2", "ff2")):
            fields[f"w{name}"] = (f"{module}.weight", True)
            fields[f"b{name}"] = (f"{module}.bias", False)
        fields |= {"ln2_g": ("ln2.weight", False), "ln2_b": ("ln2.bias", False)}
        blocks = [
            osq.Block(
                **{
                    f: sd[f"blocks.{i}.{key}"].T.copy() if t else sd[f"blocks.{i}.{key}"]
                    for f, (key, t) in fields.items()
                }
            )
            for i in range(self.params["blocks"])
        ]
        indptr, items, types = self._stored()
        self._export = osq.SequentialModel(
            item_emb=sd["item_emb.weight"][1:],
            item_bias=sd["item_bias"],
            type_emb=sd["type_emb.weight"],
            pos_emb=sd["pos_emb.weight"],
            blocks=tuple(blocks),
            ln_g=sd["ln.weight"],
            ln_b=sd["ln.bias"],
            heads=self.params["heads"],
            user_indptr=indptr,
            user_items=items.astype(np.int32),
            user_types=types.astype(np.int8),
        ).validate()
        return self._export

    def to_onnx(self) -> onnx.ModelProto:
        return osq.build_sequential_model(self.export_arrays(), meta={"shelfwise.algorithm": self.algorithm})

    def describe(self) -> dict[str, Any]:
        return {
            "loss_curve": self.loss_curve,
            "validation_curve": self.validation_curve,
            "epochs": self.params["epochs"],
            "fit_seconds": round(self.fit_seconds, 3),
            "horizon_days": None if self.horizon_days is None else round(self.horizon_days, 2),
        }


def _batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of windows of similar length (less padding to compute), in shuffled order.

    Windows are shuffled, cut into pools of 32 batches, sorted by length inside a pool and batched;
    the batch order is shuffled again. Seeded by ``rng``.
    """
    order = rng.permutation(len(lengths))
    pool = batch_size * 32
    out: list[np.ndarray] = []
    for lo in range(0, len(order), pool):
        chunk = order[lo : lo + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        out += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [out[i] for i in rng.permutation(len(out))]


def _build_net(torch: Any, n_items: int, p: dict[str, Any]) -> Any:
    """The PyTorch module; its parameter names are what :meth:`Sequential.export_arrays` reads."""
    nn = torch.nn
    d, heads, L = p["dim"], p["heads"], p["max_len"]
    dh = d // heads

    class BlockNet(nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d, eps=osq.LN_EPSILON), nn.LayerNorm(d, eps=osq.LN_EPSILON)
            self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
            self.ff1, self.ff2 = nn.Linear(d, d), nn.Linear(d, d)
            self.drop = nn.Dropout(p["dropout"])

        def forward(self, x: Any, mask: Any) -> Any:
            b, n, _ = x.shape
            a = self.ln1(x)
            q = self.q(a).view(b, n, heads, dh).transpose(1, 2)
            k = self.k(a).view(b, n, heads, dh).transpose(1, 2)
            v = self.v(a).view(b, n, heads, dh).transpose(1, 2)
            att = (q @ k.transpose(-1, -2)) * (1.0 / float(np.sqrt(dh))) + mask  # [b, heads, n, n]
            att = self.drop(torch.softmax(att, dim=-1))
            ctx = (att @ v).transpose(1, 2).reshape(b, n, d)
            x = x + self.drop(self.o(ctx))
            return x + self.drop(self.ff2(self.drop(torch.relu(self.ff1(self.ln2(x))))))

    class Net(nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
            self.item_bias = nn.Parameter(torch.zeros(n_items))
            self.type_emb = nn.Embedding(
                osq.N_TYPE_TOKENS if p["visit_ends"] else osq.N_TYPES, d, padding_idx=0
            )
            self.pos_emb = nn.Embedding(L, d)
            # small embeddings (GPT-style): with N(0, 1) positions and types drown the items at the
            # start and the model learns little more than popularity in the epochs it gets
            for emb in (self.item_emb, self.type_emb, self.pos_emb):
                nn.init.normal_(emb.weight, std=0.02)
            with torch.no_grad():
                self.item_emb.weight[0].zero_()
                self.type_emb.weight[0].zero_()
            self.blocks = nn.ModuleList(BlockNet() for _ in range(p["blocks"]))
            self.ln = nn.LayerNorm(d, eps=osq.LN_EPSILON)
            self.drop = nn.Dropout(p["dropout"])
            causal = torch.triu(torch.ones(L, L, dtype=torch.bool), diagonal=1)
            self.register_buffer("causal", causal, persistent=False)

        def forward(self, items: Any, types: Any) -> Any:
            """Hidden states [B, n, d] of left-padded windows (0 = padding) of width n <= max_len.

            The columns are the last n of a max_len window: positions max_len - n .. max_len - 1.
            """
            n = items.shape[1]
            pad = items == 0
            x = self.item_emb(items) * float(np.sqrt(d)) + self.type_emb(types) + self.pos_emb.weight[L - n :]
            x = self.drop(x)
            # a query never sees later positions or padding keys; a padded query sees only itself
            blocked = self.causal[:n, :n].unsqueeze(0) | pad.unsqueeze(1)
            blocked = blocked & ~torch.eye(n, dtype=torch.bool).unsqueeze(0)
            mask = torch.zeros(blocked.shape, dtype=x.dtype).masked_fill(blocked, float("-inf")).unsqueeze(1)
            for block in self.blocks:
                x = block(x, mask)
            return self.ln(x)

    return Net()
