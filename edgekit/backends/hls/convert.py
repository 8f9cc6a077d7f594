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
import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from ...errors import ModelError, UnsupportedOpError
from ...frontends.qonnx_lowering import describe
from ...ir.contract import requants_in
from ...ir.graph import Graph
from ...ir.operators import get_op, hls_layers, hls_role
from .precision import EXACT as EXACT_ROUNDING
from .precision import FixedType, accumulator_type, pow2_exponent, tensor_type

HLS_BACKENDS = {"vitis": "Vitis", "vivado": "Vivado"}
IO_TYPES = ("io_parallel", "io_stream")
PROJECT_NAME = "edgekit_model"



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
                f"{describe(node)}: hls4ml has no Trunc layer (Brevitas exports one after a quantized "
                "average pool, e.g. TruncAvgPool); use a max pool or a strided quantized convolution for the "
                "FPGA backend")
        if node.op_type in ("Resize", "Upsample"):
            raise UnsupportedOpError(
                f"{describe(node)}: hls4ml {_hls4ml_version()}'s QONNX path does not convert {node.op_type} "
                "exactly (it fails on the empty roi input, and its Resize layer takes the width from the height "
                "axis), so the FPGA backend refuses it; build this model for a Cortex-M target")
    supported = _hls4ml_onnx_ops()
    for node in g.node:
        if supported and node.op_type not in supported:
            raise UnsupportedOpError(f"{describe(node)}: hls4ml {_hls4ml_version()} has no ONNX handler for "
                                     f"{node.op_type}, so the FPGA backend cannot build this graph")
        if node.op_type == "Conv":
            from onnx import helper

            dil = [d for a in node.attribute if a.name == "dilations" for d in helper.get_attribute_value(a)]
            if any(d != 1 for d in dil):
                raise UnsupportedOpError(f"{describe(node)}: dilated convolutions (dilations {dil}) are not "
                                         "supported by hls4ml's QONNX path")
            group = [int(helper.get_attribute_value(a)) for a in node.attribute if a.name == "group"]
            w_shape = model.get_tensor_shape(node.input[1])
            if group and group[0] != 1 and w_shape is not None and w_shape[0] != group[0]:
                raise UnsupportedOpError(f"{describe(node)}: depthwise convolution with depth multiplier "
                                         f"{w_shape[0] // group[0]}; hls4ml's kernels support only 1")
    for node in g.node:
        if node.op_type in ("AveragePool", "GlobalAveragePool"):
            shape = model.get_tensor_shape(node.input[0])
            if shape is not None and len(shape) == 3:
                raise UnsupportedOpError(
                    f"{describe(node)}: 1D average pooling breaks qonnx's channels-last conversion that "
                    "hls4ml needs; use a max pool, or flatten and use a quantized linear layer")
            raise UnsupportedOpError(
                f"{describe(node)}: average pooling is not supported by the FPGA backend (hls4ml divides by "
                "the window size in fixed point, which edgekit cannot match bit for bit); use a max pool or a "
                "strided quantized convolution")
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
                    f"{describe(node)}: its output '{o}' feeds {len(users) + (o in outputs)} consumers ({names}"
                    f"{', the graph output' if o in outputs else ''}); hls4ml's QONNX path does not move "
                    "layout transposes through forks, so branching graphs are not supported by the FPGA backend")


def _hls4ml_onnx_ops() -> set[str]:
    try:
        from hls4ml.converters.onnx_to_hls import get_supported_onnx_layers
    except ImportError:
        return set()
    # Gemm becomes MatMul + Add in the preparation (GemmToMatMul)
    return set(get_supported_onnx_layers()) | {"Identity", "Dropout", "Quant", "Gemm"}


def _hls4ml_version() -> str:
    try:
        import hls4ml
    except ImportError:
        return "?"
    return getattr(hls4ml, "__version__", "?")


def _per_channel_weight_nodes(model) -> list[str]:
    """Layers whose weight quantizer has more than one scale (hls4ml handles those only in some layers)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    quant_out = {n.output[0]: n for n in model.graph.node if n.op_type == "Quant"}
    names = []
    for n in model.graph.node:
        if n.op_type in ("MatMul", "Gemm", "Conv") and len(n.input) > 1 and n.input[1] in quant_out:
            q = quant_out[n.input[1]]
            if q.input[1] in inits and np.unique(numpy_helper.to_array(inits[q.input[1]])).size > 1:
                names.append(describe(n))
    return names


def prepare_for_hls4ml(cleaned_model):
    """hls4ml's QONNX preprocessing: channels-last (input included), Gemm -> MatMul, cleanup."""
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    check_patterns(cleaned_model)
    m = copy.deepcopy(cleaned_model)
    fold_float_bias_quant(m)
    try:
        with quiet():
            m = m.transform(ConvertToChannelsLastAndClean(make_input_channels_last=True))
            m = m.transform(GemmToMatMul())
            m = cleanup_model(m)
    except Exception as e:
        raise ModelError(f"qonnx could not prepare the graph for hls4ml (channels-last conversion, "
                         f"Gemm to MatMul): {type(e).__name__}: {e}") from None
    return m


@contextlib.contextmanager
def pooling1d_fix():
    """Work around hls4ml 1.3's ONNX handler for 1D pooling, for the duration of a conversion.

    The handler reads a channels-last (N, W, C) input as (N, C, W) - swapping ``n_in`` and
    ``n_filt`` - and never sets ``pad_left``/``pad_right``, so every QONNX 1D MaxPool fails
    with 'Attribute "pad_left" of layer ... not set'. The wrapper recomputes those
    attributes from the channels-last shape; the original handler is restored afterwards.
    """
    import importlib

    onnx_to_hls = importlib.import_module("hls4ml.converters.onnx_to_hls")
    originals = {op: onnx_to_hls.layer_handlers.get(op) for op in ("MaxPool", "AveragePool")}

    def wrap(orig):
        def handler(node, input_names, input_shapes, graph):
            layer = orig(node, input_names, input_shapes, graph)
            if layer.get("class_name", "").endswith("Pooling1D"):
                _, width, chans = input_shapes[0]
                pads = list(layer.get("pads") or [0, 0])
                dil = (layer.get("dilations") or [1])[0]
                layer["n_in"], layer["n_filt"] = int(width), int(chans)
                layer["pad_left"], layer["pad_right"] = int(pads[0]), int(pads[-1])
                layer["n_out"] = int((width + pads[0] + pads[-1] - ((layer["pool_width"] - 1) * dil + 1))
                                     // layer["stride_width"] + 1)
            return layer

        handler.handles = getattr(orig, "handles", None)
        return handler

    for op, orig in originals.items():
        if orig is not None:
            onnx_to_hls.layer_handlers[op] = wrap(orig)
    try:
        yield
    finally:
        for op, orig in originals.items():
            if orig is not None:
                onnx_to_hls.layer_handlers[op] = orig


@contextlib.contextmanager
def single_channel_transpose_fix():
    """Keep hls4ml 1.3's RemoveSingleChannelTranspose to the case where it is a no-op, for the
    duration of a conversion.

    The pass removes a Transpose that reads the graph input whenever the input's first dimension
    is 1, assuming hls4ml's own (1, H, W) -> (H, W, 1) transpose of a one-channel input. edgekit's
    graphs start with the opposite transpose (qonnx's channels-last input back to channels first),
    where a first dimension of 1 is the height: removing it reorders the data and the C-simulation
    computes another function (found by `edgekit fuzz --fpga`, seed 700265). Only a transpose that
    moves the first axis last is let through.
    """
    from hls4ml.model.optimizer.passes.transpose_opt import RemoveSingleChannelTranspose

    original = RemoveSingleChannelTranspose.match

    def match(self, node):
        if not original(self, node):
            return False
        perm = [int(p) for p in node.get_attr("perm")]
        return perm == list(range(1, len(perm))) + [0]

    RemoveSingleChannelTranspose.match = match
    try:
        yield
    finally:
        RemoveSingleChannelTranspose.match = original


@contextlib.contextmanager
def hls4ml_fixes():
    """Every workaround for hls4ml 1.3 that a conversion needs (pooling1d_fix, single_channel_transpose_fix)."""
    with pooling1d_fix(), single_channel_transpose_fix():
        yield


def fold_float_bias_quant(model) -> list[str]:
    """Replace a quantized bias with a float-scale (not power-of-two) grid by its float values.

    hls4ml 1.3 turns such a ``Quant`` on a constant into a Constant plus a rescaling
    ApplyAlpha that its Add handling cannot fold, and the conversion dies with an
    IndexError. The bias values themselves are unchanged (codes x scale in float32); only
    float-scale models take this path, and their C-simulation is reported, not required
    to be exact. Returns the names of the folded Quant nodes.
    """
    from onnx import helper, numpy_helper
    from qonnx.custom_op.general.quant import quant

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    folded = []
    for node in list(g.node):
        if node.op_type != "Quant" or node.input[0] not in inits or any(i not in inits for i in node.input[1:4]):
            continue
        users = consumers.get(node.output[0], [])
        is_bias = [u.op_type == "Add" or (u.op_type in ("Gemm", "Conv") and len(u.input) > 2
                                          and u.input[2] == node.output[0]) for u in users]
        if not users or not all(is_bias):
            continue  # only biases (weights feed MatMul/Conv, which hls4ml handles)
        scale = numpy_helper.to_array(inits[node.input[1]])
        zp = numpy_helper.to_array(inits[node.input[2]])
        if pow2_exponent(scale) is not None and not np.any(zp):
            continue
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        mode = a.get("rounding_mode", b"ROUND")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        val = quant(numpy_helper.to_array(inits[node.input[0]]), scale, zp,
                    numpy_helper.to_array(inits[node.input[3]]), int(a.get("signed", 1)), int(a.get("narrow", 0)),
                    mode)
        g.initializer.append(numpy_helper.from_array(np.asarray(val, np.float32), node.output[0]))
        g.node.remove(node)
        folded.append(node.name)
    return folded


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
    # an operator that becomes an hls4ml compute layer (weights, accumulator): dense, convolutions
    return any(h.role == "compute" for h in get_op(node.op, node.name).hls_layers) and len(node.inputs) >= 2 \
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
        if not all(rq.exact for rq in requants_in(node.attrs)):
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
            # IR weights: dense [out, in], conv OHWI, depthwise HWC (one filter per output channel)
            rows_axis = -1 if node.attrs.get("depthwise") else 0
            acc, bound = accumulator_type(x, w, codes, bias, rows_axis=rows_axis)
            e_w = pow2_exponent(w.scale)
            w_type = tensor_type(w)
            b_bits = graph.tensors[node.inputs[2]].bits if len(node.inputs) > 2 else acc.width
            bias_type = FixedType(b_bits, b_bits + acc.lsb_exp, True, "RND_CONV", "SAT")
            out = graph.tensors[node.outputs[0]]
            rq = node.attrs.get("requant")
            out_type = tensor_type(out) if rq is not None else acc
            layers.append(LayerPlan(node.name, node.op, tensor_type(x), w_type, bias_type, acc, bound, out_type,
                                    codes.astype(np.float64) * 2.0**e_w, codes,
                                    int(codes.size // codes.shape[rows_axis]), int(codes.shape[rows_axis]),
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

    with quiet(), hls4ml_fixes():
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

    try:
        cfg = make_config(onnx_model if onnx_model is not None else hls_onnx, plan, opts)
    except (UnsupportedOpError, ModelError):
        raise
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UnsupportedOpError(f"hls4ml could not read the graph: {type(e).__name__}: {msg}") from None
    kwargs = dict(output_dir=str(output_dir), project_name=PROJECT_NAME, backend=opts.hls4ml_backend,
                  io_type=opts.io_type, hls_config=cfg, clock_period=opts.clock_period_ns,
                  input_data_tb=input_data_tb, output_data_tb=output_data_tb)
    if opts.part:
        kwargs["part"] = opts.part
    try:
        with quiet(), hls4ml_fixes():
            return hls4ml.converters.convert_from_onnx_model(hls_onnx, **kwargs)
    except UnsupportedOpError:
        raise
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        hint = ""
        per_channel = _per_channel_weight_nodes(onnx_model if onnx_model is not None else hls_onnx)
        if per_channel:
            hint = (f"; the graph has per-channel weight scales ({', '.join(per_channel[:3])}), which hls4ml 1.3's "
                    "QONNX path handles only in some layers: a per-tensor weight quantizer avoids this")
        raise UnsupportedOpError(f"hls4ml could not convert the graph: {type(e).__name__}: {msg}{hint}") from None


def _set_precision(layer, type_name: str, t: FixedType) -> None:
    """Give one layer's type ``t``, without touching layers that share the same hls4ml type object.

    hls4ml shares one named type between layers where it used the model's default
    precision, so a type other than the result is replaced by a fresh one named after the
    layer; the result type (one per variable, named in the generated code) keeps its name.
    """
    from hls4ml.backends.fpga.fpga_types import APTypeConverter, HLSTypeConverter
    from hls4ml.model.types import FixedPrecisionType, NamedType

    # ap_fixed definitions (Vivado/Vitis), as hls4ml's own type transformation makes them
    p = APTypeConverter().convert(FixedPrecisionType(t.width, t.integer, t.signed, t.rounding, t.saturation))
    if type_name == "result_t":
        layer.types[type_name].precision = p
        layer.get_output_variable().type.precision = p
        return
    new = HLSTypeConverter(APTypeConverter()).convert(NamedType(f"{layer.name}_{type_name}", p))
    layer.set_attr(type_name, new)
    wname = type_name[:-2]
    if wname in getattr(layer, "weights", {}):
        layer.weights[wname].type = new
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
        _widen_float_path(layers)
        _reapply_templates(hls_model)
        for layer in layers:
            table[layer.name] = {k: str(FixedType.from_hls4ml(v.precision) or v.precision)
                                 for k, v in layer.types.items() if not k.endswith("table_t") and k != "index_t"}
        return table

    compute_idx = [i for i, lay in enumerate(layers) if hls_role(lay.class_name) == "compute"]
    if len(compute_idx) != len(plan.layers):
        raise ModelError(f"hls4ml produced {len(compute_idx)} dense/convolution layers, edgekit's IR has "
                         f"{len(plan.layers)}; cannot map precisions")
    first = layers[0]
    if first.class_name == "Input":
        have = _type(first, "result_t")
        if have != plan.input_type:
            _set_precision(first, "result_t", plan.input_type)
    bounds = compute_idx + [len(layers)]
    # Before the first dense/convolution: reshapes and transposes of the input, and possibly a
    # requantization (a quantizer or ReLU) onto the first layer's input grid.
    prefix = layers[1:compute_idx[0]] if compute_idx else layers[1:]
    target = plan.layers[0].input_type if plan.layers else plan.output_type
    _walk(prefix, plan.input_type, target, "the input", pins=[])
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
        rounds_later = any(hls_role(lay.class_name) == "activation" for lay in chain)
        # the compute layer's own result: the exact accumulator, unless its cast is the rounding point
        want = lp.accum_type if rounds_later else lp.output_type
        if _type(layer, "result_t") != want:
            _set_precision(layer, "result_t", want)
            lp.pinned.append("result")
        _walk(chain, want, lp.output_type, f"'{layer.name}'", lp.pinned)
    out = layers[-1]
    if not _type(out, "result_t").same_values(plan.output_type):
        raise ModelError(f"the hls4ml model's output has type {_type(out, 'result_t')}, edgekit's output is "
                         f"{plan.output_type}")
    _reapply_templates(hls_model)
    for layer in layers:
        table[layer.name] = {k: str(FixedType.from_hls4ml(v.precision) or v.precision)
                             for k, v in layer.types.items() if not k.endswith("table_t") and k != "index_t"}
    return table


def _reapply_templates(hls_model) -> None:
    """Regenerate the layers' C++ config structs, which hls4ml wrote while converting and which
    name the types (``typedef <name> accum_t;``): a replaced type must appear there too."""
    backend = hls_model.config.backend.name.lower()
    hls_model.apply_flow(f"{backend}:apply_templates", reapply="single")


FLOAT_PATH_SIGNIFICANT_BITS = 32


def _covering_type(values: np.ndarray, significant: int = FLOAT_PATH_SIGNIFICANT_BITS) -> FixedType:
    """A signed type that holds ``values`` with ``significant`` bits below their largest magnitude."""
    m = float(np.max(np.abs(values))) if np.size(values) else 0.0
    integer = (math.floor(math.log2(m)) + 2) if m > 0 else 1
    return FixedType(significant + 1, integer, True, "RND_CONV", "SAT")


def _widen_float_path(layers) -> None:
    """Float scales: hls4ml applies them with ApplyAlpha layers whose scale/bias types default to
    the model precision, which can round a scale like 8e-5 to a multiple of 2^-16 (a ~10% error).
    Give every ApplyAlpha scale and bias 32 significant bits and its result 32 more fractional
    bits than hls4ml inferred; the stage is still reported as not exact."""
    for layer in layers:
        if layer.class_name != "ApplyAlpha":
            continue
        for wname in ("scale", "bias"):
            w = layer.weights.get(wname)
            if w is not None and f"{wname}_t" in layer.types:
                _set_precision(layer, f"{wname}_t", _covering_type(np.asarray(w.data, np.float64)))
        res = _type(layer, "result_t")
        if res is not None and res.rounding == EXACT_ROUNDING:
            _set_precision(layer, "result_t", FixedType(res.integer + FLOAT_PATH_SIGNIFICANT_BITS + 16, res.integer,
                                                        True))


def _walk(segment: list, start: FixedType, end: FixedType, after: str, pins: list) -> None:
    """Check/pin the layers between two points whose types edgekit knows.

    The last ReLU/linear activation of the segment is the one rounding point (its cast is the
    contract's requantization onto ``end``); activations before it keep the exact ``start``
    value; reshapes, transposes and max pools pass their input type through.
    """
    acts = [i for i, lay in enumerate(segment) if hls_role(lay.class_name) == "activation"]
    rounding_at = acts[-1] if acts else None
    current = start
    for i, lay in enumerate(segment):
        if hls_role(lay.class_name) == "activation":
            act = lay.get_attr("activation", "")
            if str(act).lower() not in ("relu", "linear"):
                raise UnsupportedOpError(f"hls4ml layer '{lay.name}' ({act}) after {after} is not an activation "
                                         "edgekit's FPGA backend computes exactly (ReLU, or a quantizer)")
            want = end if i == rounding_at else start
            if _type(lay, "result_t") != want:
                _set_precision(lay, "result_t", want)
                pins.append(f"{lay.name}.result")
            current = want
        elif hls_role(lay.class_name) == "pass-through":
            _check_pass_through(lay, current)
        else:
            raise UnsupportedOpError(f"hls4ml created layer '{lay.name}' ({lay.class_name}) after {after}, which "
                                     "edgekit's FPGA backend cannot account for exactly")
    if not current.same_values(end):
        raise ModelError(f"after {after} the hls4ml value has type {current}, edgekit's IR has {end}")


def _check_pass_through(layer, current: FixedType) -> None:
    if hls_role(layer.class_name) != "pass-through" and layer.class_name != "Input":
        raise UnsupportedOpError(f"hls4ml created layer '{layer.name}' ({layer.class_name}) where edgekit expects "
                                 "only reshapes")
    declared = hls_layers().get(layer.class_name)
    if declared is not None and declared[0].name == "maxpool":  # hls4ml's pooling classes also average
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
    too_narrow = got is not None and vals.size and \
        np.max(np.abs(codes)) >= 2 ** (got.width - 1) * 2.0 ** (got.lsb_exp - lp.accum_type.lsb_exp)
    if got is None or got.lsb_exp > lp.accum_type.lsb_exp or too_narrow:
        _set_precision(layer, "bias_t", lp.bias_type)
        lp.pinned.append("bias")
