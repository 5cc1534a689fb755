"""ONNX graph of a retrieval model plus the neural ranker: one graph, the usual serving contract.

The retrieval graph (any family's, as exported) is taken in whole; its ``k`` input is fed
``min(max(k, C), N)`` and its ``(scores, indices)`` outputs become the candidates. The ranker's part
then computes the features of ``shelfwise.training.ranker`` for each candidate, runs the MLP and
returns the masked top-``k``:

    inputs   user_index, history_items, history_weights, exclude_mask, k   (as every graph)
    outputs  scores float32[k] (the MLP's), indices int64[k]

Excluded items never become candidates (the retrieval graph masks them), candidates the retrieval
graph answered with ``-inf`` (fewer allowed items than candidates) stay ``-inf``. A known user's
features read their stored recent events (CSR in the graph) followed by the request's events; the
category affinity sums that history's weight per category (``ScatterElements`` add, opset 16+) and
reads it at each candidate's category. No ``If`` and no catalogue-sized work: everything after the
retrieval graph is on the C candidates and the history (per-node costs: docs/benchmarks.md).
The item table and the stored event weights are float16 (the training side rounds them to float16
first, so the reference reads the same values), the categories int32: the ranker adds 20 bytes per
item, 4 per category and 6 per stored event. Every name the ranker adds starts with ``rk_``, so it
cannot collide with the retrieval graph's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from shelfwise.onnx_export import META_KIND, ExportError

SCATTER_ADD_OPSET = 16  # ScatterElements' reduction="add"
RENAMED = {"k": "rk_cand_k", "scores": "rk_cand_scores", "indices": "rk_cand_indices"}


def _rename(graph: onnx.GraphProto, names: dict[str, str]) -> None:
    """Rename value names in ``graph``'s nodes (and every subgraph's), in place."""
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename(attr.g, names)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    _rename(g, names)
    for vi in graph.value_info:
        vi.name = names.get(vi.name, vi.name)


def _const(name: str, value: Any, dtype: Any) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def build_ranker_model(
    retrieval: onnx.ModelProto | bytes, arrays: dict[str, np.ndarray], candidates: int
) -> onnx.ModelProto:
    """One graph: ``retrieval``'s top-C re-ranked by the MLP in ``arrays`` (``Ranker.export_arrays``)."""
    base = (
        onnx.load_from_string(retrieval)
        if isinstance(retrieval, bytes)
        else onnx.ModelProto.FromString(retrieval.SerializeToString())
    )
    names = [i.name for i in base.graph.input]
    if names[:5] != ["user_index", "history_items", "history_weights", "exclude_mask", "k"]:
        raise ExportError(f"the retrieval graph does not have the serving inputs: {names}")
    n_items = int(base.graph.input[3].type.tensor_type.shape.dim[0].dim_value)
    feats = np.ascontiguousarray(arrays["item_features"], dtype=np.float16)
    if feats.shape[0] != n_items or arrays["item_category"].shape != (n_items,):
        raise ExportError(f"ranker item arrays do not match the retrieval graph's {n_items} items")
    categories = np.asarray(arrays["item_category"])
    if categories.size and categories.min() < 0:
        raise ExportError("ranker item categories must be codes >= 0")
    opset = max((o.version for o in base.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < SCATTER_ADD_OPSET:
        raise ExportError(
            f"the retrieval graph's opset {opset} is below {SCATTER_ADD_OPSET} (ScatterElements add)"
        )
    layers = sorted(int(k[1:]) for k in arrays if k.startswith("w") and k[1:].isdigit())
    if not layers:
        raise ExportError("the ranker has no MLP layers")
    g = base.graph
    _rename(g, RENAMED)
    retrieval_nodes = list(g.node)

    inits = [
        _const("rk_item_features", feats, np.float16),
        _const("rk_item_category", categories, np.int32),
        _const("rk_category_zeros", np.zeros(int(categories.max(initial=0)) + 1), np.float32),
        _const("rk_user_indptr", np.append(arrays["user_indptr"], arrays["user_indptr"][-1:]), np.int64),
        _const("rk_user_items", arrays["user_items"], np.int32),
        _const("rk_user_weights", arrays["user_weights"], np.float16),
        _const("rk_mu", arrays["mu"], np.float32),
        _const("rk_sigma", arrays["sigma"], np.float32),
        _const("rk_C", [min(candidates, n_items)], np.int64),
        _const("rk_N", [n_items], np.int64),
        _const("rk_no_category", [-1], np.int32),
        _const("rk_last", [-1], np.int64),
        _const("rk_to_end", [np.iinfo(np.int64).max], np.int64),
        _const("rk_zero_1d", [0], np.int64),
        _const("rk_one_i64", [1], np.int64),
        _const("rk_axis0", [0], np.int64),
        _const("rk_axis1", [1], np.int64),
        _const("rk_zero_f", 0.0, np.float32),
        _const("rk_one_f", 1.0, np.float32),
        _const("rk_eps", 1e-6, np.float32),
        _const("rk_neg_inf", -np.inf, np.float32),
    ]
    for i in layers:
        inits += [
            _const(f"rk_w{i}", arrays[f"w{i}"], np.float32),
            _const(f"rk_b{i}", arrays[f"b{i}"], np.float32),
        ]
    node = helper.make_node
    nodes = [
        node("Max", ["k", "rk_C"], ["rk_k_or_c"]),
        node("Min", ["rk_k_or_c", "rk_N"], ["rk_cand_k"]),
    ]
    nodes += retrieval_nodes
    # the history the features read: a known user's stored events, then the request's. One path
    # for both kinds of user, no If: an anonymous user (-1) reads row 0 and slices it empty (the
    # indptr's last entry is repeated, so row 0 exists in a graph without users)
    nodes += [
        node("GreaterOrEqual", ["user_index", "rk_zero_1d"], ["rk_is_known"]),
        node("Max", ["user_index", "rk_zero_1d"], ["rk_user_row"]),
        node("Gather", ["rk_user_indptr", "rk_user_row"], ["rk_row_start"], axis=0),
        node("Add", ["rk_user_row", "rk_one_i64"], ["rk_user_next"]),
        node("Gather", ["rk_user_indptr", "rk_user_next"], ["rk_row_next"], axis=0),
        node("Where", ["rk_is_known", "rk_row_next", "rk_row_start"], ["rk_row_end"]),
        node("Slice", ["rk_user_items", "rk_row_start", "rk_row_end", "rk_axis0"], ["rk_stored_i32"]),
        node("Cast", ["rk_stored_i32"], ["rk_stored_items"], to=TensorProto.INT64),
        node("Slice", ["rk_user_weights", "rk_row_start", "rk_row_end", "rk_axis0"], ["rk_stored_w16"]),
        node("Cast", ["rk_stored_w16"], ["rk_stored_w"], to=TensorProto.FLOAT),
        node("Concat", ["rk_stored_items", "history_items"], ["rk_hist_items"], axis=0),
        node("Concat", ["rk_stored_w", "history_weights"], ["rk_hist_w_raw"], axis=0),
        node("Max", ["rk_hist_w_raw", "rk_zero_f"], ["rk_hist_w"]),
        # retrieval score standardised over the valid candidates
        node("IsInf", ["rk_cand_scores"], ["rk_inf"]),
        node("Not", ["rk_inf"], ["rk_valid"]),
        node("Where", ["rk_valid", "rk_cand_scores", "rk_zero_f"], ["rk_s0"]),
        node("Cast", ["rk_valid"], ["rk_valid_f"], to=TensorProto.FLOAT),
        node("ReduceSum", ["rk_valid_f"], ["rk_count_raw"], keepdims=0),
        node("Max", ["rk_count_raw", "rk_one_f"], ["rk_count"]),
        node("ReduceSum", ["rk_s0"], ["rk_s_sum"], keepdims=0),
        node("Div", ["rk_s_sum", "rk_count"], ["rk_mean"]),
        node("Sub", ["rk_s0", "rk_mean"], ["rk_centred"]),
        node("Where", ["rk_valid", "rk_centred", "rk_zero_f"], ["rk_dev"]),
        node("Mul", ["rk_dev", "rk_dev"], ["rk_dev2"]),
        node("ReduceSum", ["rk_dev2"], ["rk_dev2_sum"], keepdims=0),
        node("Div", ["rk_dev2_sum", "rk_count"], ["rk_var"]),
        node("Sqrt", ["rk_var"], ["rk_std"]),
        node("Add", ["rk_std", "rk_eps"], ["rk_std_eps"]),
        node("Div", ["rk_centred", "rk_std_eps"], ["rk_z"]),
        # rank in the retrieval list, log1p
        node("Shape", ["rk_cand_scores"], ["rk_c_shape"]),
        node("Squeeze", ["rk_c_shape"], ["rk_c_scalar"]),
        node("Cast", ["rk_c_scalar"], ["rk_c_f"], to=TensorProto.FLOAT),
        node("Range", ["rk_zero_f", "rk_c_f", "rk_one_f"], ["rk_positions"]),
        node("Add", ["rk_positions", "rk_one_f"], ["rk_positions1"]),
        node("Log", ["rk_positions1"], ["rk_rank"]),
        # the user's weight share in the candidate's category: the history's weight summed per
        # category (O(H + C), not a [C, H] comparison), read at each candidate's category
        node("Gather", ["rk_item_category", "rk_hist_items"], ["rk_h_cat"], axis=0),
        node(
            "ScatterElements",
            ["rk_category_zeros", "rk_h_cat", "rk_hist_w"],
            ["rk_category_w"],
            axis=0,
            reduction="add",
        ),
        node("Gather", ["rk_item_category", "rk_cand_indices"], ["rk_c_cat"], axis=0),
        node("Gather", ["rk_category_w", "rk_c_cat"], ["rk_cat_w"], axis=0),
        node("ReduceSum", ["rk_hist_w"], ["rk_w_sum"], keepdims=0),
        node("Add", ["rk_w_sum", "rk_eps"], ["rk_w_sum_eps"]),
        node("Div", ["rk_cat_w", "rk_w_sum_eps"], ["rk_affinity"]),
        # the candidate is in the category of the history's last event (-1 for an empty history)
        node("Concat", ["rk_no_category", "rk_h_cat"], ["rk_h_cat_pad"], axis=0),
        node("Slice", ["rk_h_cat_pad", "rk_last", "rk_to_end", "rk_axis0"], ["rk_last_cat"]),
        node("Equal", ["rk_c_cat", "rk_last_cat"], ["rk_in_last"]),
        node("Cast", ["rk_in_last"], ["rk_last_f"], to=TensorProto.FLOAT),
        # history length, log1p, one per candidate
        node("Shape", ["rk_hist_w"], ["rk_h_shape"]),
        node("Cast", ["rk_h_shape"], ["rk_h_len"], to=TensorProto.FLOAT),
        node("Add", ["rk_h_len", "rk_one_f"], ["rk_h_len1"]),
        node("Log", ["rk_h_len1"], ["rk_n_hist"]),
        node("Expand", ["rk_n_hist", "rk_c_shape"], ["rk_n_hist_c"]),
        # features [C, F]: list features, then the item table's
        node("Unsqueeze", ["rk_z", "rk_axis1"], ["rk_f0"]),
        node("Unsqueeze", ["rk_rank", "rk_axis1"], ["rk_f1"]),
        node("Unsqueeze", ["rk_affinity", "rk_axis1"], ["rk_f2"]),
        node("Unsqueeze", ["rk_n_hist_c", "rk_axis1"], ["rk_f3"]),
        node("Unsqueeze", ["rk_last_f", "rk_axis1"], ["rk_f4"]),
        node("Gather", ["rk_item_features", "rk_cand_indices"], ["rk_f_items16"], axis=0),
        node("Cast", ["rk_f_items16"], ["rk_f_items"], to=TensorProto.FLOAT),
        node("Concat", ["rk_f0", "rk_f1", "rk_f2", "rk_f3", "rk_f4", "rk_f_items"], ["rk_x_raw"], axis=1),
        node("Sub", ["rk_x_raw", "rk_mu"], ["rk_x_c"]),
        node("Div", ["rk_x_c", "rk_sigma"], ["rk_h0"]),
    ]
    for j, i in enumerate(layers):
        nodes += [
            node("MatMul", [f"rk_h{j}", f"rk_w{i}"], [f"rk_mm{j}"]),
            node("Add", [f"rk_mm{j}", f"rk_b{i}"], [f"rk_lin{j}"]),
        ]
        if j < len(layers) - 1:
            nodes.append(node("Relu", [f"rk_lin{j}"], [f"rk_h{j + 1}"]))
    last = f"rk_lin{len(layers) - 1}"
    nodes += [
        node("Squeeze", [last, "rk_axis1"], ["rk_mlp"]),
        node("Where", ["rk_valid", "rk_mlp", "rk_neg_inf"], ["rk_final"]),
        node("TopK", ["rk_final", "k"], ["scores", "rk_top"], axis=-1, largest=1, sorted=1),
        node("Gather", ["rk_cand_indices", "rk_top"], ["indices"], axis=0),
    ]
    graph = helper.make_graph(
        nodes,
        "shelfwise_ranker",
        list(g.input),
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["k"]),
            helper.make_tensor_value_info("indices", TensorProto.INT64, ["k"]),
        ],
        list(g.initializer) + inits,
        value_info=list(g.value_info),
    )
    model = helper.make_model(graph, opset_imports=list(base.opset_import), producer_name="shelfwise")
    model.ir_version = base.ir_version
    meta = {p.key: p.value for p in base.metadata_props}
    meta.update(
        {
            META_KIND: "ranker",
            "shelfwise.retrieval_kind": meta.get(META_KIND, "unknown"),
            "shelfwise.candidates": str(min(candidates, n_items)),
        }
    )
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model, full_check=True)
    return model
