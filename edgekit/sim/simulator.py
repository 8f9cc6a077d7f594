"""Vectorised execution of the integer IR.

Every kernel works on int64 numpy arrays holding integer codes, one batch at a time;
results are checked against each tensor's declared range so a kernel that leaves its
type is caught here, not on the chip.
"""
from __future__ import annotations

import functools
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..ir.contract import input_quantizer
from ..ir.graph import Graph, apply_pre_ops
from ..ir.operators import get_op


def quantize_input(graph: Graph, x: np.ndarray) -> np.ndarray:
    """Float samples in the model's input layout -> input codes (the host-side input quantizer)."""
    iq = graph.input_quant
    x = apply_pre_ops(iq, x)
    q = input_quantizer(iq.rounding)(x, iq.scale, iq.zero_point, iq.qmin, iq.qmax)
    t = graph.tensors[graph.inputs[0]]
    return q.reshape((q.shape[0],) + tuple(t.shape))


# A batch runs in blocks of samples whose largest activation (as int64) is about this size:
# numpy's temporaries then stay in the last-level cache instead of page-faulting through fresh
# memory on every operation, and the im2col patches of a convolution stay bounded at any
# batch size. Samples are independent, so blocking changes no result. Smaller blocks pay the
# per-node costs (kernel calls, thread limits) more often: 2 MB took 1.8x the CPU time of 8 MB
# on mobilenetv1-0.25 and 1.7x on ds-cnn (32 MB of L3 here).
BLOCK_BYTES = 8 << 20
# A batch is split among the cores in shares of at least this many samples (smaller ones cost
# more in thread hand-offs than a core saves).
MIN_SHARE = 32


def thread_controller():
    """The thread pools of the libraries loaded so far (BLAS; PyTorch's OpenMP once loaded).

    The blocks' GEMMs and convolutions are small, and on a shared machine a multi-threaded
    BLAS or OpenMP team spends more time waiting for busy cores than computing (a 10x slowdown
    on a loaded 2-core machine; worse, each worker thread would start a team of its own), so
    the simulator runs them on one thread per block and the blocks on the cores."""
    return _controller("torch" in sys.modules)


@functools.cache
def _controller(torch_loaded: bool):
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def samples_per_block(graph: Graph) -> int:
    """How many samples one block of the batch holds (at least one)."""
    largest = max((t.size for name, t in graph.tensors.items() if name not in graph.constants), default=1)
    return max(1, BLOCK_BYTES // (8 * max(1, largest)))


def simulate(graph: Graph, codes: np.ndarray, keep_all: bool = False,
             seconds: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Run a batch of input codes; returns the output tensors (all tensors with keep_all).

    ``seconds``, if given, receives each node's time (kernel and range check) by node name,
    summed over the blocks (blocks run on as many threads as the process has cores: numpy
    and BLAS release the GIL, and each block is independent of the others)."""
    codes = np.asarray(codes, dtype=np.int64)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    # a small model's batch fits one block; split it so that every core gets a share
    step = min(samples_per_block(graph), max(MIN_SHARE, -(-len(codes) // cores)))
    starts = range(0, len(codes), step) if len(codes) else [0]
    timings = [None if seconds is None else {} for _ in starts]

    for op in {node.op: node.name for node in graph.nodes}.items():
        get_op(*op).prepare_simulation()
    prepared = prepare_nodes(graph)
    controller = thread_controller()

    def run(i: int) -> dict[str, np.ndarray]:
        with controller.limit(limits=1, user_api="openmp"):  # this thread's OpenMP teams only
            return simulate_block(graph, codes[starts[i]:starts[i] + step], keep_all, timings[i], prepared)

    with controller.limit(limits=1, user_api="blas"):  # OpenBLAS's count is process-wide
        workers = min(len(starts), cores)
        if workers > 1:
            with ThreadPoolExecutor(workers, thread_name_prefix="edgekit-sim") as pool:
                blocks = list(pool.map(run, range(len(starts))))
        else:
            blocks = [run(i) for i in range(len(starts))]
    if seconds is not None:
        for t in timings:
            for name, sec in t.items():
                seconds[name] = seconds.get(name, 0.0) + sec
    if len(blocks) == 1:
        return blocks[0]
    return {name: arr if name in graph.constants else np.concatenate([b[name] for b in blocks])
            for name, arr in blocks[0].items()}


def readers(graph: Graph) -> dict[str, int]:
    """How many node inputs read each tensor (a tensor is dropped after its last reader)."""
    count = dict.fromkeys(graph.tensors, 0)
    for node in graph.nodes:
        for name in node.inputs:
            count[name] = count.get(name, 0) + 1
    return count


def prepare_nodes(graph: Graph) -> dict[str, object]:
    """Each node's batch-independent data (``Op.prepare_node``), worked out once for all blocks."""
    return {node.name: get_op(node.op, node.name).prepare_node(node, graph) for node in graph.nodes}


def simulate_block(graph: Graph, codes: np.ndarray, keep_all: bool = False,
                   seconds: dict[str, float] | None = None,
                   prepared: dict[str, object] | None = None) -> dict[str, np.ndarray]:
    """One block of the batch through every node (see :func:`simulate`).

    Activations are int64 arrays, or float32 arrays of exact integer codes where a kernel
    returned one (a convolution's float32 requantization): those go on as they are to the
    kernels that take them (``Op.float32_inputs``) and become int64 for the others, once."""
    values: dict[str, np.ndarray] = {graph.inputs[0]: np.asarray(codes, dtype=np.int64)}
    for name, arr in graph.constants.items():
        values[name] = arr
    remaining = dict(readers(graph))
    if prepared is None:
        prepared = prepare_nodes(graph)
    for node in graph.nodes:
        start = time.perf_counter()
        op = get_op(node.op, node.name)
        if not op.float32_inputs:
            for i in node.inputs:
                if values[i].dtype == np.float32:
                    values[i] = values[i].astype(np.int64)
        inputs = [values[i] for i in node.inputs]
        plan = prepared.get(node.name)
        outs = op.simulate(node, inputs, graph) if plan is None else op.simulate(node, inputs, graph, plan)
        for name, arr in zip(node.outputs, outs):
            t = graph.tensors[name]
            if not (isinstance(arr, np.ndarray) and arr.dtype == np.float32):
                arr = np.asarray(arr, dtype=np.int64)
            if arr.size and (arr.min() < t.qmin or arr.max() > t.qmax):
                raise AssertionError(f"simulator: node '{node.name}' produced values outside {t.dtype} "
                                     f"[{t.qmin}, {t.qmax}] for tensor '{name}' (edgekit bug)")
            values[name] = arr.reshape((arr.shape[0],) + tuple(t.shape))
        if seconds is not None:
            seconds[node.name] = seconds.get(node.name, 0.0) + time.perf_counter() - start
        if not keep_all:
            for i in node.inputs:
                remaining[i] -= 1
                if remaining[i] == 0 and i not in graph.outputs and i not in graph.constants:
                    del values[i]
    kept = values if keep_all else {o: values[o] for o in graph.outputs}
    return {name: arr.astype(np.int64) if arr.dtype == np.float32 else arr for name, arr in kept.items()}
