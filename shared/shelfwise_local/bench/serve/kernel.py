"""The bare ONNX MatMul+TopK kernel on the bundle's item matrix: the baseline the served graph is held to."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

KERNEL_ITEMS = "kernel_items.npy"  # beside the bundle: the float32 factors, for the bare kernel


def kernel_times(
    bundle_dir: Path,
    n_items: int,
    requests: int,
    *,
    evict: bool = False,
    served: bool = False,
    also: Path | None = None,
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Bare float32 MatMul+TopK on the same item matrix (wall, CPU ms) and the served graph (wall ms).

    The kernel is what the exact graph cannot beat; ``served=True`` also runs the bundle's own
    model.onnx (top-20 for a random known user, no exclusions: the issue-5 figure) on one thread,
    alternating with the kernel in blocks of 100 requests so both see the same machine load.
    ``also``: another graph of the same contract timed the same way on the same requests (the
    A/B of two exports in one run); its wall ms are the fourth list (empty without it).

    ``evict``: each run follows a pass over 256 MB of other memory, so the matrix is read from
    DRAM rather than the caches (the kernel streams the whole matrix: where it lives decides its
    speed). Run in its own process (:func:`kernel_after_eviction`) so the buffer does not count
    in this process's peak RSS.
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(bundle_dir / "model.onnx"), load_external_data=False)
    # the float32 item matrix the bundle was exported from (the ANN graph stores none)
    item_t = np.ascontiguousarray(np.load(bundle_dir.parent / KERNEL_ITEMS).T, dtype=np.float32)
    n_users = int({p.key: p.value for p in model.metadata_props}.get("shelfwise.n_users", "0"))
    dim = item_t.shape[0]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["u", "Y"], ["s"]),
            helper.make_node("Reshape", ["s", "shape"], ["flat"]),
            helper.make_node("TopK", ["flat", "k"], ["v", "i"]),
        ],
        "kernel",
        [
            helper.make_tensor_value_info("u", TensorProto.FLOAT, [1, dim]),
            helper.make_tensor_value_info("k", TensorProto.INT64, [1]),
        ],
        [
            helper.make_tensor_value_info("v", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("i", TensorProto.INT64, None),
        ],
        [
            numpy_helper.from_array(item_t, "Y"),
            numpy_helper.from_array(np.array([n_items], np.int64), "shape"),
        ],
    )
    kernel = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    from shelfwise.serving.model import session_options

    sess = ort.InferenceSession(
        kernel.SerializeToString(), session_options(1), providers=["CPUExecutionProvider"]
    )
    served_sess = (
        ort.InferenceSession(
            str(bundle_dir / "model.onnx"), session_options(1), providers=["CPUExecutionProvider"]
        )
        if served
        else None
    )
    also_sess = (
        ort.InferenceSession(str(also), session_options(1), providers=["CPUExecutionProvider"])
        if also is not None
        else None
    )
    from shelfwise.onnx_export import feeds

    rng = np.random.default_rng(1)
    k = np.array([20], np.int64)
    other = np.ones(256 * 2**20 // 8) if evict else None
    times: list[float] = []
    cpu: list[float] = []
    served_times: list[float] = []
    also_times: list[float] = []
    total = min(requests, 3000) + 50
    # Blocks of 100 requests alternate between the two graphs: both see the same machine load,
    # and each runs back to back as in a process that serves only it (interleaving every request
    # would let the kernel's 25.6 MB stream evict the served graph's matrix from the caches).
    for start in range(0, total, 100):
        block = min(100, total - start)
        for _ in range(block):
            u = rng.normal(size=(1, dim)).astype(np.float32)
            if other is not None:
                other.sum()
            t, c = time.perf_counter(), time.thread_time()
            sess.run(None, {"u": u, "k": k})
            times.append((time.perf_counter() - t) * 1000)
            cpu.append((time.thread_time() - c) * 1000)
        if served_sess is None:
            continue
        users = rng.integers(n_users, size=block) if n_users else np.full(block, -1)
        requests_ = [feeds(n_items, user_index=user, k=20) for user in users.tolist()]
        for session, out in ((served_sess, served_times), (also_sess, also_times)):
            if session is None:
                continue
            for feed in requests_:
                t = time.perf_counter()
                session.run(None, feed)
                out.append((time.perf_counter() - t) * 1000)
    return times[50:], cpu[50:], served_times[50:], also_times[50:]


def kernel_after_eviction(bundle_dir: Path, n_items: int) -> float:
    """p50 ms of the kernel with the matrix evicted from the caches before each run (own process)."""
    code = (
        "import sys, statistics; from pathlib import Path\n"
        "from shelfwise_local.bench.serve.kernel import kernel_times\n"
        "wall, _, _, _ = kernel_times(Path(sys.argv[1]), int(sys.argv[2]), 150, evict=True)\n"
        "print(statistics.median(wall))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(bundle_dir), str(n_items)],
        capture_output=True,
        text=True,
        check=True,
    )
    return round(float(out.stdout.strip().splitlines()[-1]), 3)
