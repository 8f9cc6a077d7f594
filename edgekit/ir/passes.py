"""Graph passes on the integer IR. Each keeps results identical under the contract."""
from __future__ import annotations

from .graph import Graph
from .operators import check_node, get_op


def _single_consumer(graph: Graph, tensor: str):
    users = graph.consumers(tensor)
    if len(users) == 1 and tensor not in graph.outputs:
        return users[0]
    return None


def fuse_requantize(graph: Graph) -> Graph:
    """Fold ``relu`` and ``requantize`` into the preceding accumulating op (or relu into requantize).

    Why it is exact: rounding is monotone and maps 0 to 0, so
    ``clamp(round(max(a, 0) * r) + zp, lo, hi) == clamp(round(a * r) + zp, max(lo, zp), hi)``;
    a ReLU becomes a higher lower clamp bound. The int32 accumulator never touches memory.
    """
    changed = True
    while changed:
        changed = False
        for node in list(graph.nodes):
            nxt = _single_consumer(graph, node.outputs[0])
            if nxt is None:
                continue
            merged = False
            accumulates = get_op(node.op, node.name).accumulates  # int32 out, requantized in its epilogue
            if accumulates and node.attrs.get("requant") is None and nxt.op == "requantize":
                node.attrs["requant"] = nxt.attrs["requant"]
                merged = True
            elif accumulates and node.attrs.get("requant") is not None and nxt.op == "relu":
                rq = node.attrs["requant"]
                node.attrs["requant"] = rq.with_lo(rq.zero_point)
                merged = True
            elif node.op == "relu" and nxt.op == "requantize":
                # relu(q) then requant == requant with lo raised to the output zero point
                if graph.tensors[node.inputs[0]].zero_point == graph.tensors[node.outputs[0]].zero_point:
                    rq = nxt.attrs["requant"]
                    nxt.attrs["requant"] = rq.with_lo(rq.zero_point)
                    nxt.inputs = [node.inputs[0]]
                    graph.nodes.remove(node)
                    del graph.tensors[node.outputs[0]]
                    changed = True
                    break
            if merged:
                del graph.tensors[node.outputs[0]]
                node.outputs = list(nxt.outputs)
                graph.nodes.remove(nxt)
                changed = True
                break
    return graph


def fuse_residual_add(graph: Graph) -> Graph:
    """Fold a residual ``add`` into the convolution that produces one of its operands.

    The convolution requantizes its accumulator to its own output codes exactly as
    before, then adds the other operand as the add did: identical arithmetic. The
    fused node runs where the add ran (after the other operand exists), and because it
    writes output element i right after reading residual element i it can write over
    the residual in place, so a ResNet block needs two feature maps, not three.
    """
    for add in [n for n in graph.nodes if n.op == "add"]:
        for k, operand in enumerate(add.inputs):
            conv = graph.producer(operand)
            if conv is None or conv.op != "conv2d" or conv.attrs.get("requant") is None \
                    or conv.attrs.get("residual") or _single_consumer(graph, operand) is not add:
                continue
            other = add.inputs[1 - k]
            ordered = add.attrs["in_requant"] if k == 0 else add.attrs["in_requant"][::-1]
            conv.attrs["residual"] = {"in_requant": ordered, "requant": add.attrs.get("requant")}
            conv.inputs = conv.inputs + [other]
            del graph.tensors[operand]
            conv.outputs = list(add.outputs)
            graph.nodes.remove(conv)
            graph.nodes[graph.nodes.index(add)] = conv
            break
    return graph


def run_default_passes(graph: Graph) -> Graph:
    fuse_requantize(graph)
    fuse_residual_add(graph)
    for node in graph.nodes:  # the passes set attributes: still the ones each op declares
        check_node(node)
    return graph
