"""The broken model: a good version's bundle with its item scores shuffled.

It passes the offline gate (it is evaluated like the model it was exported from), so only the
off-policy gate or the canary's alarms can stop it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

BROKEN_NOTE = "demo: v2 with its item scores shuffled (a broken export that passes the offline gate)"


def shuffled_scores_graph(model: Any, seed: int) -> Any:
    """The graph with its item scores permuted: the score meant for item j is given to item pi(j),
    like shuffled item embeddings, for any graph with the bundle's I/O (exact, int8-candidate,
    neighbour or popularity).

    Done at the graph's edges, so it does not depend on how the inside scores and masks: the graph
    runs on the mask seen through pi (``exclude_mask[pi]``) and its answer j is reported as pi(j).
    Excluded items therefore stay excluded, and an item is shown with another item's score.
    """
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    n_items = next(
        d.dim_value for i in graph.input if i.name == "exclude_mask" for d in i.type.tensor_type.shape.dim
    )
    producers = [n for n in graph.node if "indices" in n.output]
    if n_items <= 0 or len(producers) != 1:
        raise ValueError("expected a static exclude_mask input and one node producing indices")
    perm = np.random.default_rng(seed).permutation(n_items).astype(np.int64)
    graph.initializer.append(numpy_helper.from_array(perm, "demo_shuffle_perm"))

    def rename(nodes: Any) -> None:  # every use of the mask, in subgraphs too
        for node in nodes:
            for i, name in enumerate(node.input):
                if name == "exclude_mask":
                    node.input[i] = "demo_shuffled_mask"
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    rename(attr.g.node)

    rename(graph.node)
    producer = producers[0]
    producer.output[list(producer.output).index("indices")] = "demo_inner_indices"
    graph.node.insert(
        0, helper.make_node("Gather", ["exclude_mask", "demo_shuffle_perm"], ["demo_shuffled_mask"], axis=0)
    )
    graph.node.append(
        helper.make_node("Gather", ["demo_shuffle_perm", "demo_inner_indices"], ["indices"], axis=0)
    )
    onnx.checker.check_model(model)
    return model


def build_broken_bundle(registry: Any, good_version: str, version: str, work: Path, seed: int) -> Path:
    """v3: the good version's bundle with shuffled item scores, everything else identical."""
    import onnx

    from shelfwise.bundle import read_bundle, write_bundle

    src = registry.download(good_version, work / "good")
    bundle = read_bundle(src)
    graph = shuffled_scores_graph(onnx.load(str(bundle.model_path)), seed)
    manifest = {k: v for k, v in bundle.manifest.items() if k != "files"}
    manifest.update(version=version, notes=BROKEN_NOTE, parent_version=good_version)
    # Evaluated like the model it was exported from (the export is what broke): on the champion's
    # own window it scores what the champion scores, so the offline gate lets it through.
    ev = dict(manifest.get("evaluation") or {})
    best = (ev.get("models") or {}).get(ev.get("best"), {})
    ev["champion"] = {"version": good_version, "metrics": dict(best)}
    manifest["evaluation"] = ev
    out = work / "broken"
    similar = None
    if bundle.similar_indices is not None and bundle.similar_scores is not None:
        similar = (bundle.similar_indices, bundle.similar_scores)
    write_bundle(
        out,
        model=graph,
        items=bundle.items,
        manifest=manifest,
        users=bundle.users,
        similar=similar,
        purchased=bundle.purchased,
    )
    return out
