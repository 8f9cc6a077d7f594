"""The FPGA path for graphs hls4ml's QONNX front end cannot compute exactly: hls4ml layers made
from edgekit's integer IR.

Published QONNX files (the QONNX model zoo, FINN's and finn-examples' exports) put a float
BatchNorm and a low-bit quantizer after each layer, float pre-processing in front of the first
quantizer and float (often per-channel) scales everywhere. hls4ml 1.3's QONNX path turns those
into fixed-point BatchNormalization/ApplyAlpha layers (not exact), or fails (IndexError in
``infer_precision`` on per-channel float scales). edgekit's IR already holds the exact integer
form of the same network: dense layers on integer codes, multi-threshold activations (the
BatchNorm and quantizer as integer thresholds) and requantizations with integer multipliers.
This module hands hls4ml that form instead (``ModelGraph.from_layer_list``):

* ``dense`` -> hls4ml ``Dense`` on integer codes: ``ap_fixed<b, b>`` inputs and weights (the
  codes themselves), the int32 bias, an accumulator as wide as ``contract.accumulator_bound``
  needs; every product and sum is exact, so the result is the IR's accumulator.
* ``threshold`` -> ``EdgekitThreshold``, and a dense layer's fused requantization ->
  ``EdgekitRequant``: two layers registered through hls4ml's extension API
  (``register_layer``, config and function templates, ``register_source``), whose C++
  (``templates/hls/nnet_edgekit.h``) computes what ``edgekit/ops/threshold.py`` and
  ``contract.apply_requant`` compute.
* ``add`` (a residual add) -> ``EdgekitAdd``, the third extension layer (``edgekit/ops/add.py``'s
  arithmetic: both operands requantized onto the common scale, the sum onto the output grid).
* binary (-1/+1) and ternary weights -> hls4ml's own binary support: ``XnorPrecisionType``
  (``ap_uint<1>``) weights and binary activations, so hls4ml's Dense computes XNOR-popcount or
  +-x instead of multiplications (``binary_mode``; docs/fpga.md).
* ``reshape`` -> ``Reshape`` (no computation in io_parallel), ``concat`` -> ``Concatenate``.

Every extension layer has an io_parallel and an io_stream form; in io_stream hls4ml's own stream
flow adds the copies a fork needs (``clone_stream``).

The model's input is the IR's input codes (the host-side input quantizer, with its float
pre-processing, runs before it, as on a microcontroller) and its output the IR's output codes,
so the C-simulation is compared with the simulator code for code and must be exact whatever the
scales. A tensor with several consumers (a fork) is one hls4ml variable read by each of them.
"""
from __future__ import annotations

import numpy as np

from ...errors import UnsupportedOpError
from ...ir import contract
from ...ir.graph import Graph
from ...resources import resource_dir
from .convert import PROJECT_NAME
from .precision import FixedType, bits_for

# the IR operators this path turns into hls4ml layers
SUPPORTED_OPS = ("dense", "threshold", "requantize", "reshape", "concat", "add")
# IR operators that only this path computes exactly (hls4ml's QONNX path has no threshold layer)
NEEDS_INTEGER_PATH = ("threshold",)
SOURCE = "nnet_edgekit.h"


def wanted(graph: Graph) -> bool:
    """True when the graph needs this path: it holds an operator hls4ml's QONNX path cannot compute
    exactly, or float pre-/post-processing around the integer core (host-side in edgekit's IR)."""
    if any(n.op in NEEDS_INTEGER_PATH for n in graph.nodes):
        return True
    iq = graph.input_quant
    float_pre = [op for op, _ in (iq.pre_ops or []) if op not in ("reshape", "to_channels_last", "transpose")]
    return bool(float_pre or iq.annotation or iq.rounding == "bipolar" or graph.meta.get("output_post_ops"))


def not_taken(graph: Graph, refusal: UnsupportedOpError) -> UnsupportedOpError:
    """hls4ml's QONNX path's refusal, with why this path does not take the graph either."""
    n = next((n for n in graph.nodes if n.op not in SUPPORTED_OPS), None)
    if n is None:
        return refusal
    return UnsupportedOpError(f"{refusal}; edgekit's integer IR path, which builds such graphs from "
                              f"{', '.join(SUPPORTED_OPS)} layers, does not take node '{n.name}' ({n.op})")


def check_supported(graph: Graph, io_type: str) -> None:
    """Refuse, naming the node, what this path does not build."""
    for n in graph.nodes:
        if n.op not in SUPPORTED_OPS:
            raise UnsupportedOpError(
                f"node '{n.name}' ({n.op}): the FPGA backend builds this graph from edgekit's integer IR (it holds "
                f"{', '.join(sorted({m.op for m in graph.nodes if m.op in NEEDS_INTEGER_PATH}) or ['float pre-ops'])}"
                f", which hls4ml's QONNX path does not compute exactly), and that path takes only "
                f"{', '.join(SUPPORTED_OPS)} layers; build this model for a Cortex-M target")
        requants = [n.attrs.get("requant")] + list(n.attrs.get("in_requant") or [])
        for rq in requants:
            if rq is not None and rq.rounding != "half_even":
                raise UnsupportedOpError(f"node '{n.name}' ({n.op}): {rq.rounding} rounding (TFLite) is not built for "
                                         "FPGA targets")
        if n.op == "concat" and graph.tensors[n.outputs[0]].dtype == "int32":
            raise UnsupportedOpError(f"node '{n.name}' (concat): a concatenation of accumulators is not built for "
                                     "FPGA targets")


# ---------------------------------------------------------------------------------------
# hls4ml extension layers
# ---------------------------------------------------------------------------------------
_THRESHOLD_CONFIG = """struct config{index} : nnet::ek_threshold_config {{
    static const unsigned n_in = {n_in};
    static const unsigned n_chan = {n_chan};
    static const unsigned n_thr = {n_thr};
    static const int out_min = {out_min};
    static const int step = {step};
    typedef {thresholds_t.name} threshold_t;
}};\n"""
_THRESHOLD_CALL = "nnet::ek_threshold<{input_t}, {output_t}, {config}>({input}, {output}, {t});"
_REQUANT_CONFIG = """struct config{index} : nnet::ek_requant_config {{
    static const unsigned n_in = {n_in};
    static const unsigned n_chan = {n_chan};
    static const int zero_point_in = {zero_point_in};
    static const int zero_point = {zero_point};
    static const int lo = {lo};
    static const int hi = {hi};
    typedef {multiplier_t.name} multiplier_t;
    typedef {shift_t.name} shift_t;
}};\n"""
_REQUANT_CALL = "nnet::ek_requant<{input_t}, {output_t}, {config}>({input}, {output}, {m}, {s});"
_ADD_CONFIG = """struct config{index} : nnet::ek_add_config {{
    static const unsigned n_in = {n_in};
    static const unsigned n_chan = {n_chan};
    static const int zero_point_a = {zero_point_a};
    static const int zero_point_b = {zero_point_b};
    static const int lo_a = {lo_a}, hi_a = {hi_a}, zero_point_ra = {zero_point_ra};
    static const int lo_b = {lo_b}, hi_b = {hi_b}, zero_point_rb = {zero_point_rb};
    static const bool requant = {requant};
    static const int zero_point = {zero_point};
    static const int lo = {lo};
    static const int hi = {hi};
    typedef {multiplier_t.name} multiplier_t;
    typedef {shift_t.name} shift_t;
}};\n"""
_ADD_CALL = "nnet::ek_add<{input1_t}, {input2_t}, {output_t}, {config}>({input1}, {input2}, {output}, {m}, {s});"

_registered: dict = {}


def register_extensions() -> dict:
    """Register edgekit's layers with hls4ml (once per process); returns their classes by name."""
    if _registered:
        return _registered
    import hls4ml
    from hls4ml.backends.template import FunctionCallTemplate, LayerConfigTemplate
    from hls4ml.model.attributes import Attribute, TypeAttribute, WeightAttribute
    from hls4ml.model.layers import Layer, register_layer
    from hls4ml.model.types import IntegerPrecisionType, XnorPrecisionType

    def int_type(values) -> IntegerPrecisionType:
        m = int(np.max(np.abs(np.asarray(values, np.int64)))) if np.size(values) else 0
        return IntegerPrecisionType(bits_for(m), signed=True)

    class EdgekitThreshold(Layer):
        """out = out_min + step * #{j : x >= T[c, j]} on integer codes (edgekit/ops/threshold.py)."""

        _expected_attributes = [Attribute("n_in"), Attribute("n_chan"), Attribute("n_thr"), Attribute("out_min"),
                                Attribute("step"), Attribute("binary_output", value_type=bool, default=False),
                                WeightAttribute("thresholds"), TypeAttribute("thresholds")]

        def initialize(self):
            # a binary output (codes -1/+1) is hls4ml's XNOR type: bit b stands for 2b - 1, so the
            # count of thresholds passed (0 or 1) is the bit itself (out_min 0, step 1)
            precision = XnorPrecisionType() if self.get_attr("binary_output") else None
            self.add_output_variable(list(self.get_input_variable().shape), precision=precision)
            t = np.asarray(self.get_attr("thresholds_data"), np.int64)
            self.add_weights_variable(name="thresholds", var_name="t{index}", precision=int_type(t),
                                      data=t.astype(np.float64))

    class EdgekitRequant(Layer):
        """clamp(rshift_rne(x * M[c], S[c]) + zero_point, lo, hi) on integer codes (contract.apply_requant)."""

        _expected_attributes = [Attribute("n_in"), Attribute("n_chan"), Attribute("zero_point_in"),
                                Attribute("zero_point"), Attribute("lo"),
                                Attribute("hi"), WeightAttribute("multiplier"), TypeAttribute("multiplier"),
                                WeightAttribute("shift"), TypeAttribute("shift")]

        def initialize(self):
            self.add_output_variable(list(self.get_input_variable().shape))
            m = np.asarray(self.get_attr("multiplier_data"), np.int64)
            s = np.asarray(self.get_attr("shift_data"), np.int64)
            self.add_weights_variable(name="multiplier", var_name="m{index}", precision=int_type(m),
                                      data=m.astype(np.float64))
            self.add_weights_variable(name="shift", var_name="s{index}",
                                      precision=IntegerPrecisionType(max(int(s.max()), 1).bit_length(), signed=False),
                                      data=s.astype(np.float64))

    class EdgekitAdd(Layer):
        """The residual add rq(ra(a - zp_a) + rb(b - zp_b)) on integer codes (edgekit/ops/add.py); the
        multipliers and shifts of ra, rb and rq one after the other, n_chan each."""

        _expected_attributes = [Attribute("n_in"), Attribute("n_chan"), Attribute("zero_point_a"),
                                Attribute("zero_point_b"), Attribute("lo_a"), Attribute("hi_a"),
                                Attribute("zero_point_ra"), Attribute("lo_b"), Attribute("hi_b"),
                                Attribute("zero_point_rb"), Attribute("requant", value_type=str),
                                Attribute("zero_point"), Attribute("lo"), Attribute("hi"),
                                WeightAttribute("multiplier"), TypeAttribute("multiplier"),
                                WeightAttribute("shift"), TypeAttribute("shift")]

        def initialize(self):
            self.add_output_variable(list(self.get_input_variable(self.inputs[0]).shape))
            m = np.asarray(self.get_attr("multiplier_data"), np.int64)
            s = np.asarray(self.get_attr("shift_data"), np.int64)
            self.add_weights_variable(name="multiplier", var_name="m{index}", precision=int_type(m),
                                      data=m.astype(np.float64))
            self.add_weights_variable(name="shift", var_name="s{index}",
                                      precision=IntegerPrecisionType(max(int(s.max()), 1).bit_length(), signed=False),
                                      data=s.astype(np.float64))

    def templates(layer_cls, config_text, call_text, weights):
        class Config(LayerConfigTemplate):
            def __init__(self):
                super().__init__(layer_cls)
                self.template = config_text

            def format(self, node):
                return self.template.format(**self._default_config_params(node))

        class Call(FunctionCallTemplate):
            def __init__(self):
                super().__init__(layer_cls, include_header=[f"nnet_utils/{SOURCE}"])
                self.template = call_text

            def format(self, node):
                params = self._default_function_params(node)
                for k, name in enumerate(node.inputs[:2], start=1):  # the add's two operands
                    params[f"input{k}"] = node.get_input_variable(name).name
                    params[f"input{k}_t"] = node.get_input_variable(name).type.name
                for key, wname in weights.items():
                    params[key] = node.get_weights(wname).name
                return self.template.format(**params)

        Config.__name__, Call.__name__ = f"{layer_cls.__name__}Config", f"{layer_cls.__name__}Call"
        return Config, Call

    register_layer("EdgekitThreshold", EdgekitThreshold)
    register_layer("EdgekitRequant", EdgekitRequant)
    register_layer("EdgekitAdd", EdgekitAdd)
    source = resource_dir("templates") / "hls" / SOURCE
    for backend_name in ("Vivado", "Vitis"):
        backend = hls4ml.backends.get_backend(backend_name)
        for cls, cfg, call, weights in ((EdgekitThreshold, _THRESHOLD_CONFIG, _THRESHOLD_CALL, {"t": "thresholds"}),
                                        (EdgekitRequant, _REQUANT_CONFIG, _REQUANT_CALL,
                                         {"m": "multiplier", "s": "shift"}),
                                        (EdgekitAdd, _ADD_CONFIG, _ADD_CALL, {"m": "multiplier", "s": "shift"})):
            for template in templates(cls, cfg, call, weights):
                backend.register_template(template)
        backend.register_source(source)
    _registered.update(EdgekitThreshold=EdgekitThreshold, EdgekitRequant=EdgekitRequant, EdgekitAdd=EdgekitAdd)
    return _registered


# ---------------------------------------------------------------------------------------
# binary layers: hls4ml's XNOR types
# ---------------------------------------------------------------------------------------
XNOR = "xnor<1>"  # hls4ml's XnorPrecisionType: ap_uint<1>, bit b stands for the code 2b - 1
TERNARY = "int<2>"  # codes -1, 0, +1: hls4ml picks its multiplier-free products for int<2> weights
# the product hls4ml's Dense computes in each mode (nnet_mult.h), for the plan
PRODUCTS = {"xnor": "both_binary (xnor)", "xnor_thresholds": "both_binary (xnor)", "weight_binary": "weight_binary (+-x)",
            "data_binary": "data_binary (+-w)", "weight_ternary": "weight_ternary (0, +-x)", "mult": "mult"}


def binary_activations(graph: Graph) -> set[str]:
    """Tensors held as hls4ml's XNOR type: binary codes -1/+1 (a threshold with one threshold,
    out_min -1, step 2) that only dense layers read, as their input."""
    found = set()
    for n in graph.nodes:
        if n.op != "threshold" or (n.attrs["out_min"], n.attrs["step"]) != (-1, 2) \
                or graph.constants[n.inputs[1]].shape[1] != 1:
            continue
        t = n.outputs[0]
        readers = graph.consumers(t)
        if t not in graph.outputs and readers and all(c.op == "dense" and c.inputs[0] == t and t not in c.inputs[1:]
                                                      for c in readers):
            found.add(t)
    return found


def binary_mode(graph: Graph, n, binary: set[str]) -> str:
    """How a dense layer maps to hls4ml's binary support, exactly (docs/fpga.md, binary layers).

    Binary weights on a binary input: XNOR and popcount (``both_binary``). hls4ml's Dense adds the
    bits ``x == w`` to its bias ``b_h`` and casts the sum ``p`` to ``2 p - n_in`` (its ``cast`` for
    ``ap_uint<1>`` data and weights, an ``ap_int<ceil(log2 n_in) + 2>``), which is the +-1 dot product
    plus ``2 b_h``: with ``b_h = b / 2`` that is the IR's accumulator when every bias is even
    (``xnor``); an odd bias leaves ``b mod 2`` to fold into the following thresholds
    (``xnor_thresholds``); otherwise, or when ``dot + 2 b_h`` could leave that cast's range, the
    weights go as ``int<2>`` codes (``data_binary``). Binary weights on wider inputs:
    ``weight_binary`` (+-x); weights in {-1, 0, +1}: ``data_binary`` on a binary input, else
    ``weight_ternary``; anything else an ordinary multiplication."""
    w = np.asarray(graph.constants[n.inputs[1]], np.int64)
    b = np.asarray(graph.constants[n.inputs[2]], np.int64) if len(n.inputs) > 2 else np.zeros(w.shape[0], np.int64)
    w_binary = w.size > 0 and bool(np.isin(w, (-1, 1)).all())
    w_ternary = w.size > 0 and bool(np.isin(w, (-1, 0, 1)).all())
    if w_binary and n.inputs[0] in binary:
        n_in = int(w.shape[1])
        cast_bits = (n_in - 1).bit_length() + 2  # hls4ml's ceillog2(n_in) + 2
        fits = n_in + 2 * int(np.max(np.abs(b // 2), initial=0)) < 2 ** (cast_bits - 1)
        readers = graph.consumers(n.outputs[0])
        if fits and not (b % 2).any():
            return "xnor"
        if fits and n.attrs.get("requant") is None and n.outputs[0] not in graph.outputs and readers \
                and all(c.op == "threshold" for c in readers):
            return "xnor_thresholds"
        return "data_binary"
    if w_binary:
        return "weight_binary"
    if w_ternary:
        return "data_binary" if n.inputs[0] in binary else "weight_ternary"
    return "mult"


def _add_layer(name: str, sources: list[str], graph: Graph, n) -> dict:
    """An EdgekitAdd layer dict for the IR's residual add ``n`` (ops/add.py)."""
    ta, tb = (graph.tensors[i] for i in n.inputs)
    ra, rb = n.attrs["in_requant"]
    rq = n.attrs.get("requant")
    out = graph.tensors[n.outputs[0]]
    steps = [ra, rb] + ([rq] if rq is not None else [])
    n_chan = max(len(r.multiplier) for r in steps)

    def per_channel(values) -> np.ndarray:
        return np.broadcast_to(np.asarray(values, np.int64), (n_chan,))

    multiplier = np.concatenate([per_channel(r.multiplier) for r in steps] + ([] if rq else [np.ones(n_chan, np.int64)]))
    shift = np.concatenate([per_channel(r.shift) for r in steps] + ([] if rq else [np.zeros(n_chan, np.int64)]))
    return {"class_name": "EdgekitAdd", "name": name, "inputs": sources, "outputs": [name], "n_in": int(out.size),
            "n_chan": n_chan, "zero_point_a": int(ta.zero_point), "zero_point_b": int(tb.zero_point),
            "lo_a": int(ra.lo), "hi_a": int(ra.hi), "zero_point_ra": int(ra.zero_point),
            "lo_b": int(rb.lo), "hi_b": int(rb.hi), "zero_point_rb": int(rb.zero_point),
            "requant": "true" if rq is not None else "false", "zero_point": int(rq.zero_point) if rq else 0,
            "lo": int(rq.lo) if rq else 0, "hi": int(rq.hi) if rq else 0,
            "multiplier_data": multiplier, "shift_data": shift}


def _requant_layer(name: str, source: str, n_in: int, multiplier, shift, zero_point_in: int, zero_point: int,
                   lo: int, hi: int) -> dict:
    """An EdgekitRequant layer dict: clamp(rshift_rne((x - zero_point_in) * M[c], S[c]) + zero_point, lo, hi)."""
    multiplier, shift = np.asarray(multiplier, np.int64), np.asarray(shift, np.int64)
    return {"class_name": "EdgekitRequant", "name": name, "inputs": [source], "outputs": [name], "n_in": n_in,
            "n_chan": int(multiplier.size), "zero_point_in": zero_point_in, "zero_point": zero_point,
            "lo": lo, "hi": hi, "multiplier_data": multiplier, "shift_data": shift}


# ---------------------------------------------------------------------------------------
# IR -> hls4ml layer list, with every type fixed
# ---------------------------------------------------------------------------------------
def code_type(t) -> FixedType:
    """The integer type of a tensor's codes (``ap_fixed<b, b>``: the codes themselves)."""
    if t.dtype == "int32":
        return FixedType(32, 32, True)
    lo, hi = int(t.qmin), int(t.qmax)
    if lo >= 0:
        w = max(hi, 1).bit_length()
        return FixedType(w, w, False)
    w = max((-lo - 1).bit_length(), max(hi, 0).bit_length()) + 1  # two's complement [lo, hi]
    return FixedType(w, w, True)


def _layer_name(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def layer_list(graph: Graph) -> tuple[list[dict], dict, dict]:
    """The hls4ml layer list for ``graph``, hls4ml's per-layer precisions and edgekit's plan (JSON)."""
    from hls4ml.model.quantizers import BinaryQuantizer

    in_name = "global_in"
    var = {graph.inputs[0]: in_name}  # IR tensor -> hls4ml variable (layer output) name
    types = {graph.inputs[0]: code_type(graph.tensors[graph.inputs[0]])}
    layers = [{"class_name": "InputLayer", "name": in_name, "input_shape": list(graph.tensors[graph.inputs[0]].shape)}]
    precisions = {in_name: {"result": types[graph.inputs[0]].hls4ml()}}
    plan_layers = []
    binary = binary_activations(graph)
    odd_bias: dict[str, np.ndarray] = {}  # XNOR dense outputs whose odd biases the thresholds take: b mod 2
    for n in graph.nodes:
        name = _layer_name(n.name)
        x = graph.tensors[n.inputs[0]]
        out = graph.tensors[n.outputs[0]]
        if n.op == "reshape":
            layers.append({"class_name": "Reshape", "name": name, "inputs": [var[n.inputs[0]]], "outputs": [name],
                           "target_shape": list(out.shape)})
            precisions[name] = {"result": types[n.inputs[0]].hls4ml()}
            types[n.outputs[0]] = types[n.inputs[0]]
        elif n.op == "concat":
            axis = int(n.attrs.get("axis", -1))
            layers.append({"class_name": "Concatenate", "name": name, "op": f"concatenate{len(out.shape)}d",
                           "inputs": [var[i] for i in n.inputs], "outputs": [name],
                           "axis": axis if axis >= 0 else len(out.shape) + axis})
            types[n.outputs[0]] = code_type(out)
            precisions[name] = {"result": types[n.outputs[0]].hls4ml()}
        elif n.op == "dense":
            w = np.asarray(graph.constants[n.inputs[1]], np.int64)  # (n_out, n_in) codes
            b = np.asarray(graph.constants[n.inputs[2]], np.int64) if len(n.inputs) > 2 else np.zeros(w.shape[0],
                                                                                                       np.int64)
            rq = n.attrs.get("requant")
            n_in = int(w.shape[1])
            mode = binary_mode(graph, n, binary)
            wt = graph.tensors[n.inputs[1]]
            layer = {"class_name": "Dense", "inputs": [var[n.inputs[0]]], "n_in": n_in, "n_out": int(w.shape[0]),
                     "weight_data": w.T.astype(np.float64), "bias_data": b.astype(np.float64)}
            bound = int(np.max(contract.accumulator_bound(w, b, x.qmin, x.qmax)))
            acc = FixedType(bits_for(bound), bits_for(bound), True)
            b_bits = bits_for(int(np.max(np.abs(b), initial=0)))
            b_type = FixedType(b_bits, b_bits, True)
            result = acc
            if mode.startswith("xnor"):
                # hls4ml's Dense sums the bits x == w onto its bias b // 2 and returns 2 * sum - n_in
                # (binary_mode): the IR's accumulator less b mod 2
                layer["bias_data"] = (b // 2).astype(np.float64)
                half = int(np.max(np.abs(b // 2), initial=0))
                b_type = FixedType(bits_for(half), bits_for(half), True)
                acc = FixedType(bits_for(n_in + half), bits_for(n_in + half), True)
                if mode == "xnor_thresholds":
                    bound = n_in + 2 * half
                    result = FixedType(bits_for(bound), bits_for(bound), True)
                    odd_bias[n.outputs[0]] = b % 2
            if mode in ("xnor", "xnor_thresholds", "weight_binary"):
                layer["weight_quantizer"] = BinaryQuantizer(1)  # ap_uint<1> weights: bit 1 = +1, bit 0 = -1
                w_type, w_label = None, XNOR
            elif mode in ("data_binary", "weight_ternary"):
                w_type = w_label = TERNARY  # hls4ml's int<2> weights select its multiplier-free products
            else:
                w_type = w_label = code_type(wt)
            dense = f"{name}_dense" if rq is not None else name
            layer.update(name=dense, outputs=[dense])
            layers.append(layer)
            precisions[dense] = {"bias": b_type.hls4ml(), "accum": acc.hls4ml(), "result": result.hls4ml()}
            if w_type is not None:
                precisions[dense]["weight"] = w_type if isinstance(w_type, str) else w_type.hls4ml()
            if rq is not None:
                result = code_type(out)
                layers.append(_requant_layer(name, dense, int(out.size), np.asarray(rq.multiplier, np.int64),
                                             np.asarray(rq.shift, np.int64), 0, int(rq.zero_point), int(rq.lo),
                                             int(rq.hi)))
                precisions[name] = {"result": result.hls4ml()}
            types[n.outputs[0]] = result
            plan_layers.append({"ir_node": n.name, "hls_layer": dense, "op": "dense",
                                "input": str(types[n.inputs[0]]), "weight": str(w_label),
                                "bias": str(b_type), "accum": str(acc), "accum_bound": bound,
                                "result": str(result), "fan_in": n_in, "n_out": int(w.shape[0]),
                                "product": PRODUCTS[mode], "pinned": [],
                                "requant": name if rq is not None else None})
        elif n.op == "requantize":
            rq = n.attrs["requant"]
            layers.append(_requant_layer(name, var[n.inputs[0]], int(out.size), np.asarray(rq.multiplier, np.int64),
                                         np.asarray(rq.shift, np.int64), int(x.zero_point), int(rq.zero_point),
                                         int(rq.lo), int(rq.hi)))
            types[n.outputs[0]] = code_type(out)
            precisions[name] = {"result": types[n.outputs[0]].hls4ml()}
        elif n.op == "add":
            layers.append(_add_layer(name, [var[i] for i in n.inputs], graph, n))
            types[n.outputs[0]] = code_type(out)
            precisions[name] = {"result": types[n.outputs[0]].hls4ml()}
        elif n.op == "threshold":
            t = np.asarray(graph.constants[n.inputs[1]], np.int64)
            if n.inputs[0] in odd_bias:  # hls4ml's value is x - (b[c] mod 2): x >= T <=> it >= T - (b[c] mod 2)
                odd = odd_bias[n.inputs[0]]
                t = np.broadcast_to(t, (odd.size, t.shape[1])) if t.shape[0] == 1 and odd.size > 1 else t
                t = t - odd[:, None]
            binary_out = n.outputs[0] in binary
            layers.append({"class_name": "EdgekitThreshold", "name": name, "inputs": [var[n.inputs[0]]],
                           "outputs": [name], "n_in": int(x.size), "n_chan": int(t.shape[0]), "n_thr": int(t.shape[1]),
                           "out_min": 0 if binary_out else int(n.attrs["out_min"]),
                           "step": 1 if binary_out else int(n.attrs["step"]), "binary_output": binary_out,
                           "thresholds_data": np.ascontiguousarray(t).ravel()})
            types[n.outputs[0]] = XNOR if binary_out else code_type(out)
            if not binary_out:
                precisions[name] = {"result": types[n.outputs[0]].hls4ml()}
        else:  # check_supported ran first
            raise UnsupportedOpError(f"node '{n.name}' ({n.op}) is not built for FPGA targets")
        var[n.outputs[0]] = name
    plan = {"exact": True, "reason": "", "path": "integer IR",
            "input": str(types[graph.inputs[0]]), "output": str(types[graph.outputs[0]]), "hls_output": var[graph.outputs[0]],
            "layers": plan_layers}
    return layers, precisions, plan


def to_model(graph: Graph, opts, output_dir, input_data_tb: str | None = None, output_data_tb: str | None = None):
    """The hls4ml ModelGraph (not yet written) of ``graph``'s integer IR, and edgekit's plan (JSON)."""
    from hls4ml.model.graph import ModelGraph

    register_extensions()
    layers, precisions, plan = layer_list(graph)
    from hls4ml.utils.config import create_config

    config = create_config(output_dir=str(output_dir), project_name=PROJECT_NAME, backend=opts.hls4ml_backend,
                           part=opts.part, clock_period=opts.clock_period_ns, io_type=opts.io_type)
    config.update({"InputData": input_data_tb, "OutputPredictions": output_data_tb,
                   "HLSConfig": {"Model": {"Precision": "fixed<32,32>", "ReuseFactor": opts.reuse_factor,
                                           "Strategy": opts.strategy},
                                 "LayerName": {k: {"Precision": v, "ReuseFactor": opts.reuse_factor,
                                                   "Strategy": opts.strategy} for k, v in precisions.items()}}})
    model = ModelGraph.from_layer_list(config, layers, inputs=["global_in"], outputs=[plan["hls_output"]])
    return model, plan


def takes(graph: Graph) -> bool:
    """True when every operator of ``graph`` is one this path builds."""
    return all(n.op in SUPPORTED_OPS for n in graph.nodes)


def layout(graph: Graph) -> dict:
    """The build's input/output layout: the IR's input codes in, its output codes out (channels last)."""
    shape = [int(d) for d in graph.tensors[graph.inputs[0]].shape]
    size = int(graph.tensors[graph.outputs[0]].size)
    return {"inputs": "codes", "input_shape": shape, "hls_input_shape": shape, "input_perm": None,
            "output_shape": [size], "hls_output_shape": [size], "output_perm": None}


def testbench(graph: Graph, vectors: int, tmp) -> tuple[str, str]:
    """Test-bench vectors for the HLS project: input codes of generated inputs and the simulator's output codes."""
    from ...sim import quantize_input, simulate
    from ...stages import generate_inputs

    codes = quantize_input(graph, generate_inputs(graph, vectors, seed=0))
    out = simulate(graph, codes)[graph.outputs[0]]
    np.save(tmp / "tb_input.npy", codes.reshape(vectors, -1).astype(np.float64))
    np.save(tmp / "tb_output.npy", np.asarray(out, np.float64).reshape(vectors, -1))
    return str(tmp / "tb_input.npy"), str(tmp / "tb_output.npy")


def type_table(hls_model) -> dict:
    """Every hls4ml layer's types, as the manifest lists them."""
    return {layer.name: {k: str(FixedType.from_hls4ml(v.precision) or v.precision) for k, v in layer.types.items()
                         if not k.endswith("table_t") and k != "index_t"} for layer in hls_model.get_layers()}
