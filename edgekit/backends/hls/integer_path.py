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
* ``reshape`` -> ``Reshape`` (no computation in io_parallel).

The model's input is the IR's input codes (the host-side input quantizer, with its float
pre-processing, runs before it, as on a microcontroller) and its output the IR's output codes,
so the C-simulation is compared with the simulator code for code and must be exact whatever the
scales. A tensor with several consumers (a fork) is one hls4ml variable read by each of them.
"""
from __future__ import annotations

import numpy as np

from ...errors import TargetError, UnsupportedOpError
from ...ir import contract
from ...ir.graph import Graph
from ...resources import resource_dir
from .convert import PROJECT_NAME
from .precision import FixedType, bits_for

# the IR operators this path turns into hls4ml layers
SUPPORTED_OPS = ("dense", "threshold", "requantize", "reshape", "concat")
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
    return bool(float_pre or iq.annotation or graph.meta.get("output_post_ops"))


def check_supported(graph: Graph, io_type: str) -> None:
    """Refuse, naming the node, what this path does not build."""
    for n in graph.nodes:
        if n.op not in SUPPORTED_OPS:
            raise UnsupportedOpError(
                f"node '{n.name}' ({n.op}): the FPGA backend builds this graph from edgekit's integer IR (it holds "
                f"{', '.join(sorted({m.op for m in graph.nodes if m.op in NEEDS_INTEGER_PATH}) or ['float pre-ops'])}"
                f", which hls4ml's QONNX path does not compute exactly), and that path takes only "
                f"{', '.join(SUPPORTED_OPS)} layers; build this model for a Cortex-M target")
        if n.op in ("dense", "requantize"):
            rq = n.attrs.get("requant")
            if rq is not None and rq.rounding != "half_even":
                raise UnsupportedOpError(f"node '{n.name}' ({n.op}): {rq.rounding} rounding (TFLite) is not built for "
                                         "FPGA targets")
        if n.op == "concat" and graph.tensors[n.outputs[0]].dtype == "int32":
            raise UnsupportedOpError(f"node '{n.name}' (concat): a concatenation of accumulators is not built for "
                                     "FPGA targets")
    if io_type != "io_parallel":
        raise TargetError(f"--io-type {io_type}: graphs built from edgekit's integer IR (threshold and "
                          "requantization layers) are generated for io_parallel only; build with --io-type io_parallel")


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

_registered: dict = {}


def register_extensions() -> dict:
    """Register edgekit's two layers with hls4ml (once per process); returns their classes by name."""
    if _registered:
        return _registered
    import hls4ml
    from hls4ml.backends.template import FunctionCallTemplate, LayerConfigTemplate
    from hls4ml.model.attributes import Attribute, TypeAttribute, WeightAttribute
    from hls4ml.model.layers import Layer, register_layer
    from hls4ml.model.types import IntegerPrecisionType

    def int_type(values) -> IntegerPrecisionType:
        m = int(np.max(np.abs(np.asarray(values, np.int64)))) if np.size(values) else 0
        return IntegerPrecisionType(bits_for(m), signed=True)

    class EdgekitThreshold(Layer):
        """out = out_min + step * #{j : x >= T[c, j]} on integer codes (edgekit/ops/threshold.py)."""

        _expected_attributes = [Attribute("n_in"), Attribute("n_chan"), Attribute("n_thr"), Attribute("out_min"),
                                Attribute("step"), WeightAttribute("thresholds"), TypeAttribute("thresholds")]

        def initialize(self):
            self.add_output_variable(list(self.get_input_variable().shape))
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
                for key, wname in weights.items():
                    params[key] = node.get_weights(wname).name
                return self.template.format(**params)

        Config.__name__, Call.__name__ = f"{layer_cls.__name__}Config", f"{layer_cls.__name__}Call"
        return Config, Call

    register_layer("EdgekitThreshold", EdgekitThreshold)
    register_layer("EdgekitRequant", EdgekitRequant)
    source = resource_dir("templates") / "hls" / SOURCE
    for backend_name in ("Vivado", "Vitis"):
        backend = hls4ml.backends.get_backend(backend_name)
        for cls, cfg, call, weights in ((EdgekitThreshold, _THRESHOLD_CONFIG, _THRESHOLD_CALL, {"t": "thresholds"}),
                                        (EdgekitRequant, _REQUANT_CONFIG, _REQUANT_CALL,
                                         {"m": "multiplier", "s": "shift"})):
            for template in templates(cls, cfg, call, weights):
                backend.register_template(template)
        backend.register_source(source)
    _registered.update(EdgekitThreshold=EdgekitThreshold, EdgekitRequant=EdgekitRequant)
    return _registered


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
    in_name = "global_in"
    var = {graph.inputs[0]: in_name}  # IR tensor -> hls4ml variable (layer output) name
    types = {graph.inputs[0]: code_type(graph.tensors[graph.inputs[0]])}
    layers = [{"class_name": "InputLayer", "name": in_name, "input_shape": list(graph.tensors[graph.inputs[0]].shape)}]
    precisions = {in_name: {"result": types[graph.inputs[0]].hls4ml()}}
    plan_layers = []
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
            bound = int(np.max(contract.accumulator_bound(w, b, x.qmin, x.qmax)))
            acc = FixedType(bits_for(bound), bits_for(bound), True)
            wt = graph.tensors[n.inputs[1]]
            w_type = code_type(wt)
            b_bits = bits_for(int(np.max(np.abs(b))) if b.size else 0)
            dense = f"{name}_dense" if n.attrs.get("requant") is not None else name
            layers.append({"class_name": "Dense", "name": dense, "inputs": [var[n.inputs[0]]], "outputs": [dense],
                           "n_in": int(w.shape[1]), "n_out": int(w.shape[0]),
                           "weight_data": w.T.astype(np.float64), "bias_data": b.astype(np.float64)})
            precisions[dense] = {"weight": w_type.hls4ml(), "bias": FixedType(b_bits, b_bits, True).hls4ml(),
                                 "accum": acc.hls4ml(), "result": acc.hls4ml()}
            rq = n.attrs.get("requant")
            result = acc
            if rq is not None:
                result = code_type(out)
                layers.append({"class_name": "EdgekitRequant", "name": name, "inputs": [dense], "outputs": [name],
                               "n_in": int(out.size), "n_chan": len(rq.multiplier), "zero_point_in": 0,
                               "zero_point": int(rq.zero_point),
                               "lo": int(rq.lo), "hi": int(rq.hi),
                               "multiplier_data": np.asarray(rq.multiplier, np.int64),
                               "shift_data": np.asarray(rq.shift, np.int64)})
                precisions[name] = {"result": result.hls4ml()}
            types[n.outputs[0]] = result
            plan_layers.append({"ir_node": n.name, "hls_layer": dense, "op": "dense",
                                "input": str(types[n.inputs[0]]), "weight": str(w_type),
                                "bias": str(FixedType(b_bits, b_bits, True)), "accum": str(acc), "accum_bound": bound,
                                "result": str(result), "fan_in": int(w.shape[1]), "n_out": int(w.shape[0]),
                                "pinned": [], "requant": name if rq is not None else None})
        elif n.op == "requantize":
            rq = n.attrs["requant"]
            layers.append({"class_name": "EdgekitRequant", "name": name, "inputs": [var[n.inputs[0]]],
                           "outputs": [name], "n_in": int(out.size), "n_chan": len(rq.multiplier),
                           "zero_point_in": int(x.zero_point), "zero_point": int(rq.zero_point), "lo": int(rq.lo),
                           "hi": int(rq.hi), "multiplier_data": np.asarray(rq.multiplier, np.int64),
                           "shift_data": np.asarray(rq.shift, np.int64)})
            types[n.outputs[0]] = code_type(out)
            precisions[name] = {"result": types[n.outputs[0]].hls4ml()}
        elif n.op == "threshold":
            t = np.asarray(graph.constants[n.inputs[1]], np.int64)
            layers.append({"class_name": "EdgekitThreshold", "name": name, "inputs": [var[n.inputs[0]]],
                           "outputs": [name], "n_in": int(x.size), "n_chan": int(t.shape[0]), "n_thr": int(t.shape[1]),
                           "out_min": int(n.attrs["out_min"]), "step": int(n.attrs["step"]),
                           "thresholds_data": t.ravel()})
            types[n.outputs[0]] = code_type(out)
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
