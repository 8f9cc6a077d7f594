"""edgekit's QONNX graph -> an hls4ml model whose precisions come from edgekit's integer IR.

The path is hls4ml's own QONNX front end (``hls4ml.converters.convert_from_onnx_model``
with a ``granularity="name"`` config from ``hls4ml.utils.config_from_onnx_model``); edgekit
adds three things around it:

1. **Pattern checks** on the cleaned graph before hls4ml sees it: ``Trunc`` (no hls4ml
   handler), 1D average pooling (breaks qonnx's channels-last conversion) and forks (not
   moved through by it) are refused with :class:`~edgekit.errors.UnsupportedOpError`
   naming the node.
2. **A precision plan** from the IR (:func:`plan_precisions`): the input type from the
   input quantizer, weight types from the weight quantizers, accumulator widths from
   ``contract.accumulator_bound``, each layer's result type from its output quantizer,
   with ``AP_RND_CONV`` (round half to even) and ``AP_SAT``.
3. **Applying and checking the plan** (:func:`apply_plan`): what the config can express is
   put into the config (input type, accumulator types, reuse factor, strategy); what it
   cannot - the result type of a Dense/Conv layer whose bias hls4ml fuses in, which its
   precision inference widens to cover a 32-bit bias - is set on the converted layer
   ("pinned"); then every layer's types are compared with the plan and any layer hls4ml
   created that edgekit cannot account for is an error.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from dataclasses import dataclass, field

import numpy as np

from ...errors import ModelError, UnsupportedOpError
from ...ir.graph import Graph
from .precision import FixedType, accumulator_type, pow2_exponent, tensor_type

HLS_BACKENDS = {"vitis": "Vitis", "vivado": "Vivado"}
IO_TYPES = ("io_parallel", "io_stream")
PROJECT_NAME = "edgekit_model"

COMPUTE_CLASSES = ("Dense", "Conv1D", "Conv2D", "PointwiseConv1D", "PointwiseConv2D")
ACTIVATION_CLASSES = ("Activation", "ReLU")
PASS_THROUGH_CLASSES = ("Reshape", "Transpose", "Pooling1D", "Pooling2D", "GlobalPooling1D", "GlobalPooling2D",
                        "Flatten")


def _describe(node) -> str:
    try:
        from ...frontends.qonnx import describe
    except ImportError:  # pragma: no cover - older front end
        return f"node '{node.name}' ({node.op_type})"
    return describe(node)


@contextlib.contextmanager
def quiet():
    """hls4ml prints its topology and warns freely; keep edgekit's output to its own lines."""
    buf = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
        warnings.simplefilter("ignore")
        level = logging.root.level
        logging.disable(logging.WARNING)
        try:
            yield buf
        finally:
            logging.disable(level if level else logging.NOTSET)


# ---------------------------------------------------------------------------------------
# 1. Patterns hls4ml's QONNX path cannot take
# ---------------------------------------------------------------------------------------
def check_patterns(model) -> None:
    """Refuse, naming the node, what hls4ml 1.3's QONNX path cannot convert."""
    g = model.graph
    inits = {i.name for i in g.initializer}
    for node in g.node:
        if node.op_type == "Trunc":
            raise UnsupportedOpError(
                f"{_describe(node)}: hls4ml has no Trunc layer (Brevitas exports one after a quantized "
                "average pool, e.g. TruncAvgPool); use a max pool or a strided quantized convolution for the "
                "FPGA backend")
        if node.op_type in ("AveragePool", "GlobalAveragePool"):
            shape = model.get_tensor_shape(node.input[0])
            if shape is not None and len(shape) == 3:
                raise UnsupportedOpError(
                    f"{_describe(node)}: 1D average pooling breaks qonnx's channels-last conversion that "
                    "hls4ml needs; use a max pool, or flatten and use a quantized linear layer")
    consumers: dict[str, list] = {}
    for node in g.node:
        for i in node.input:
            if i and i not in inits:
                consumers.setdefault(i, []).append(node)
    outputs = {o.name for o in g.output}
    for node in g.node:
        for o in node.output:
            users = consumers.get(o, [])
            if len(users) + (o in outputs) > 1:
                names = ", ".join(f"'{u.name}'" for u in users)
                raise UnsupportedOpError(
                    f"{_describe(node)}: its output '{o}' feeds {len(users) + (o in outputs)} consumers ({names}"
                    f"{', the graph output' if o in outputs else ''}); hls4ml's QONNX path does not move "
                    "layout transposes through forks, so branching graphs are not supported by the FPGA backend")


def prepare_for_hls4ml(cleaned_model):
    """hls4ml's QONNX preprocessing: channels-last (input included), Gemm -> MatMul, cleanup."""
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    check_patterns(cleaned_model)
    m = copy.deepcopy(cleaned_model)
    try:
        with quiet():
            m = m.transform(ConvertToChannelsLastAndClean(make_input_channels_last=True))
            m = m.transform(GemmToMatMul())
            m = cleanup_model(m)
    except Exception as e:
        raise ModelError(f"qonnx could not prepare the graph for hls4ml (channels-last conversion, "
                         f"Gemm to MatMul): {type(e).__name__}: {e}") from None
    return m


# ---------------------------------------------------------------------------------------
# 2. The precision plan from edgekit's IR
# ---------------------------------------------------------------------------------------
@dataclass
class LayerPlan:
    """Types for one IR compute node (dense or convolution) and what it costs."""

    name: str  # IR node name
    op: str
    input_type: FixedType
    weight_type: FixedType
    bias_type: FixedType  # on the accumulator grid, as wide as the bias quantizer
    accum_type: FixedType
    accum_bound: int
    output_type: FixedType  # the requantized output: the rounding point
    weight_values: np.ndarray  # real weight values (codes * scale), for matching with hls4ml
    weight_codes: np.ndarray
    fan_in: int
    n_out: int
    relu: bool  # the requantization clamps at the zero point (fused ReLU)
    hls_layer: str | None = None
    pinned: list = field(default_factory=list)

    def to_json(self) -> dict:
        return {"ir_node": self.name, "hls_layer": self.hls_layer, "op": self.op,
                "input": str(self.input_type), "weight": str(self.weight_type), "bias": str(self.bias_type),
                "accum": str(self.accum_type), "accum_bound": self.accum_bound, "result": str(self.output_type),
                "fan_in": self.fan_in, "n_out": self.n_out, "pinned": list(self.pinned)}


@dataclass
class PrecisionPlan:
    exact: bool  # every tensor has a power-of-two scale and zero point 0
    reason: str  # why not, when not exact
    input_type: FixedType | None
    output_type: FixedType | None
    layers: list[LayerPlan]

    def to_json(self) -> dict:
        return {"exact": self.exact, "reason": self.reason,
                "input": str(self.input_type) if self.input_type else None,
                "output": str(self.output_type) if self.output_type else None,
                "layers": [lp.to_json() for lp in self.layers]}


def _is_compute(graph: Graph, node) -> bool:
    return (node.op == "dense" or node.op.startswith("conv")) and len(node.inputs) >= 2 \
        and node.inputs[1] in graph.constants


def plan_precisions(graph: Graph) -> PrecisionPlan:
    """Derive every type hls4ml needs from the IR; ``exact=False`` when scales are not powers of two."""
    in_t = graph.tensors[graph.inputs[0]]
    out_t = graph.tensors[graph.outputs[0]]
    reasons = []
    for t in graph.tensors.values():
        if t.const and t.dtype == "int32":
            continue  # biases live on the accumulator grid: checked with their layer
        if tensor_type(t) is None:
            reasons.append(f"tensor '{t.name}' has scale {t.scale[0]:.6g}"
                           f"{' (per channel)' if len(set(t.scale)) > 1 else ''} and zero point {t.zero_point}")
    for node in graph.nodes:
        rq = node.attrs.get("requant")
        if rq is not None and not rq.exact:
            reasons.append(f"node '{node.name}' requantizes by a ratio that is not a power of two")
    exact = not reasons
    layers: list[LayerPlan] = []
    if exact:
        for node in graph.nodes:
            if not _is_compute(graph, node):
                continue
            x = graph.tensors[node.inputs[0]]
            w = graph.tensors[node.inputs[1]]
            codes = np.asarray(graph.constants[node.inputs[1]], np.int64)
            bias = (np.asarray(graph.constants[node.inputs[2]], np.int64) if len(node.inputs) > 2
                    else np.zeros(codes.shape[0], np.int64))
            acc, bound = accumulator_type(x, w, codes, bias)
            e_w = pow2_exponent(w.scale)
            w_type = tensor_type(w)
            b_bits = graph.tensors[node.inputs[2]].bits if len(node.inputs) > 2 else acc.width
            bias_type = FixedType(b_bits, b_bits + acc.lsb_exp, True, "RND_CONV", "SAT")
            out = graph.tensors[node.outputs[0]]
            rq = node.attrs.get("requant")
            out_type = tensor_type(out) if rq is not None else acc
            layers.append(LayerPlan(node.name, node.op, tensor_type(x), w_type, bias_type, acc, bound, out_type,
                                    codes.astype(np.float64) * 2.0**e_w, codes, int(codes[0].size),
                                    int(codes.shape[0]),
                                    bool(rq is not None and rq.lo == rq.zero_point and out.qmin < rq.zero_point)))
    return PrecisionPlan(exact, "; ".join(reasons[:3]) + (f" (and {len(reasons) - 3} more)" if len(reasons) > 3
                                                          else ""),
                         tensor_type(in_t), tensor_type(out_t), layers)


# ---------------------------------------------------------------------------------------
# 3. Conversion with the plan
# ---------------------------------------------------------------------------------------
@dataclass
class HlsOptions:
    backend: str = "vitis"
    io_type: str = "io_parallel"
    reuse_factor: int = 1
    part: str | None = None
    clock_period_ns: float = 5.0

    @property
    def hls4ml_backend(self) -> str:
        return HLS_BACKENDS[self.backend]

    @property
    def strategy(self) -> str:
        return "Latency" if self.reuse_factor == 1 else "Resource"


def _compute_onnx_nodes(model) -> list:
    inits = {i.name for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}

    def from_constant(name: str) -> bool:
        if name in inits:
            return True
        p = producers.get(name)
        return p is not None and p.op_type == "Quant" and p.input[0] in inits

    return [n for n in model.graph.node
            if n.op_type in ("MatMul", "Gemm", "Conv") and len(n.input) > 1 and from_constant(n.input[1])]


def make_config(hls_onnx, plan: PrecisionPlan, opts: HlsOptions) -> dict:
    import hls4ml

    with quiet():
        cfg = hls4ml.utils.config_from_onnx_model(hls_onnx, granularity="name", backend=opts.hls4ml_backend,
                                                  default_reuse_factor=opts.reuse_factor)
    cfg["Model"]["ReuseFactor"] = opts.reuse_factor
    cfg["Model"]["Strategy"] = opts.strategy
    for layer_cfg in cfg["LayerName"].values():
        if "ReuseFactor" in layer_cfg:
            layer_cfg["ReuseFactor"] = opts.reuse_factor
        layer_cfg["Strategy"] = opts.strategy
    in_name = hls_onnx.graph.input[0].name
    if plan.exact:
        cfg["LayerName"][in_name]["Precision"]["result"] = plan.input_type.hls4ml()
        nodes = _compute_onnx_nodes(hls_onnx)
        if len(nodes) != len(plan.layers):
            raise ModelError(f"the graph prepared for hls4ml has {len(nodes)} dense/convolution layers, edgekit's "
                             f"IR has {len(plan.layers)}; cannot map precisions")
        for node, lp in zip(nodes, plan.layers):
            cfg["LayerName"].setdefault(node.name, {}).setdefault("Precision", {})["accum"] = lp.accum_type.hls4ml()
    else:
        # Float scales: hls4ml applies them with fixed-point ApplyAlpha layers. Give its
        # inference room (no 16-bit default anywhere) and report the difference in verify.
        cfg["Model"]["Precision"]["default"] = "fixed<32,16>"
        cfg["LayerName"][in_name]["Precision"]["result"] = "fixed<32,16,RND_CONV,SAT>"
    return cfg


def convert(hls_onnx, plan: PrecisionPlan, opts: HlsOptions, output_dir, input_data_tb: str | None = None,
            output_data_tb: str | None = None, onnx_model=None):
    """Run hls4ml's QONNX converter with the plan's config; returns the ModelGraph (not yet written).

    ``hls_onnx`` is the prepared graph or the path of its saved file (a path keeps the
    project's ``hls4ml_config.yml`` loadable by ``hls4ml.converters.link_existing_project``);
    ``onnx_model`` is the same graph as a ModelWrapper when ``hls_onnx`` is a path.
    """
    import hls4ml

    cfg = make_config(onnx_model if onnx_model is not None else hls_onnx, plan, opts)
    kwargs = dict(output_dir=str(output_dir), project_name=PROJECT_NAME, backend=opts.hls4ml_backend,
                  io_type=opts.io_type, hls_config=cfg, clock_period=opts.clock_period_ns,
                  input_data_tb=input_data_tb, output_data_tb=output_data_tb)
    if opts.part:
        kwargs["part"] = opts.part
    try:
        with quiet():
            return hls4ml.converters.convert_from_onnx_model(hls_onnx, **kwargs)
    except UnsupportedOpError:
        raise
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UnsupportedOpError(f"hls4ml could not convert the graph: {type(e).__name__}: {msg}") from None


def _set_precision(layer, type_name: str, t: FixedType) -> None:
    from hls4ml.backends.fpga.fpga_types import APTypeConverter
    from hls4ml.model.types import FixedPrecisionType

    # ap_fixed definitions (Vivado/Vitis), as hls4ml's own type transformation makes them
    p = APTypeConverter().convert(FixedPrecisionType(t.width, t.integer, t.signed, t.rounding, t.saturation))
    layer.types[type_name].precision = p
    if type_name == "result_t":
        layer.get_output_variable().type.precision = p
    wname = type_name[:-2]
    if wname in getattr(layer, "weights", {}):
        layer.weights[wname].update_precision(p)


def _type(layer, name: str) -> FixedType | None:
    t = layer.types.get(name)
    return FixedType.from_hls4ml(t.precision) if t is not None else None


def _input_type(layer) -> FixedType | None:
    v = layer.get_input_variable()
    return FixedType.from_hls4ml(v.type.precision) if v is not None else None


def _matches_weights(layer, lp: LayerPlan) -> bool:
    w = np.asarray(layer.weights["weight"].data, np.float64)
    if w.size != lp.weight_values.size:
        return False
    return bool(np.array_equal(np.sort(w.ravel()), np.sort(lp.weight_values.ravel())))


def apply_plan(hls_model, plan: PrecisionPlan) -> dict:
    """Pin and check every layer's types against the plan; returns a per-hls4ml-layer type table."""
    layers = list(hls_model.get_layers())
    table = {}
    if not plan.exact:
        for layer in layers:
            table[layer.name] = {k: str(FixedType.from_hls4ml(v.precision) or v.precision)
                                 for k, v in layer.types.items() if not k.endswith("table_t")}
        return table

    compute_idx = [i for i, lay in enumerate(layers) if lay.class_name in COMPUTE_CLASSES]
    if len(compute_idx) != len(plan.layers):
        raise ModelError(f"hls4ml produced {len(compute_idx)} dense/convolution layers, edgekit's IR has "
                         f"{len(plan.layers)}; cannot map precisions")
    first = layers[0]
    if first.class_name == "Input":
        have = _type(first, "result_t")
        if have != plan.input_type:
            _set_precision(first, "result_t", plan.input_type)
    bounds = compute_idx + [len(layers)]
    # Layers before the first compute layer: pass-through of the input (reshape, transpose)
    for layer in layers[1:compute_idx[0]]:
        _check_pass_through(layer, plan.input_type)
    for k, lp in enumerate(plan.layers):
        layer = layers[bounds[k]]
        lp.hls_layer = layer.name
        if not _matches_weights(layer, lp):
            raise ModelError(f"hls4ml layer '{layer.name}' does not hold the weights of edgekit's node '{lp.name}'; "
                             "cannot map precisions")
        got_in = _input_type(layer)
        if got_in is None or not got_in.same_values(lp.input_type):
            raise ModelError(f"hls4ml layer '{layer.name}' takes {got_in}, edgekit's node '{lp.name}' takes "
                             f"{lp.input_type}")
        got_w = _type(layer, "weight_t")
        if got_w is None or not got_w.same_values(lp.weight_type):
            _set_precision(layer, "weight_t", lp.weight_type)
            lp.pinned.append("weight")
        else:
            lp.weight_type = got_w  # the same grid; hls4ml also knows the quantizer's narrow range
        _check_bias(layer, lp)
        if _type(layer, "accum_t") != lp.accum_type:
            _set_precision(layer, "accum_t", lp.accum_type)
            lp.pinned.append("accum")
        chain = layers[bounds[k] + 1:bounds[k + 1]]
        acts = [i for i, lay in enumerate(chain) if lay.class_name in ACTIVATION_CLASSES]
        rounding_at = acts[-1] if acts else None
        # the compute layer's own result: exact accumulator unless it is the rounding point
        want = lp.accum_type if rounding_at is not None else lp.output_type
        if _type(layer, "result_t") != want:
            _set_precision(layer, "result_t", want)
            lp.pinned.append("result")
        current = want
        for i, lay in enumerate(chain):
            if lay.class_name in ACTIVATION_CLASSES:
                act = lay.get_attr("activation", "")
                if str(act).lower() not in ("relu", "linear"):
                    raise UnsupportedOpError(f"hls4ml layer '{lay.name}' ({act}) after '{layer.name}' is not an "
                                             "activation edgekit computes exactly (ReLU, or a quantizer)")
                want = lp.output_type if i == rounding_at else lp.accum_type
                if _type(lay, "result_t") != want:
                    _set_precision(lay, "result_t", want)
                    lp.pinned.append(f"{lay.name}.result")
                current = want
            elif lay.class_name in PASS_THROUGH_CLASSES:
                _check_pass_through(lay, current)
            else:
                raise UnsupportedOpError(f"hls4ml created layer '{lay.name}' ({lay.class_name}) after '{layer.name}', "
                                         "which edgekit cannot account for exactly")
        if current != lp.output_type and not current.same_values(lp.output_type):
            raise ModelError(f"after hls4ml layer '{layer.name}' the value has type {current}, edgekit's node "
                             f"'{lp.name}' produces {lp.output_type}")
    out = layers[-1]
    if not _type(out, "result_t").same_values(plan.output_type):
        raise ModelError(f"the hls4ml model's output has type {_type(out, 'result_t')}, edgekit's output is "
                         f"{plan.output_type}")
    for layer in layers:
        table[layer.name] = {k: str(FixedType.from_hls4ml(v.precision) or v.precision)
                             for k, v in layer.types.items() if not k.endswith("table_t") and k != "index_t"}
    return table


def _check_pass_through(layer, current: FixedType) -> None:
    if layer.class_name not in PASS_THROUGH_CLASSES and layer.class_name != "Input":
        raise UnsupportedOpError(f"hls4ml created layer '{layer.name}' ({layer.class_name}) where edgekit expects "
                                 "only reshapes")
    if layer.class_name in ("Pooling1D", "Pooling2D", "GlobalPooling1D", "GlobalPooling2D"):
        if str(layer.get_attr("pool_op", "Max")).lower() != "max":
            raise UnsupportedOpError(f"hls4ml layer '{layer.name}': average pooling is not exact on FPGA here")
    got = _type(layer, "result_t")
    if got is None or not got.same_values(current):
        _set_precision(layer, "result_t", current)


def _check_bias(layer, lp: LayerPlan) -> None:
    b = layer.weights.get("bias")
    if b is None:
        return
    vals = np.asarray(b.data, np.float64).ravel()
    codes = vals * 2.0 ** (-lp.accum_type.lsb_exp)
    if not np.array_equal(codes, np.round(codes)):
        raise ModelError(f"hls4ml layer '{layer.name}': the bias is not on the accumulator's grid "
                         f"(2^{lp.accum_type.lsb_exp})")
    got = _type(layer, "bias_t")
    if got is None or got.lsb_exp > lp.accum_type.lsb_exp or \
            (vals.size and np.max(np.abs(codes)) >= 2 ** (got.width - 1) * 2.0 ** (got.lsb_exp - lp.accum_type.lsb_exp)):
        _set_precision(layer, "bias_t", lp.bias_type)
        lp.pinned.append("bias")
