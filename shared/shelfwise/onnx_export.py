"""ONNX graph builders for the served models, each with a numpy reference scorer of identical semantics.

Every graph has the I/O fixed in docs/contracts.md, so serving treats all models alike:

    inputs   user_index int64[1], history_items int64[H], history_weights float32[H],
             exclude_mask bool[N], k int64[1]
    outputs  scores float32[k], indices int64[k]

Scoring, masking (``Where(exclude_mask, -inf, scores)``) and ``TopK`` all run inside the graph,
so one ``session.run`` answers a request. Excluded items score ``-inf``; when ``k`` exceeds the
number of allowed items the tail of the answer is ``-inf`` and callers drop it. Ties are broken
towards the lower item index (the ONNX ``TopK`` rule), which the references reproduce with a
stable sort.

Known users (``user_index >= 0``) are scored from their stored representation and the request
history is ignored; anonymous or new users (``user_index == -1``) are scored from the history
(fold-in). The branch is an ``If`` node, so only one side is computed. The factor graph's int8
candidate stage and the check that decides whether it is served: :mod:`shelfwise.onnx_candidates`.

Only the training side imports this module (it needs ``onnx``); serving needs onnxruntime only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from shelfwise.errors import InputError

# Opset 18: ScatterElements with reduction="add" (16+), TopK with `largest`/`sorted` (11+);
# supported by onnxruntime 1.32. IR version 9 is what that opset was released with.
OPSET = 18
IR_VERSION = 9
# onnxruntime's contrib operators (MatMulIntegerToFloat); the checker skips their schema.
CONTRIB_DOMAIN = "com.microsoft"

INPUT_NAMES: tuple[str, ...] = ("user_index", "history_items", "history_weights", "exclude_mask", "k")
OUTPUT_NAMES: tuple[str, ...] = ("scores", "indices")

# metadata_props keys the builders record; serving and bundle checks read them back.
META_KIND = "shelfwise.kind"
META_ITEMS = "shelfwise.n_items"
META_USERS = "shelfwise.n_users"
META_SCORING = "shelfwise.scoring"

NEG_INF = np.float32(-np.inf)


class ExportError(InputError):
    """The arrays given to a builder are inconsistent (shapes, dtypes, index ranges)."""


# --------------------------------------------------------------------------- shared graph parts


def _io(n_items: int) -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    inputs = [
        helper.make_tensor_value_info("user_index", TensorProto.INT64, [1]),
        helper.make_tensor_value_info("history_items", TensorProto.INT64, ["H"]),
        helper.make_tensor_value_info("history_weights", TensorProto.FLOAT, ["H"]),
        helper.make_tensor_value_info("exclude_mask", TensorProto.BOOL, [n_items]),
        helper.make_tensor_value_info("k", TensorProto.INT64, [1]),
    ]
    outputs = [
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["k"]),
        helper.make_tensor_value_info("indices", TensorProto.INT64, ["k"]),
    ]
    return inputs, outputs


def _mask_and_topk(raw_scores: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes turning a float [N] tensor into the (scores, indices) outputs."""
    inits = [numpy_helper.from_array(np.array(NEG_INF, dtype=np.float32), "neg_inf")]
    nodes = [
        helper.make_node("Where", ["exclude_mask", "neg_inf", raw_scores], ["masked_scores"]),
        helper.make_node("TopK", ["masked_scores", "k"], ["scores", "indices"], axis=-1, largest=1, sorted=1),
    ]
    return nodes, inits


def _user_condition() -> list[onnx.NodeProto]:
    """``is_known`` = scalar bool ``user_index[0] >= 0`` (If needs a one-element condition)."""
    return [
        helper.make_node("Constant", [], ["zero_i64"], value=numpy_helper.from_array(np.array(0, np.int64))),
        helper.make_node("Squeeze", ["user_index"], ["user_index_scalar"]),
        helper.make_node("GreaterOrEqual", ["user_index_scalar", "zero_i64"], ["is_known"]),
    ]


def _model(
    graph: onnx.GraphProto,
    kind: str,
    n_items: int,
    n_users: int,
    extra_meta: dict[str, str] | None,
    *,
    contrib: bool = False,
) -> onnx.ModelProto:
    opsets = [helper.make_opsetid("", OPSET)]
    if contrib:
        opsets.append(helper.make_opsetid(CONTRIB_DOMAIN, 1))
    model = helper.make_model(
        graph,
        opset_imports=opsets,
        producer_name="shelfwise",
        ir_version=IR_VERSION,
    )
    meta = {META_KIND: kind, META_ITEMS: str(n_items), META_USERS: str(n_users), **(extra_meta or {})}
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model, full_check=True)
    return model


def _as_2d_float(name: str, array: Any) -> np.ndarray:
    a = np.asarray(array)
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.floating):
        raise ExportError(f"{name} must be a 2-D float array, got shape {a.shape} dtype {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise ExportError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(a, dtype=np.float32)


# --------------------------------------------------------------------------- (a) factor model


def als_projection(item_factors: np.ndarray, regularization: float) -> np.ndarray:
    """``(YᵀY + λI)⁻¹``: the fold-in projection for (implicit) ALS item factors ``Y``.

    Folding a history ``w`` (weights over items) in as ``u = (wᵀ Y[h]) P`` with this ``P`` is the
    ridge-regression solution for the user vector when every item has the same confidence, i.e.
    implicit ALS' exact user step without the per-user ``Yᵀ(Cᵤ - I)Y`` correction. That term is
    what makes the exact step need a d x d solve per request; dropping it keeps the graph a pair
    of MatMuls and, on held-out sessions, ranks within noise of the exact solve.
    """
    y = np.asarray(item_factors, dtype=np.float64)
    gram = y.T @ y + float(regularization) * np.eye(y.shape[1])
    return np.linalg.inv(gram).astype(np.float32)


@dataclass(frozen=True)
class FactorModel:
    """Arrays of a factor model: item factors [N,d], known-user factors [U,d], fold-in projection [d,d]."""

    item_factors: np.ndarray
    user_factors: np.ndarray
    projection: np.ndarray

    @classmethod
    def create(
        cls,
        item_factors: Any,
        user_factors: Any | None = None,
        projection: Any | None = None,
    ) -> FactorModel:
        """Validate and normalise the arrays (float32, contiguous); identity projection by default."""
        items = _as_2d_float("item_factors", item_factors)
        n, d = items.shape
        if n == 0 or d == 0:
            raise ExportError("item_factors must have at least one item and one dimension")
        users = (
            np.zeros((0, d), np.float32)
            if user_factors is None
            else _as_2d_float("user_factors", user_factors)
        )
        if users.shape[1] != d:
            raise ExportError(f"user_factors has {users.shape[1]} dimensions, item_factors has {d}")
        proj = np.eye(d, dtype=np.float32) if projection is None else _as_2d_float("projection", projection)
        if proj.shape != (d, d):
            raise ExportError(f"projection must be [{d},{d}], got {list(proj.shape)}")
        return cls(items, users, proj)


def build_factor_model(
    model: FactorModel, *, float16: bool = False, meta: dict[str, str] | None = None
) -> onnx.ModelProto:
    """Factor-model graph: ``scores = Y · u`` with ``u`` the user row or the fold-in of the history.

    ``u = user_factors[user_index]`` for a known user, else ``u = (history_weightsᵀ Y[history]) P``.
    Item factors are stored transposed ([d, N]) so the per-request product is a 1 x d by d x N
    GEMM, the shape MLAS is fastest at. ``float16=True`` stores the item matrix in half precision
    (half the file, S3 and /tmp size); onnxruntime folds the Cast into a float32 constant when the
    session is created, so request latency is unchanged and scores differ by fp16 rounding only.
    """
    n, d = model.item_factors.shape
    u = model.user_factors.shape[0]
    item_t = np.ascontiguousarray(model.item_factors.T)
    inits = [numpy_helper.from_array(model.projection, "projection")]
    nodes: list[onnx.NodeProto] = []
    if float16:
        inits.append(numpy_helper.from_array(item_t.astype(np.float16), "item_factors_t_f16"))
        nodes.append(
            helper.make_node("Cast", ["item_factors_t_f16"], ["item_factors_t"], to=TensorProto.FLOAT)
        )
    else:
        inits.append(numpy_helper.from_array(item_t, "item_factors_t"))
    # A zero row stands in when there are no known users, so the graph stays valid; serving
    # never sends a user_index for a model without users.
    users = model.user_factors if u else np.zeros((1, d), np.float32)
    inits.append(numpy_helper.from_array(users, "user_factors"))

    nodes += _user_condition()

    # then: the stored user row, [1, d]
    then_nodes = [helper.make_node("Gather", ["user_factors", "user_index"], ["user_vec_known"], axis=0)]
    then_graph = helper.make_graph(
        then_nodes,
        "known_user",
        [],
        [helper.make_tensor_value_info("user_vec_known", TensorProto.FLOAT, [1, d])],
    )
    # else: fold-in, (Y[:, h] · w)ᵀ P, [1, d]; an empty history gives the zero vector.
    else_nodes = [
        helper.make_node("Gather", ["item_factors_t", "history_items"], ["hist_factors_t"], axis=1),
        helper.make_node("Unsqueeze", ["history_weights", "axes_last"], ["weights_col"]),
        helper.make_node("MatMul", ["hist_factors_t", "weights_col"], ["summed_col"]),
        helper.make_node("Transpose", ["summed_col"], ["summed_row"], perm=[1, 0]),
        helper.make_node("MatMul", ["summed_row", "projection"], ["user_vec_fold"]),
    ]
    else_graph = helper.make_graph(
        else_nodes,
        "fold_in",
        [],
        [helper.make_tensor_value_info("user_vec_fold", TensorProto.FLOAT, [1, d])],
    )
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axes_last"))
    inits.append(numpy_helper.from_array(np.array([n], np.int64), "flat_shape"))
    nodes += [
        helper.make_node("If", ["is_known"], ["user_vec"], then_branch=then_graph, else_branch=else_graph),
        helper.make_node("MatMul", ["user_vec", "item_factors_t"], ["raw_row"]),
        helper.make_node("Reshape", ["raw_row", "flat_shape"], ["raw_scores"]),
    ]
    tail, tail_inits = _mask_and_topk("raw_scores")
    inputs, outputs = _io(n)
    graph = helper.make_graph(nodes + tail, "shelfwise_factor", inputs, outputs, inits + tail_inits)
    return _model(graph, "factor", n, u, meta)


def factor_reference(
    model: FactorModel,
    user_index: int,
    history_items: Sequence[int] | np.ndarray,
    history_weights: Sequence[float] | np.ndarray,
    exclude_mask: np.ndarray,
    k: int,
    *,
    float16: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """numpy scorer with the semantics of :func:`build_factor_model` (the training-side reference)."""
    items = model.item_factors.astype(np.float16).astype(np.float32) if float16 else model.item_factors
    if user_index >= 0:
        vec = model.user_factors[user_index]
    else:
        h = np.asarray(history_items, dtype=np.int64)
        w = np.asarray(history_weights, dtype=np.float32)
        vec = (w @ items[h]) @ model.projection if h.size else np.zeros(items.shape[1], np.float32)
    return _topk(items @ vec, exclude_mask, k)


# --------------------------------------------------------------------------- (b) neighbour model


@dataclass(frozen=True)
class NeighbourModel:
    """Arrays of an item-to-item model plus the stored recent history of known users (CSR).

    ``neighbour_indices``/``neighbour_scores`` [N, M]: top-M neighbours per item, padded with
    score 0. ``user_indptr`` [U+1], ``user_items`` / ``user_weights`` [nnz]: user u's history is
    ``user_items[indptr[u]:indptr[u+1]]``. ``prior`` [N] is added to every score (e.g. a tiny
    multiple of popularity to order items the history says nothing about).
    """

    neighbour_indices: np.ndarray
    neighbour_scores: np.ndarray
    user_indptr: np.ndarray
    user_items: np.ndarray
    user_weights: np.ndarray
    prior: np.ndarray

    @classmethod
    def create(
        cls,
        neighbour_indices: Any,
        neighbour_scores: Any,
        user_indptr: Any | None = None,
        user_items: Any | None = None,
        user_weights: Any | None = None,
        prior: Any | None = None,
    ) -> NeighbourModel:
        """Validate shapes and index ranges; normalise dtypes (int32 indices, float32 values).

        Indices are stored as int32 (item indices are below 2**31): half the bytes of the two
        largest tensors of a neighbour bundle, and ONNX Gather/ScatterElements take int32 indices.
        """
        idx = np.asarray(neighbour_indices)
        val = _as_2d_float("neighbour_scores", neighbour_scores)
        if idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
            raise ExportError(f"neighbour_indices must be a 2-D integer array, got {idx.shape} {idx.dtype}")
        if idx.shape != val.shape:
            raise ExportError(f"neighbour_indices {idx.shape} and neighbour_scores {val.shape} differ")
        n = idx.shape[0]
        if n == 0:
            raise ExportError("the neighbour model needs at least one item")
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ExportError(f"neighbour_indices must lie in [0, {n})")
        if user_indptr is None:
            indptr = np.zeros(1, np.int64)
            items = np.zeros(0, np.int32)
            weights = np.zeros(0, np.float32)
        else:
            indptr = np.asarray(user_indptr, dtype=np.int64)
            items = np.asarray(user_items, dtype=np.int64)  # range-checked before narrowing
            weights = np.asarray(user_weights, dtype=np.float32)
            if indptr.ndim != 1 or indptr.size < 1 or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
                raise ExportError("user_indptr must start at 0 and never decrease")
            if indptr[-1] != items.size or items.shape != weights.shape:
                raise ExportError("user_items/user_weights must have user_indptr[-1] entries each")
            if items.size and (items.min() < 0 or items.max() >= n):
                raise ExportError(f"user_items must lie in [0, {n})")
        pri = np.zeros(n, np.float32) if prior is None else np.asarray(prior, dtype=np.float32)
        if pri.shape != (n,) or not np.all(np.isfinite(pri)):
            raise ExportError(f"prior must be a finite float vector of length {n}")
        return cls(idx.astype(np.int32), val, indptr, items.astype(np.int32), weights, pri)

    @property
    def n_users(self) -> int:
        return int(self.user_indptr.size - 1)

    def user_history(self, user_index: int) -> tuple[np.ndarray, np.ndarray]:
        """The stored (items, weights) of a known user."""
        lo, hi = int(self.user_indptr[user_index]), int(self.user_indptr[user_index + 1])
        return self.user_items[lo:hi], self.user_weights[lo:hi]


def build_neighbour_model(model: NeighbourModel, *, meta: dict[str, str] | None = None) -> onnx.ModelProto:
    """ItemKNN graph: each history item adds ``weight x neighbour score`` to its neighbours.

    ``scores = prior + scatter_add(neighbours[h], w[:, None] * neighbour_scores[h])`` via
    ``ScatterElements(reduction="add")``. Known users' histories are stored in the graph as CSR
    (indptr, items, weights) and sliced by ``user_index``, so serving sends the same inputs for
    every model and a bundle is self-contained.
    """
    n, m = model.neighbour_indices.shape
    u = model.n_users
    inits = [
        numpy_helper.from_array(model.neighbour_indices, "nbr_indices"),
        numpy_helper.from_array(model.neighbour_scores, "nbr_scores"),
        numpy_helper.from_array(model.user_indptr, "user_indptr"),
        numpy_helper.from_array(model.user_items, "user_items"),
        numpy_helper.from_array(model.user_weights, "user_weights"),
        numpy_helper.from_array(model.prior, "prior"),
        numpy_helper.from_array(np.array([1], np.int64), "one_i64"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        numpy_helper.from_array(np.array([1], np.int64), "axes_last"),
        numpy_helper.from_array(np.array([-1], np.int64), "flat"),
    ]
    nodes = _user_condition()
    then_nodes = [
        helper.make_node("Gather", ["user_indptr", "user_index"], ["row_start"], axis=0),
        helper.make_node("Add", ["user_index", "one_i64"], ["user_next"]),
        helper.make_node("Gather", ["user_indptr", "user_next"], ["row_end"], axis=0),
        helper.make_node("Slice", ["user_items", "row_start", "row_end", "axis0"], ["known_items_i32"]),
        # Stored int32; the request history is int64 and both If branches must have one type.
        helper.make_node("Cast", ["known_items_i32"], ["known_items"], to=TensorProto.INT64),
        helper.make_node("Slice", ["user_weights", "row_start", "row_end", "axis0"], ["known_weights"]),
    ]
    then_graph = helper.make_graph(
        then_nodes,
        "known_user",
        [],
        [
            helper.make_tensor_value_info("known_items", TensorProto.INT64, ["Hk"]),
            helper.make_tensor_value_info("known_weights", TensorProto.FLOAT, ["Hk"]),
        ],
    )
    else_graph = helper.make_graph(
        [
            helper.make_node("Identity", ["history_items"], ["req_items"]),
            helper.make_node("Identity", ["history_weights"], ["req_weights"]),
        ],
        "request_history",
        [],
        [
            helper.make_tensor_value_info("req_items", TensorProto.INT64, ["H"]),
            helper.make_tensor_value_info("req_weights", TensorProto.FLOAT, ["H"]),
        ],
    )
    nodes += [
        helper.make_node(
            "If", ["is_known"], ["hist_items", "hist_weights"], then_branch=then_graph, else_branch=else_graph
        ),
        helper.make_node("Gather", ["nbr_indices", "hist_items"], ["hist_nbrs"], axis=0),
        helper.make_node("Gather", ["nbr_scores", "hist_items"], ["hist_nbr_scores"], axis=0),
        helper.make_node("Unsqueeze", ["hist_weights", "axes_last"], ["hist_weights_col"]),
        helper.make_node("Mul", ["hist_nbr_scores", "hist_weights_col"], ["contrib"]),
        helper.make_node("Reshape", ["hist_nbrs", "flat"], ["contrib_idx"]),
        helper.make_node("Reshape", ["contrib", "flat"], ["contrib_val"]),
        helper.make_node(
            "ScatterElements",
            ["prior", "contrib_idx", "contrib_val"],
            ["raw_scores"],
            axis=0,
            reduction="add",
        ),
    ]
    tail, tail_inits = _mask_and_topk("raw_scores")
    inputs, outputs = _io(n)
    graph = helper.make_graph(nodes + tail, "shelfwise_neighbour", inputs, outputs, inits + tail_inits)
    return _model(graph, "neighbour", n, u, {"shelfwise.neighbours": str(m), **(meta or {})})


def neighbour_reference(
    model: NeighbourModel,
    user_index: int,
    history_items: Sequence[int] | np.ndarray,
    history_weights: Sequence[float] | np.ndarray,
    exclude_mask: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """numpy scorer with the semantics of :func:`build_neighbour_model`."""
    if user_index >= 0:
        h, w = model.user_history(user_index)
    else:
        h = np.asarray(history_items, dtype=np.int64)
        w = np.asarray(history_weights, dtype=np.float32)
    scores = model.prior.copy()
    contrib = model.neighbour_scores[h] * w[:, None]
    np.add.at(scores, model.neighbour_indices[h].ravel(), contrib.ravel())
    return _topk(scores, exclude_mask, k)


# --------------------------------------------------------------------------- (c) popularity


def build_popularity_model(popularity: Any, *, meta: dict[str, str] | None = None) -> onnx.ModelProto:
    """Popularity graph: the same scores for everyone (the baseline and the fallback variant).

    It takes the standard inputs so serving runs it like any model; user and history are unused.
    """
    pop = np.asarray(popularity, dtype=np.float32)
    if pop.ndim != 1 or pop.size == 0 or not np.all(np.isfinite(pop)):
        raise ExportError("popularity must be a non-empty finite float vector")
    n = pop.size
    tail, tail_inits = _mask_and_topk("popularity")
    inputs, outputs = _io(n)
    graph = helper.make_graph(
        tail,
        "shelfwise_popularity",
        inputs,
        outputs,
        [numpy_helper.from_array(pop, "popularity"), *tail_inits],
    )
    return _model(graph, "popularity", n, 0, meta)


def popularity_reference(
    popularity: np.ndarray, exclude_mask: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """numpy scorer with the semantics of :func:`build_popularity_model`."""
    return _topk(np.asarray(popularity, dtype=np.float32), exclude_mask, k)


# --------------------------------------------------------------------------- helpers


def _topk(scores: np.ndarray, exclude_mask: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Masked top-k, highest first, ties to the lower index (ONNX TopK's rule)."""
    masked = np.where(np.asarray(exclude_mask, dtype=bool), NEG_INF, scores.astype(np.float32))
    if not 0 <= k <= masked.size:
        raise ExportError(f"k must be in [0, {masked.size}], got {k}")
    order = np.argsort(-masked, kind="stable")[:k]
    return masked[order], order.astype(np.int64)


def feeds(
    n_items: int,
    *,
    user_index: int = -1,
    history_items: Sequence[int] | np.ndarray = (),
    history_weights: Sequence[float] | np.ndarray = (),
    exclude_mask: np.ndarray | None = None,
    k: int = 10,
) -> dict[str, np.ndarray]:
    """The input dict for ``session.run`` with the contract's dtypes and shapes."""
    return {
        "user_index": np.array([user_index], dtype=np.int64),
        "history_items": np.asarray(history_items, dtype=np.int64).reshape(-1),
        "history_weights": np.asarray(history_weights, dtype=np.float32).reshape(-1),
        "exclude_mask": np.zeros(n_items, dtype=bool) if exclude_mask is None else exclude_mask,
        "k": np.array([k], dtype=np.int64),
    }


def save_model(model: onnx.ModelProto, path: Any) -> None:
    """Write the graph as one self-contained file (no external data: bundles are a flat directory)."""
    onnx.save_model(model, str(path), save_as_external_data=False)
