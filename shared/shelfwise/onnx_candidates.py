"""The int8 candidate stage of the factor graph, and the check that decides whether it is served.

Graphs over many items rank them first by 8-bit codes (:func:`quantise_items`), keep the best
``C = min(N, max(4k, k + 128))`` (:func:`candidate_count`) through a few small ``TopK`` levels
(:func:`candidate_blocks`, :func:`_best_keys`) and re-score only those exactly. The factor graph
(:func:`build_factor_candidate_model`) and the sequential one (:mod:`shelfwise.onnx_sequential`)
share that selection and the comparison of a candidate graph's answers with exact ones
(:func:`compare_answers`, :func:`check_summary`); :func:`export_factor_model` serves the candidate
graph only when :func:`candidate_check` finds it answers sampled requests like the exact graph.

Same contract as every served graph (:mod:`shelfwise.onnx_export`). Training side only (needs ``onnx``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from shelfwise.onnx_export import (
    CONTRIB_DOMAIN,
    META_SCORING,
    NEG_INF,
    ExportError,
    FactorModel,
    _io,
    _model,
    _topk,
    _user_condition,
    build_factor_model,
    factor_reference,
    feeds,
)

# Candidate stage: how many int8-ranked candidates are re-scored exactly for a request of k.
CANDIDATE_FACTOR = 4
CANDIDATE_EXTRA = 128
# The candidate selection's levels (see build_factor_candidate_model, step 2): items per block,
# blocks per super-block. Each level's TopK then reads a few thousand keys, not N. The block is
# the divisor of N in CANDIDATE_BLOCK_RANGE nearest CANDIDATE_BLOCKS[0] when there is one, so the
# N keys need no padding (a copy of all of them); the block minima are padded instead (cheap).
CANDIDATE_BLOCKS = (16, 16)
CANDIDATE_BLOCK_RANGE = range(8, 33)


def candidate_blocks(n_items: int) -> tuple[int, ...]:
    """The selection levels for ``n_items``: see ``CANDIDATE_BLOCKS``."""
    first, *rest = CANDIDATE_BLOCKS
    divisors = [b for b in CANDIDATE_BLOCK_RANGE if n_items % b == 0]
    return (min(divisors, key=lambda b: (abs(b - first), b)) if divisors else first, *rest)


# Stage 1 ranks items by a key, SMALLEST first: the integer score times -2**-50 (exact in float32
# while |score| <= 255 * 127 * d < 2**24, i.e. d <= 512; so |key| < 2**-26) plus a bias of 1 for
# excluded items (1 + key rounds to exactly 1: they all tie, ranked by index like the exact
# graph's -inf) and 3 for padding (always last).
_KEY_SCALE = np.float32(2.0**-25)  # the A and B scales of MatMulIntegerToFloat: product -2**-50
_PADDING_FLAG = 3.0
MAX_CANDIDATE_DIM = 512


def candidate_count(k: int, n_items: int) -> int:
    """``C = min(N, max(4k, k + 128))``: the graph computes the same from its ``k`` input.

    4k covers the quantisation noise around the K-th score for the usual k (20 -> 148 with the
    +128 floor, which matters most for small k where the K-th and the C-th scores are closest).
    """
    return min(n_items, max(CANDIDATE_FACTOR * k, k + CANDIDATE_EXTRA))


def quantise_items(item_factors: np.ndarray) -> tuple[np.ndarray, float]:
    """Item codes of the candidate stage: ``rint(Y / s)`` clipped to +-127, stored as uint8 + 128.

    One scale ``s = max|Y| / 127`` for the whole matrix. Stored offset by 128 (the graph passes
    128 as the zero point) because onnxruntime's uint8 x uint8 integer GEMM is faster than its
    uint8 x int8 one on this hardware class (measured 0.55 vs 0.87 ms at 100k x 64, one thread).
    """
    scale = float(np.abs(item_factors).max()) / 127.0 or 1.0
    codes = np.clip(np.rint(item_factors / scale), -127, 127).astype(np.int16) + 128
    return codes.astype(np.uint8), scale


def candidate_reference(
    model: FactorModel,
    user_index: int,
    history_items: Sequence[int] | np.ndarray,
    history_weights: Sequence[float] | np.ndarray,
    exclude_mask: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """numpy scorer with the semantics of :func:`build_factor_candidate_model` (tests use it).

    The user vector is quantised like ``DynamicQuantizeLinear``; integer scores rank the items,
    the top C allowed ones (ties to the lower index) are re-scored exactly, and ``_topk`` answers.
    It equals :func:`factor_reference` whenever the exact top-k lies among the C candidates.
    """
    items = model.item_factors
    if user_index >= 0:
        vec = model.user_factors[user_index]
    else:
        h = np.asarray(history_items, dtype=np.int64)
        w = np.asarray(history_weights, dtype=np.float32)
        vec = (w @ items[h]) @ model.projection if h.size else np.zeros(items.shape[1], np.float32)
    vec = np.asarray(vec, np.float32)
    # DynamicQuantizeLinear's rule: uint8, a range that includes 0, zero point rounded and clipped
    lo, hi = min(float(vec.min()), 0.0), max(float(vec.max()), 0.0)
    scale = np.float32((hi - lo) / 255.0)
    zero = float(np.clip(np.rint(-lo / scale), 0, 255)) if scale else 0.0
    q = np.clip(np.rint(vec / scale) + zero, 0, 255) if scale else np.zeros_like(vec)
    codes, _ = quantise_items(items)
    approx = (codes.astype(np.int64) - 128) @ (q.astype(np.int64) - int(zero))
    mask = np.asarray(exclude_mask, dtype=bool)
    # excluded items tie below every allowed one; the stable sort ranks ties by index
    key = np.where(mask, -np.inf, approx.astype(np.float64))
    c = candidate_count(k, items.shape[0])
    cand = np.sort(np.argsort(-key, kind="stable")[:c])
    scores, order = _topk(items[cand] @ vec, mask[cand], min(k, c))
    return scores, cand[order]


def _best_keys(
    keys: str, c: str, n_keys: int, blocks: Sequence[int], out: str
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes writing to ``out`` the indices of the ``c`` smallest ``keys`` in ascending order.

    The same set as ``TopK(c, largest=0)`` over all ``n_keys`` (ties to the lower index) while
    no ``TopK`` reads more than a few thousand keys. ``keys`` ([1, n_keys], n_keys a multiple of
    ``blocks[0]``) is cut into level-1 units of ``blocks[0]`` keys, those into level-2 units of
    ``blocks[1]`` level-1 units (the minima padded with +inf to a multiple), and so on;
    ``ReduceMin`` gives each unit its minimum. From the top
    level down, ``TopK(min(c, units))`` over the minima of the units still in play picks the
    units to open. Exact: a unit holding one of the c best keys has a minimum no larger than the
    c-th key, and at most c units hold them; ties go to the lower index because the units of a
    level are contiguous index ranges, always gathered in ascending order.
    """
    if n_keys % blocks[0]:
        raise ExportError(f"{n_keys} keys do not fill blocks of {blocks[0]}")
    nodes: list[onnx.NodeProto] = []
    inits = [
        numpy_helper.from_array(np.array([1], np.int64), "sel_axes"),
        numpy_helper.from_array(np.array([-1], np.int64), "sel_flat"),
    ]
    counts = [n_keys]  # counts[i]: how many level-i units there are
    minima = [keys]  # minima[i]: the keys of the level-i units, [counts[i]] ([1, n] for i = 0)
    for i, size in enumerate(blocks):
        counts.append(-(-counts[i] // size))
        level = minima[i]
        if counts[i] % size:  # only above level 0: +inf units that are never chosen
            pad = np.full(counts[i + 1] * size - counts[i], np.inf, np.float32)
            inits.append(numpy_helper.from_array(pad, f"sel_pad{i}"))
            nodes.append(helper.make_node("Concat", [level, f"sel_pad{i}"], [f"sel_padded{i}"], axis=0))
            level = f"sel_padded{i}"
        inits.append(numpy_helper.from_array(np.array([counts[i + 1], size], np.int64), f"sel_grid{i}_shape"))
        nodes.append(helper.make_node("Reshape", [level, f"sel_grid{i}_shape"], [f"sel_grid{i}"]))
        nodes.append(
            helper.make_node("ReduceMin", [f"sel_grid{i}", "sel_axes"], [f"sel_min{i + 1}"], keepdims=0)
        )
        minima.append(f"sel_min{i + 1}")

    def take(level: int, pool: str, ids: str | None, chosen: str) -> None:
        """``chosen`` = the ids (ascending) of the min(c, counts[level]) best keys in ``pool``."""
        inits.append(numpy_helper.from_array(np.array([counts[level]], np.int64), f"sel_count{level}"))
        nodes.extend(
            [
                helper.make_node("Min", [c, f"sel_count{level}"], [f"sel_k{level}"]),
                # the set only (sorted=0: ORT picks the same set, ties to the lower position,
                # without ordering it; the next TopK orders it by position)
                helper.make_node(
                    "TopK",
                    [pool, f"sel_k{level}"],
                    [f"_sel_top{level}", f"sel_by_key{level}"],
                    axis=-1,
                    largest=0,
                    sorted=0,
                ),
                # positions in ascending order are ids in ascending order: ties stay to the lower index
                helper.make_node(
                    "TopK",
                    [f"sel_by_key{level}", f"sel_k{level}"],
                    [f"sel_pos{level}" if ids else chosen, f"_sel_rank{level}"],
                    axis=-1,
                    largest=0,
                ),
            ]
        )
        if ids:
            nodes.append(helper.make_node("Gather", [ids, f"sel_pos{level}"], [chosen], axis=0))

    top = len(blocks)
    take(top, minima[top], None, f"sel_chosen{top}")
    for i in reversed(range(top)):
        size = blocks[i]
        inits.append(numpy_helper.from_array(np.array(size, np.int64), f"sel_size{i}"))
        inits.append(numpy_helper.from_array(np.arange(size, dtype=np.int64), f"sel_offsets{i}"))
        nodes.extend(
            [
                # the keys of the chosen units' members, and the members' ids, in ascending order
                helper.make_node(
                    "Gather", [f"sel_grid{i}", f"sel_chosen{i + 1}"], [f"sel_pool{i}_2d"], axis=0
                ),
                helper.make_node("Reshape", [f"sel_pool{i}_2d", "sel_flat"], [f"sel_pool{i}"]),
                helper.make_node("Unsqueeze", [f"sel_chosen{i + 1}", "sel_axes"], [f"sel_first{i}_col"]),
                helper.make_node("Mul", [f"sel_first{i}_col", f"sel_size{i}"], [f"sel_first{i}"]),
                helper.make_node("Add", [f"sel_first{i}", f"sel_offsets{i}"], [f"sel_ids{i}_2d"]),
                helper.make_node("Reshape", [f"sel_ids{i}_2d", "sel_flat"], [f"sel_ids{i}"]),
            ]
        )
        take(i, f"sel_pool{i}", f"sel_ids{i}", out if i == 0 else f"sel_chosen{i}")
    return nodes, inits


def build_factor_candidate_model(
    model: FactorModel, *, float16: bool = False, meta: dict[str, str] | None = None
) -> onnx.ModelProto:
    """Factor-model graph with an int8 candidate stage; returns the EXACT float32 scores.

    The full product ``Y · u`` reads the whole float32 item matrix (N x d x 4 bytes) per request
    and is memory-bound. This graph reads 8-bit codes instead (a quarter of the bytes) and makes
    as few passes over all N items as it can (each costs 20-60 us at 100k items):

    1. ``DynamicQuantizeLinear(u)`` -> ``MatMulIntegerToFloat`` (onnxruntime's contrib op: the
       integer GEMM with the prepacked item codes of :func:`quantise_items`, then scale and bias
       in the same kernel) gives each item a key, smallest first: its integer score times a
       negative power of two, plus the exclusion mask cast to float as the bias (one pass over the
       mask; ``Where`` makes three and cost 0.2-0.6 ms at 100k items, a penalty a Cast plus a Mul);
    2. the best ``C = min(N, max(4k, k + 128))`` keys, the same set as one ``TopK(C)`` over all
       N (ties to the lower index) at a fraction of the cost (:func:`_best_keys`: minima of
       blocks and super-blocks, then ``TopK`` level by level over the chosen units only);
    3. the candidates (sorted by item index, so exact ties still go to the lower index) are
       re-scored exactly from their float32 rows, masked with ``-inf``, and ``TopK(k)`` answers.

    The answer equals the exact graph's whenever every exact top-k item is among the C int8
    candidates; :func:`export_factor_model` only uses this graph after checking that on sampled
    users. :func:`candidate_reference` is its numpy twin. Fold-in and known users work as in
    :func:`build_factor_model`.
    """
    n, d = model.item_factors.shape
    if d > MAX_CANDIDATE_DIM:
        raise ExportError(f"the int8 candidate stage takes at most {MAX_CANDIDATE_DIM} dimensions, got {d}")
    u = model.user_factors.shape[0]
    items = model.item_factors
    blocks = candidate_blocks(n)
    padded = -(-n // blocks[0]) * blocks[0]
    codes, _ = quantise_items(items)
    # padding items hold code 128, i.e. 0; their bias puts them below every real item
    codes_t = np.full((d, padded), 128, np.uint8)
    codes_t[:, :n] = codes.T
    inits = [
        numpy_helper.from_array(model.projection, "projection"),
        numpy_helper.from_array(codes_t, "item_codes_t"),
        numpy_helper.from_array(np.asarray(_KEY_SCALE), "user_key_scale"),
        numpy_helper.from_array(np.asarray(-_KEY_SCALE), "code_key_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "code_zero"),
        numpy_helper.from_array(model.user_factors if u else np.zeros((1, d), np.float32), "user_factors"),
        numpy_helper.from_array(np.array([0], np.int64), "axes_first"),
        numpy_helper.from_array(np.array([-1], np.int64), "flat"),
        numpy_helper.from_array(np.array([CANDIDATE_FACTOR], np.int64), "cand_factor"),
        numpy_helper.from_array(np.array([CANDIDATE_EXTRA], np.int64), "cand_extra"),
        numpy_helper.from_array(np.array([n], np.int64), "n_items"),
        numpy_helper.from_array(np.array(NEG_INF, dtype=np.float32), "neg_inf"),
    ]
    nodes: list[onnx.NodeProto] = []
    if float16:
        inits.append(numpy_helper.from_array(items.astype(np.float16), "item_factors_f16"))
        nodes.append(helper.make_node("Cast", ["item_factors_f16"], ["item_factors"], to=TensorProto.FLOAT))
    else:
        inits.append(numpy_helper.from_array(items, "item_factors"))
    nodes += _user_condition()
    then_graph = helper.make_graph(
        [helper.make_node("Gather", ["user_factors", "user_index"], ["user_vec_known"], axis=0)],
        "known_user",
        [],
        [helper.make_tensor_value_info("user_vec_known", TensorProto.FLOAT, [1, d])],
    )
    # fold-in from the row-major float matrix: (wᵀ Y[h]) P, [1, d]; empty history -> zeros.
    else_graph = helper.make_graph(
        [
            helper.make_node("Gather", ["item_factors", "history_items"], ["hist_factors"], axis=0),
            helper.make_node("Unsqueeze", ["history_weights", "axes_first"], ["weights_row"]),
            helper.make_node("MatMul", ["weights_row", "hist_factors"], ["summed_row"]),
            helper.make_node("MatMul", ["summed_row", "projection"], ["user_vec_fold"]),
        ],
        "fold_in",
        [],
        [helper.make_tensor_value_info("user_vec_fold", TensorProto.FLOAT, [1, d])],
    )
    nodes.append(
        helper.make_node("If", ["is_known"], ["user_vec"], then_branch=then_graph, else_branch=else_graph)
    )
    # stage 1: a key per item, smallest first: -2**-50 x integer score, +1 if excluded, +3 padding
    bias = "excluded_f"
    nodes.append(helper.make_node("Cast", ["exclude_mask"], [bias], to=TensorProto.FLOAT))
    if padded > n:
        inits.append(numpy_helper.from_array(np.full(padded - n, _PADDING_FLAG, np.float32), "padding_flags"))
        nodes.append(helper.make_node("Concat", [bias, "padding_flags"], ["bias"], axis=0))
        bias = "bias"
    nodes += [
        helper.make_node("DynamicQuantizeLinear", ["user_vec"], ["user_q", "_user_scale", "user_zero"]),
        helper.make_node(
            "MatMulIntegerToFloat",
            ["user_q", "item_codes_t", "user_key_scale", "code_key_scale", "user_zero", "code_zero", bias],
            ["key_row"],
            domain=CONTRIB_DOMAIN,
        ),
        # stage 2: the best C keys (C computed from k), in ascending item order
        helper.make_node("Mul", ["k", "cand_factor"], ["k_times"]),
        helper.make_node("Add", ["k", "cand_extra"], ["k_plus"]),
        helper.make_node("Max", ["k_times", "k_plus"], ["c_wanted"]),
        helper.make_node("Min", ["c_wanted", "n_items"], ["c"]),
    ]
    select_nodes, select_inits = _best_keys("key_row", "c", padded, blocks, "cand")
    nodes += select_nodes
    inits += select_inits
    nodes += [
        # stage 3: exact float32 scores of the candidates, masked again (fewer allowed than C)
        helper.make_node("Gather", ["item_factors", "cand"], ["cand_factors"], axis=0),
        helper.make_node("Transpose", ["user_vec"], ["user_col"], perm=[1, 0]),
        helper.make_node("MatMul", ["cand_factors", "user_col"], ["cand_col"]),
        helper.make_node("Reshape", ["cand_col", "flat"], ["cand_exact"]),
        helper.make_node("Gather", ["exclude_mask", "cand"], ["cand_excluded"], axis=0),
        helper.make_node("Where", ["cand_excluded", "neg_inf", "cand_exact"], ["cand_scores"]),
        helper.make_node("TopK", ["cand_scores", "k"], ["scores", "cand_rank"], axis=-1, largest=1, sorted=1),
        helper.make_node("Gather", ["cand", "cand_rank"], ["indices"], axis=0),
    ]
    inputs, outputs = _io(n)
    graph = helper.make_graph(nodes, "shelfwise_factor_int8_candidates", inputs, outputs, inits)
    return _model(graph, "factor", n, u, {META_SCORING: "int8-candidates", **(meta or {})}, contrib=True)


def compare_answers(
    ref: tuple[np.ndarray, np.ndarray], got: tuple[np.ndarray, np.ndarray]
) -> tuple[float, bool]:
    """(largest score difference, changed?) of two (scores, indices) answers: changed when the
    excluded tails differ, a score is off by more than 1e-4, or an item differs without a tie."""
    (ref_s, ref_i), (got_s, got_i) = ref, got
    finite = np.isfinite(ref_s)
    same_inf = np.array_equal(finite, np.isfinite(got_s))
    diff = float(np.abs(got_s[finite] - ref_s[finite]).max(initial=0.0)) if same_inf else np.inf
    differ = got_i != ref_i
    ties = bool(np.isclose(got_s[differ], ref_s[differ], rtol=1e-4, atol=1e-5).all())
    return diff, diff > 1e-4 or not ties


def candidate_check(
    model: FactorModel,
    candidate_graph: onnx.ModelProto,
    *,
    ks: Sequence[int] = (20,),
    n_users: int = 500,
    seed: int = 0,
    float16: bool = False,
) -> dict[str, Any]:
    """Run the candidate graph (onnxruntime) against :func:`factor_reference` on sampled users.

    Known users when the model has any (the validation users), else random fold-in histories;
    every other request also excludes a random 0-95 % of the items. A request fails when an
    answered item differs from the exact one and the two scores are not a tie (1e-4), or when a
    score is off by more than 1e-4. ``ok`` means no request failed.
    """
    import onnxruntime as ort

    n, _ = model.item_factors.shape
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(
        candidate_graph.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(seed)
    n_known = model.user_factors.shape[0]
    answers: list[tuple[float, bool]] = []
    for i in range(n_users):
        user = int(rng.integers(n_known)) if n_known else -1
        hist = rng.integers(0, n, size=0 if user >= 0 else 5)
        weights = np.ones(hist.size, np.float32)
        share = rng.uniform(0, 0.95) if i % 2 else 0.0
        mask = np.asarray(rng.random(n) < share, dtype=bool)
        # A stable top-k is a prefix of the stable top-(larger k): one reference per request.
        all_s, all_i = factor_reference(model, user, hist, weights, mask, min(max(ks), n), float16=float16)
        for k in ks:
            k = min(int(k), n)
            ref_s, ref_i = all_s[:k], all_i[:k]
            feed = feeds(
                n, user_index=user, history_items=hist, history_weights=weights, exclude_mask=mask, k=k
            )
            got_s, got_i = session.run(None, feed)
            answers.append(compare_answers((ref_s, ref_i), (got_s, got_i)))
    return check_summary(answers, ks)


def check_summary(answers: list[tuple[float, bool]], ks: Sequence[int]) -> dict[str, Any]:
    """The manifest record of a candidate check from its :func:`compare_answers` results."""
    return {
        "requests_checked": len(answers),
        "requests_with_changed_topk": sum(changed for _, changed in answers),
        "ks": [int(k) for k in ks],
        "max_abs_score_diff": max((diff for diff, _ in answers), default=0.0),
        "ok": not any(changed for _, changed in answers),
    }


def export_factor_model(
    model: FactorModel,
    *,
    int8_candidates: bool = True,
    check_ks: Sequence[int] = (20,),
    check_users: int = 500,
    seed: int = 0,
    float16: bool = False,
    meta: dict[str, str] | None = None,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The served factor graph and a manifest record of which one it is and why.

    The int8 candidate graph (:func:`build_factor_candidate_model`) is used only when
    :func:`candidate_check` finds it answers every sampled request like the exact scoring;
    otherwise (or with ``int8_candidates=False``) the exact graph is exported.
    """
    record: dict[str, Any] = {"graph": "exact", "candidate_check": None}
    if int8_candidates and model.item_factors.shape[1] > MAX_CANDIDATE_DIM:
        record["candidate_skipped"] = f"more than {MAX_CANDIDATE_DIM} dimensions"
    elif int8_candidates:
        candidate = build_factor_candidate_model(model, float16=float16, meta=meta)
        check = candidate_check(
            model, candidate, ks=check_ks, n_users=check_users, seed=seed, float16=float16
        )
        record["candidate_check"] = check
        if check["ok"]:
            record["graph"] = "int8-candidates"
            return candidate, record
    return build_factor_model(model, float16=float16, meta={META_SCORING: "exact", **(meta or {})}), record
