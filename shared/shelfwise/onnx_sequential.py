"""ONNX graph of the sequential (SASRec-style) recommender, built from its trained weights.

Same contract as every served graph (``shelfwise.onnx_export``): ``user_index``, ``history_items``,
``history_weights``, ``exclude_mask``, ``k`` in; ``scores``, ``indices`` out. What differs is what
the history means: the order of ``history_items`` is the order of events (oldest first), and
``history_weights`` (the event weights of ``shelfwise.events.EVENT_WEIGHTS``) name the event type.

- A known user (``user_index >= 0``) is scored from the last ``max_len`` events stored for them in
  the graph **followed by the request's events** (the current session counts for everyone);
  an anonymous user (``-1``) from the request's events alone.
- The last ``max_len`` tokens of that sequence go through item + event-type + position
  embeddings, causal self-attention blocks (pre-layer-norm) and a final layer norm; the last
  position's vector scores every item against the (shared) item embeddings plus an item bias.
- Positions are right-aligned: a sequence of ``H`` tokens takes positions ``max_len - H ..
  max_len - 1``, which is exactly what the training side computes on left-padded windows with the
  padding masked, so no padding exists here.

Built with ``onnx.helper`` from numpy arrays (the PyTorch model's ``state_dict``), so neither the
export nor serving needs PyTorch; the training job checks the graph against the PyTorch model.
Only training imports this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from shelfwise import onnx_candidates as oc
from shelfwise import onnx_export as ox

META_MAX_LEN = "shelfwise.max_len"
# Event weights -> type tokens 1..5 (0 is padding): view 1 | click 2 | wishlist/rating 3 | cart 4 |
# purchase 8. A weight counts the thresholds it exceeds, so any weight maps to the nearest type.
TYPE_THRESHOLDS = np.array([1.5, 2.5, 3.5, 6.0], dtype=np.float32)
WEIGHT_OF_TYPE = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 8.0], np.float32)  # a weight per token (0: padding)
N_TYPES = len(TYPE_THRESHOLDS) + 2  # padding + five kinds
# A stored event that ended its visit (the shopper's next event came in a later visit, or it is their
# last stored event) carries its type token + VISIT_END: a known user arriving with no events in the
# request is scored from a visit's end, one with events from inside the visit. Request events never
# carry it, so the graph reads both kinds with one type table of N_TYPES + VISIT_END rows.
VISIT_END = N_TYPES - 1
N_TYPE_TOKENS = N_TYPES + VISIT_END
LN_EPSILON = 1e-5
_BIG = np.iinfo(np.int64).max
SCORINGS = ("exact", "int8-candidates")
# Candidate keys (smallest first): an excluded item's key, beside which any score vanishes in
# float32 (every excluded item keys exactly this), and the key of the padding slots, below it.
EXCLUDED_KEY = 1e30
PADDING_KEY = 3e30


def type_tokens(weights: np.ndarray) -> np.ndarray:
    """Event-type token (1..5) of each event weight, as the graph computes it."""
    w = np.asarray(weights, dtype=np.float32).reshape(-1, 1)
    return (1 + (w > TYPE_THRESHOLDS).sum(axis=1)).astype(np.int64)


def type_weights(types: np.ndarray) -> np.ndarray:
    """An event weight of each type token (a visit end's mark dropped): the inverse of type_tokens."""
    t = np.asarray(types, dtype=np.int64)
    return WEIGHT_OF_TYPE[np.where(t > VISIT_END, t - VISIT_END, t)]


@dataclass(frozen=True)
class Block:
    """One pre-layer-norm transformer block (weights as ``x @ W``, i.e. [in, out])."""

    ln1_g: np.ndarray
    ln1_b: np.ndarray
    wq: np.ndarray
    bq: np.ndarray
    wk: np.ndarray
    bk: np.ndarray
    wv: np.ndarray
    bv: np.ndarray
    wo: np.ndarray
    bo: np.ndarray
    ln2_g: np.ndarray
    ln2_b: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray


@dataclass(frozen=True)
class SequentialModel:
    """Arrays of a trained sequential model and the stored recent history of known users (CSR).

    ``item_emb`` [N, d] (input and output embedding), ``item_bias`` [N], ``type_emb`` [N_TYPES, d] or
    [N_TYPE_TOKENS, d] (with visit ends),
    ``pos_emb`` [max_len, d], ``blocks``, final layer norm ``ln_g``/``ln_b``, ``heads``;
    user u's stored events are ``user_items/user_types[user_indptr[u]:user_indptr[u+1]]``.
    """

    item_emb: np.ndarray
    item_bias: np.ndarray
    type_emb: np.ndarray
    pos_emb: np.ndarray
    blocks: tuple[Block, ...]
    ln_g: np.ndarray
    ln_b: np.ndarray
    heads: int
    user_indptr: np.ndarray
    user_items: np.ndarray
    user_types: np.ndarray

    @property
    def n_items(self) -> int:
        return int(self.item_emb.shape[0])

    @property
    def dim(self) -> int:
        return int(self.item_emb.shape[1])

    @property
    def max_len(self) -> int:
        return int(self.pos_emb.shape[0])

    @property
    def n_users(self) -> int:
        return int(self.user_indptr.size - 1)

    def validate(self) -> SequentialModel:
        """Shapes, finiteness and index ranges; raises ExportError."""
        n, d = self.item_emb.shape
        if n == 0 or d == 0 or d % self.heads:
            raise ox.ExportError(
                f"item_emb [{n},{d}] must be non-empty with d divisible by heads={self.heads}"
            )
        arrays = [self.item_emb, self.item_bias, self.type_emb, self.pos_emb, self.ln_g, self.ln_b]
        arrays += [a for b in self.blocks for a in vars(b).values()]
        if not all(np.all(np.isfinite(a)) for a in arrays):
            raise ox.ExportError("sequential weights contain NaN or infinite values")
        if (
            self.item_bias.shape != (n,)
            or self.type_emb.shape not in ((N_TYPES, d), (N_TYPE_TOKENS, d))
            or self.pos_emb.shape[1] != d
        ):
            raise ox.ExportError("item_bias, type_emb or pos_emb do not match item_emb")
        ptr = self.user_indptr
        if ptr.ndim != 1 or ptr[0] != 0 or np.any(np.diff(ptr) < 0) or ptr[-1] != self.user_items.size:
            raise ox.ExportError("user_indptr must start at 0, never decrease and end at len(user_items)")
        if self.user_items.shape != self.user_types.shape:
            raise ox.ExportError("user_items and user_types differ in length")
        if self.user_items.size and (self.user_items.min() < 0 or self.user_items.max() >= n):
            raise ox.ExportError(f"user_items must lie in [0, {n})")
        n_types = self.type_emb.shape[0]
        if self.user_types.size and (self.user_types.min() < 1 or self.user_types.max() >= n_types):
            raise ox.ExportError(f"user_types must lie in [1, {n_types})")
        return self

    def user_history(self, user_index: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = int(self.user_indptr[user_index]), int(self.user_indptr[user_index + 1])
        return self.user_items[lo:hi].astype(np.int64), self.user_types[lo:hi].astype(np.int64)


def build_sequential_model(
    model: SequentialModel, *, scoring: str = "exact", meta: dict[str, str] | None = None
) -> onnx.ModelProto:
    """The served graph of a :class:`SequentialModel` (semantics in the module docstring).

    ``scoring``: ``"exact"`` scores every item in float32; ``"int8-candidates"`` ranks the items
    by 8-bit codes and re-scores the best few exactly (:func:`_int8_scoring`), which reads a
    quarter of the bytes per request. :func:`export_sequential_model` chooses between them.
    """
    if scoring not in SCORINGS:
        raise ox.ExportError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
    model.validate()
    n, d, L, heads = model.n_items, model.dim, model.max_len, model.heads
    dh = d // heads
    f32 = np.float32

    def const(name: str, value: Any, dtype: Any = None) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(op: str, ins: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, ins, [out], **attrs))
        return out

    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    if scoring == "exact":
        # Item embeddings stored once, transposed [d, N]: the scoring GEMM reads it row-major (the
        # shape MLAS is fastest at) and the input embedding gathers columns of it.
        const("item_factors_t", np.ascontiguousarray(model.item_emb.T), f32)
    else:
        # Row-major [N, d]: the input embedding and the re-scoring gather whole 256-byte rows
        # (a column gather from [d, N] touches d cache lines per item, spread over the matrix).
        const("item_factors", np.ascontiguousarray(model.item_emb), f32)
    const("item_bias", model.item_bias, f32)
    const("type_emb", model.type_emb, f32)
    const("pos_emb", model.pos_emb, f32)
    const("user_indptr", model.user_indptr, np.int64)
    const("user_items", model.user_items, np.int32)
    const("user_types", model.user_types, np.int8)
    const("zero", np.array([0], np.int64))
    const("one", np.array([1], np.int64))
    const("axis0", np.array([0], np.int64))
    const("minus_max_len", np.array([-L], np.int64))
    const("big", np.array([_BIG], np.int64))
    const("max_len", np.array(L, np.int64))
    const("one_scalar", np.array(1, np.int64))
    const("thresholds", TYPE_THRESHOLDS.reshape(1, -1), f32)
    const("emb_scale", np.array(np.sqrt(d), f32))
    # causal mask: 0 on and below the diagonal, -inf above; sliced to [H, H] per request
    causal = np.triu(np.full((L, L), -np.inf, dtype=f32), k=1)
    const("causal", causal)
    const("heads_shape", np.array([0, heads, dh], np.int64))
    const("flat_shape", np.array([0, d], np.int64))
    const("att_scale", np.array(1.0 / np.sqrt(dh), f32))

    # 1. the token sequence: stored events of a known user (none for -1), then the request's events
    node("Max", ["user_index", "zero"], "u_clamped")
    node("GreaterOrEqual", ["user_index", "zero"], "known")
    node("Gather", ["user_indptr", "u_clamped"], "row_start_raw", axis=0)
    node("Add", ["u_clamped", "one"], "u_next")
    node("Gather", ["user_indptr", "u_next"], "row_end_raw", axis=0)
    node("Where", ["known", "row_start_raw", "zero"], "row_start")
    node("Where", ["known", "row_end_raw", "zero"], "row_end")
    node("Slice", ["user_items", "row_start", "row_end", "axis0"], "stored_items_i32")
    node("Cast", ["stored_items_i32"], "stored_items", to=TensorProto.INT64)
    node("Slice", ["user_types", "row_start", "row_end", "axis0"], "stored_types_i8")
    node("Cast", ["stored_types_i8"], "stored_types", to=TensorProto.INT64)
    node("Unsqueeze", ["history_weights", "one"], "weights_col")
    node("Greater", ["weights_col", "thresholds"], "above")
    node("Cast", ["above"], "above_i64", to=TensorProto.INT64)
    node("ReduceSum", ["above_i64", "one"], "above_n", keepdims=0)
    node("Add", ["above_n", "one"], "req_types")
    node("Concat", ["stored_items", "history_items"], "all_items", axis=0)
    node("Concat", ["stored_types", "req_types"], "all_types", axis=0)
    node("Slice", ["all_items", "minus_max_len", "big", "axis0"], "seq_items")
    node("Slice", ["all_types", "minus_max_len", "big", "axis0"], "seq_types")
    # 2. embeddings with right-aligned positions
    node("Shape", ["seq_items"], "h_len_1d")
    node("Squeeze", ["h_len_1d"], "h_len")
    node("Sub", ["max_len", "h_len"], "pos_start")
    node("Range", ["pos_start", "max_len", "one_scalar"], "positions")
    if scoring == "exact":
        node("Gather", ["item_factors_t", "seq_items"], "item_vecs_t", axis=1)
        node("Transpose", ["item_vecs_t"], "item_vecs", perm=[1, 0])
    else:
        node("Gather", ["item_factors", "seq_items"], "item_vecs", axis=0)
    node("Mul", ["item_vecs", "emb_scale"], "item_scaled")
    node("Gather", ["type_emb", "seq_types"], "type_vecs", axis=0)
    node("Gather", ["pos_emb", "positions"], "pos_vecs", axis=0)
    node("Add", ["item_scaled", "type_vecs"], "x_it")
    x = node("Add", ["x_it", "pos_vecs"], "x0")
    node("Slice", ["causal", "zero", "h_len_1d", "axis0"], "mask_rows")
    const("axis1", np.array([1], np.int64))
    node("Slice", ["mask_rows", "zero", "h_len_1d", "axis1"], "mask")

    # 3. the blocks. Only the last position's output is scored, so the last block computes its
    # query, attention row, residual and feed-forward for that position alone (its keys and values
    # still come from every position): the same vector for half the last block's work.
    const("minus_one", np.array([-1], np.int64))
    for i, b in enumerate(model.blocks):
        p = f"b{i}_"
        last = i == len(model.blocks) - 1
        for name in ("ln1_g", "ln1_b", "wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo"):
            const(p + name, getattr(b, name), f32)
        for name in ("ln2_g", "ln2_b", "w1", "b1", "w2", "b2"):
            const(p + name, getattr(b, name), f32)
        a = node("LayerNormalization", [x, p + "ln1_g", p + "ln1_b"], p + "a", axis=-1, epsilon=LN_EPSILON)
        # [0, d] for an empty sequence, like every other tensor of it
        a_q = node("Slice", [a, "minus_one", "big", "axis0"], p + "a_last") if last else a
        x_in = node("Slice", [x, "minus_one", "big", "axis0"], p + "x_last") if last else x
        heads_t: dict[str, str] = {}
        for w in ("q", "k", "v"):
            node("MatMul", [a_q if w == "q" else a, p + "w" + w], p + w + "_lin")
            node("Add", [p + w + "_lin", p + "b" + w], p + w)
            node("Reshape", [p + w, "heads_shape"], p + w + "_h")  # [H, heads, dh]
            perm = [1, 2, 0] if w == "k" else [1, 0, 2]  # k -> [heads, dh, H], q/v -> [heads, H, dh]
            heads_t[w] = node("Transpose", [p + w + "_h"], p + w + "_t", perm=perm)
        node("MatMul", [heads_t["q"], heads_t["k"]], p + "att_raw")  # [heads, H or 1, H]
        node("Mul", [p + "att_raw", "att_scale"], p + "att_scaled")
        # the last position attends to every position: its row of the causal mask is all zeros
        scaled = p + "att_scaled" if last else node("Add", [p + "att_scaled", "mask"], p + "att_masked")
        node("Softmax", [scaled], p + "att", axis=-1)
        node("MatMul", [p + "att", heads_t["v"]], p + "ctx_h")  # [heads, H or 1, dh]
        node("Transpose", [p + "ctx_h"], p + "ctx_t", perm=[1, 0, 2])
        node("Reshape", [p + "ctx_t", "flat_shape"], p + "ctx")
        node("MatMul", [p + "ctx", p + "wo"], p + "o_lin")
        node("Add", [p + "o_lin", p + "bo"], p + "o")
        node("Add", [x_in, p + "o"], p + "x1")
        node(
            "LayerNormalization",
            [p + "x1", p + "ln2_g", p + "ln2_b"],
            p + "f_in",
            axis=-1,
            epsilon=LN_EPSILON,
        )
        node("MatMul", [p + "f_in", p + "w1"], p + "f1_lin")
        node("Add", [p + "f1_lin", p + "b1"], p + "f1")
        node("Relu", [p + "f1"], p + "f1_act")
        node("MatMul", [p + "f1_act", p + "w2"], p + "f2_lin")
        node("Add", [p + "f2_lin", p + "b2"], p + "f2")
        x = node("Add", [p + "x1", p + "f2"], p + "x2")

    # 4. the last position's vector ([0, d] for an empty sequence: its sum is the zero vector,
    # so the scores are the item bias) against every item
    const("ln_g", model.ln_g, f32)
    const("ln_b", model.ln_b, f32)
    node("LayerNormalization", [x, "ln_g", "ln_b"], "x_final", axis=-1, epsilon=LN_EPSILON)
    node("Slice", ["x_final", "minus_one", "big", "axis0"], "last_rows")
    node("ReduceSum", ["last_rows", "axis0"], "user_vec", keepdims=1)  # [1, d]
    if scoring == "exact":
        const("scores_shape", np.array([n], np.int64))
        node("MatMul", ["user_vec", "item_factors_t"], "raw_row")
        node("Reshape", ["raw_row", "scores_shape"], "raw_dot")
        node("Add", ["raw_dot", "item_bias"], "raw_scores")
        tail, tail_inits = ox._mask_and_topk("raw_scores")
    else:
        tail, tail_inits = _int8_scoring(model.item_emb, model.item_bias)
    inputs, outputs = ox._io(n)
    graph = helper.make_graph(nodes + tail, "shelfwise_sequential", inputs, outputs, inits + tail_inits)
    extra = {
        META_MAX_LEN: str(L),
        "shelfwise.blocks": str(len(model.blocks)),
        ox.META_SCORING: scoring,
        **(meta or {}),
    }
    return ox._model(graph, "sequential", n, model.n_users, extra, contrib=scoring != "exact")


def _int8_scoring(
    item_emb: np.ndarray, item_bias: np.ndarray
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes from ``user_vec`` [1, d] to the outputs: 8-bit candidates, exact float32 re-scoring.

    1. ``DynamicQuantizeLinear(user_vec)`` and one ``MatMulIntegerToFloat`` over the items' uint8
       codes (:func:`shelfwise.onnx_candidates.quantise_items`) give each item a key, smallest first:
       ``-(u . y)`` from the codes, minus the item bias, plus ``EXCLUDED_KEY`` where the request's
       mask excludes the item (the GEMM's bias input, so the key costs one pass over the codes and
       one over the mask). Excluded items all key exactly ``EXCLUDED_KEY`` (the scores vanish
       beside it): they tie below every allowed item, ranked by index like the exact graph's -inf.
    2. the best ``C = min(N, max(4k, k + 128))`` keys (:func:`shelfwise.onnx_candidates._best_keys`,
       the same set as one ``TopK`` over all N without reading N keys per ``TopK``);
    3. those candidates re-scored from their float32 rows plus the bias, masked, ``TopK(k)``.

    The answer equals the exact graph's whenever the exact top-k lies among the C candidates;
    :func:`export_sequential_model` keeps this graph only after checking that.
    """
    n, d = item_emb.shape
    blocks = oc.candidate_blocks(n)
    padded = -(-n // blocks[0]) * blocks[0]
    codes, scale = oc.quantise_items(item_emb)
    codes_t = np.full((d, padded), 128, np.uint8)  # padding items: code 128 = 0, keyed last
    codes_t[:, :n] = codes.T
    neg_bias = np.full(padded, PADDING_KEY, np.float32)
    neg_bias[:n] = -item_bias
    f32 = np.float32
    inits = [
        numpy_helper.from_array(codes_t, "item_codes_t"),
        numpy_helper.from_array(np.array(-scale, f32), "cand_code_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "cand_code_zero"),
        numpy_helper.from_array(neg_bias, "cand_neg_bias"),
        numpy_helper.from_array(np.array(EXCLUDED_KEY, f32), "cand_excluded_key"),
        numpy_helper.from_array(np.array([-1], np.int64), "cand_flat"),
        numpy_helper.from_array(np.array([oc.CANDIDATE_FACTOR], np.int64), "cand_factor"),
        numpy_helper.from_array(np.array([oc.CANDIDATE_EXTRA], np.int64), "cand_extra"),
        numpy_helper.from_array(np.array([n], np.int64), "cand_n_items"),
        numpy_helper.from_array(np.array(ox.NEG_INF, f32), "neg_inf"),
    ]
    excluded = "cand_excluded_f"
    nodes = [
        helper.make_node("Cast", ["exclude_mask"], ["cand_excluded_01"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["cand_excluded_01", "cand_excluded_key"], [excluded]),
    ]
    if padded > n:
        inits.append(numpy_helper.from_array(np.zeros(padded - n, f32), "cand_padding_zeros"))
        nodes.append(
            helper.make_node("Concat", [excluded, "cand_padding_zeros"], ["cand_excluded_p"], axis=0)
        )
        excluded = "cand_excluded_p"
    nodes += [
        helper.make_node("Add", [excluded, "cand_neg_bias"], ["cand_key_bias"]),
        helper.make_node("DynamicQuantizeLinear", ["user_vec"], ["user_q", "user_scale", "user_zero"]),
        helper.make_node(
            "MatMulIntegerToFloat",
            [
                "user_q",
                "item_codes_t",
                "user_scale",
                "cand_code_scale",
                "user_zero",
                "cand_code_zero",
                "cand_key_bias",
            ],
            ["key_row"],
            domain=ox.CONTRIB_DOMAIN,
        ),
        helper.make_node("Mul", ["k", "cand_factor"], ["cand_k_times"]),
        helper.make_node("Add", ["k", "cand_extra"], ["cand_k_plus"]),
        helper.make_node("Max", ["cand_k_times", "cand_k_plus"], ["cand_wanted"]),
        helper.make_node("Min", ["cand_wanted", "cand_n_items"], ["c"]),
    ]
    select_nodes, select_inits = oc._best_keys("key_row", "c", padded, blocks, "cand")
    nodes += select_nodes
    inits += select_inits
    nodes += [
        helper.make_node("Gather", ["item_factors", "cand"], ["cand_rows"], axis=0),
        helper.make_node("Transpose", ["user_vec"], ["user_col"], perm=[1, 0]),
        helper.make_node("MatMul", ["cand_rows", "user_col"], ["cand_col"]),
        helper.make_node("Reshape", ["cand_col", "cand_flat"], ["cand_dot"]),
        helper.make_node("Gather", ["item_bias", "cand"], ["cand_bias"], axis=0),
        helper.make_node("Add", ["cand_dot", "cand_bias"], ["cand_exact"]),
        helper.make_node("Gather", ["exclude_mask", "cand"], ["cand_excluded"], axis=0),
        helper.make_node("Where", ["cand_excluded", "neg_inf", "cand_exact"], ["cand_scores"]),
        helper.make_node("TopK", ["cand_scores", "k"], ["scores", "cand_rank"], axis=-1, largest=1, sorted=1),
        helper.make_node("Gather", ["cand", "cand_rank"], ["indices"], axis=0),
    ]
    return nodes, inits


def candidate_check(
    model: SequentialModel,
    candidate_graph: onnx.ModelProto,
    exact_graph: onnx.ModelProto,
    *,
    ks: Sequence[int] = (20,),
    n_requests: int = 300,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the int8 candidate graph against the exact graph (onnxruntime) on sampled requests.

    Requests cycle through the three kinds serving sends: a known user alone, a known user with
    request events (another user's last events), an anonymous session (a user's stored events);
    every other one also excludes a random 0-95 % of the items. A request fails when an answered
    item differs and the two scores are not a tie (1e-5), or a score is off by more than 1e-4.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    exact, candidate = (
        ort.InferenceSession(g.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        for g in (exact_graph, candidate_graph)
    )
    rng = np.random.default_rng(seed)
    n, users = model.n_items, model.n_users
    answers: list[tuple[float, bool]] = []
    for i in range(n_requests):
        other = int(rng.integers(users)) if users else -1
        items, types = model.user_history(other) if users else (rng.integers(0, n, 5), np.ones(5, np.int64))
        user = -1 if (i % 3 == 2 or not users) else int(rng.integers(users))
        if i % 3 == 1:
            items, types = items[-3:], types[-3:]
        elif i % 3 == 0:
            items, types = items[:0], types[:0]
        share = rng.uniform(0, 0.95) if i % 2 else 0.0
        mask = np.asarray(rng.random(n) < share, dtype=bool)
        for k in ks:
            k = min(int(k), n)
            feed = ox.feeds(
                n,
                user_index=user,
                history_items=items,
                history_weights=type_weights(types),
                exclude_mask=mask,
                k=k,
            )
            answers.append(oc.compare_answers(exact.run(None, feed), candidate.run(None, feed)))
    return oc.check_summary(answers, ks)


def export_sequential_model(
    model: SequentialModel,
    *,
    int8_candidates: bool = True,
    check_ks: Sequence[int] = (20,),
    check_requests: int = 300,
    seed: int = 0,
    meta: dict[str, str] | None = None,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The served sequential graph and the manifest record of which one it is and why.

    The int8 candidate graph is used only when :func:`candidate_check` finds that it answers every
    sampled request like the exact graph; otherwise (or with ``int8_candidates=False``, or more
    than ``MAX_CANDIDATE_DIM`` dimensions) the exact graph is exported.
    """
    exact = build_sequential_model(model, meta=meta)
    record: dict[str, Any] = {"graph": "exact", "candidate_check": None}
    if int8_candidates and model.dim > oc.MAX_CANDIDATE_DIM:
        record["candidate_skipped"] = f"more than {oc.MAX_CANDIDATE_DIM} dimensions"
    elif int8_candidates:
        candidate = build_sequential_model(model, scoring="int8-candidates", meta=meta)
        check = candidate_check(model, candidate, exact, ks=check_ks, n_requests=check_requests, seed=seed)
        record["candidate_check"] = check
        if check["ok"]:
            record["graph"] = "int8-candidates"
            return candidate, record
    return exact, record


def sequence_for(
    model: SequentialModel,
    user_index: int,
    history_items: Sequence[int] | np.ndarray,
    history_weights: Sequence[float] | np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The (items, type tokens) the graph feeds its transformer for this request (last ``max_len``)."""
    req_items = np.asarray(history_items, dtype=np.int64).reshape(-1)
    req_types = type_tokens(np.asarray(history_weights, dtype=np.float32))
    if user_index >= 0:
        items, types = model.user_history(user_index)
        req_items, req_types = np.concatenate([items, req_items]), np.concatenate([types, req_types])
    return req_items[-model.max_len :], req_types[-model.max_len :]
