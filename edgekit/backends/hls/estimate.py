"""Resource and latency estimates without vendor tools (see docs/fpga.md for the model).

Everything here is read from the converted hls4ml model - the types hls4ml will actually
emit - plus the weights from edgekit's IR. It is a first-order model for comparing
configurations and checking the fit against a part, not a substitute for the Vitis/Vivado
HLS synthesis report:

* MACs per inference, and **bit operations** ``BOPs = MACs x weight bits x input bits``.
* **Multipliers**: with io_parallel and reuse factor 1 every weight is a constant wired
  into its own multiplier, and HLS removes the ones whose weight is 0; with reuse factor R
  each layer time-shares ``ceil(n_in x n_out / R)`` general multipliers.
* **DSP or LUT** by operand width: a product goes to DSP slices when both operands are at
  least ``DSP_MIN_BITS`` bits (HLS builds narrower products from LUTs), using
  ``ceil(a / A) x ceil(b / B)`` slices for the part's A x B multiplier; a LUT multiplier
  costs about ``a x b / 2`` LUTs, every accumulation adder about one LUT per accumulator bit.
* **Latency** (io_parallel): per dense layer ``R + 1 + ceil(log2(n_in) / 4)`` clock cycles
  (the time-shared multiplies, a multiplier stage, an adder tree of about four levels per
  cycle); a convolution computes its P output positions one after another, pipelined:
  ``P x R + 1 + ceil(log2(n_in) / 4)``; activations, pooling, reshapes and the output
  cast are absorbed into those stages. The initiation interval is the largest ``P x R``.
  Calibration point: the published hls4ml jet tagger (16-64-32-32-5, R=1, 5 ns) reports
  14 cycles, this model gives 15.
* **Block RAM**: none at R=1 (weights are constants in logic); with R > 1 (Resource
  strategy) the weights of a layer form a ROM R words deep and ``n_in x n_out / R x w``
  bits wide: from R = 32 on it takes ``ceil(width / 36) x ceil(R / 512)`` 18 Kb BRAMs,
  below that it is built from LUTs (one LUT per 64 bits).
* **Flip-flops**: pipeline registers for every multiplier's operands and every layer's
  accumulators and outputs.
"""
from __future__ import annotations

import math

import numpy as np

from ...ir.operators import hls_layers, hls_role
from .boards import RESOURCE_KINDS, FpgaBoard
from .convert import PrecisionPlan
from .precision import FixedType

DSP_MIN_BITS = 10  # both operands at least this wide -> DSP slice, otherwise LUT fabric
LUT_PER_MULT_BIT2 = 0.5  # LUTs per (a bits x b bits) of a LUT multiplier
ADDER_TREE_LEVELS_PER_CYCLE = 4
BRAM_MIN_DEPTH = 32  # shallower weight ROMs (reuse factor < 32) are built from LUTs


def _width(p) -> int | None:
    t = FixedType.from_hls4ml(p)
    if t is None:
        from hls4ml.model.types import XnorPrecisionType

        if isinstance(p, XnorPrecisionType):  # hls4ml's binary type: one bit
            return 1
    return t.width if t is not None else None


def _compute_layers(hls_model):
    """(layer, fan_in, n_out, positions, input bits, weight bits, accumulator bits) per MAC layer."""
    for layer in hls_model.get_layers():
        if hls_role(layer.class_name) == "compute":
            geometry = hls_layers()[layer.class_name][1].geometry  # declared by the layer's IR operator
            yield (layer, *geometry(layer), _width(layer.get_input_variable().type.precision),
                   _width(layer.types["weight_t"].precision), _width(layer.types["accum_t"].precision))


def layer_estimates(hls_model, board: FpgaBoard, io_type: str) -> list[dict]:
    rows = []
    for layer, fan_in, n_out, positions, x_bits, w_bits, acc_bits in _compute_layers(hls_model):
        weights = np.asarray(layer.weights["weight"].data)
        geometry = {"layer": layer.name, "class": layer.class_name, "fan_in": fan_in, "n_out": n_out,
                    "positions": positions, "input_bits": x_bits, "weight_bits": w_bits, "accum_bits": acc_bits,
                    "result_bits": _width(layer.get_output_variable().type.precision),
                    "weights": int(weights.size), "nonzero_weights": int(np.count_nonzero(weights))}
        if w_bits == 1:  # XNOR weights: bit 0 stands for -1, every weight is a product
            geometry["nonzero_weights"] = int(weights.size)
        rows.append(layer_cost(geometry, int(layer.get_attr("reuse_factor", 1)), board, io_type))
    return rows


def layer_cost(geometry: dict, rf: int, board: FpgaBoard, io_type: str) -> dict:
    """One compute layer's estimate at reuse factor ``rf``, from its geometry (the keys
    ``layer_estimates`` reads from hls4ml: fan-in, outputs, positions, widths, weights)."""
    fan_in, n_out, positions = geometry["fan_in"], geometry["n_out"], geometry["positions"]
    x_bits, w_bits, acc_bits = geometry["input_bits"], geometry["weight_bits"], geometry["accum_bits"]
    out_bits, n_weights, nonzero = geometry["result_bits"], geometry["weights"], geometry["nonzero_weights"]
    macs = fan_in * n_out * positions
    bops = macs * x_bits * w_bits if x_bits and w_bits else None
    mults = nonzero if rf == 1 else math.ceil(n_weights / rf)
    on_dsp = bool(x_bits and w_bits and min(x_bits, w_bits) >= DSP_MIN_BITS)
    a, b = max(x_bits or 0, w_bits or 0), min(x_bits or 0, w_bits or 0)
    dsp_per = math.ceil(a / board.dsp.a_bits) * math.ceil(b / board.dsp.b_bits) if on_dsp else 0
    dsp = mults * dsp_per
    lut_mult = 0 if on_dsp else math.ceil(mults * LUT_PER_MULT_BIT2 * (x_bits or 16) * (w_bits or 16))
    # XNOR products (1-bit data and weights) feed a popcount: about one LUT per bit counted
    lut_add = mults * (1 if x_bits == 1 and w_bits == 1 else (acc_bits or 32))
    ff = mults * ((x_bits or 16) + (w_bits or 16)) + n_out * ((acc_bits or 32) + (out_bits or 16))
    bram18 = 0
    if rf > 1:  # weights in a ROM of depth R and width n_weights / R x w bits
        word_bits = math.ceil(n_weights / rf) * (w_bits or 16)
        if rf >= BRAM_MIN_DEPTH:
            bram18 = math.ceil(word_bits / 36) * math.ceil(rf / 512)
        else:  # shallow ROMs go to LUTs used as 64 x 1 memories
            lut_add += math.ceil(word_bits * math.ceil(rf / 64))
    tree = math.ceil(math.log2(max(fan_in, 2)) / ADDER_TREE_LEVELS_PER_CYCLE)
    # positions (convolutions) are pipelined one after another, each taking R cycles
    latency = rf * positions + 1 + tree if io_type == "io_parallel" else None
    return {
        "layer": geometry["layer"], "class": geometry["class"], "fan_in": fan_in, "n_out": n_out,
        "positions": positions, "macs": macs, "input_bits": x_bits, "weight_bits": w_bits, "accum_bits": acc_bits,
        "result_bits": out_bits, "bops": bops, "accum_bitops": macs * acc_bits if acc_bits else None,
        "weights": n_weights, "nonzero_weights": nonzero, "reuse_factor": rf,
        "multipliers": mults, "multiplier_on": "DSP" if on_dsp else "LUT",
        "dsp": dsp, "lut": lut_mult + lut_add, "ff": ff, "bram18": bram18, "latency_cycles": latency,
    }


def smallest_fitting_reuse_factor(rows: list[dict], board: FpgaBoard, io_type: str, hls_backend: str) -> int | None:
    """The smallest model-wide ``--reuse-factor`` whose estimate fits ``board``'s part (None: none does).

    For a setting R hls4ml gives each layer the valid reuse factor closest to R (its own rule:
    ``get_valid_reuse_factors``, ``get_closest_reuse_factor``); the layers are re-estimated with
    ``layer_cost`` from their geometry in ``rows``. The settings tried are the reuse factors valid
    for some layer: between two of them no layer's reuse factor changes."""
    import hls4ml

    backend = hls4ml.backends.get_backend(hls_backend)
    valid = [backend.get_valid_reuse_factors(r["fan_in"], r["n_out"]) for r in rows]
    for requested in sorted(set().union(*valid)):
        costs = [layer_cost(r, requested if requested in v else backend.get_closest_reuse_factor(v, requested),
                            board, io_type) for r, v in zip(rows, valid)]
        if summarize(costs, board, io_type, board.clock_period_ns)["fits"]:
            return requested
    return None


def summarize(rows: list[dict], board: FpgaBoard, io_type: str, clock_period_ns: float) -> dict:
    tot = {k: sum(r[k] for r in rows) for k in ("macs", "dsp", "lut", "ff", "bram18", "multipliers")}
    tot["bops"] = sum(r["bops"] or 0 for r in rows)
    tot["uram"] = 0
    if io_type == "io_parallel":
        lat = sum(r["latency_cycles"] for r in rows)
        ii = max((r["reuse_factor"] * r["positions"] for r in rows), default=1)
        latency = {"cycles": lat, "ns": round(lat * clock_period_ns, 2), "initiation_interval": ii,
                   "throughput_per_s": round(1e9 / (ii * clock_period_ns))}
    else:
        latency = {"cycles": None, "note": "latency is estimated for io_parallel only"}
    util = {k: (round(100.0 * tot[k] / board.resources[k], 2) if board.resources.get(k) else None)
            for k in RESOURCE_KINDS}
    fits = all(tot[k] <= board.resources[k] for k in RESOURCE_KINDS if k in tot)
    return {"totals": tot, "latency": latency, "utilization_percent": util, "fits": fits,
            "part": board.part, "board": board.name, "part_resources": dict(board.resources)}


# ---------------------------------------------------------------------------------------
# Baselines: the same model under hls4ml's own configurations
# ---------------------------------------------------------------------------------------
def strip_quantizers(hls_onnx):
    """The same network without its quantizers: weights and biases as their quantized float values,
    activation Quant nodes bypassed. This is what hls4ml sees for an unquantized model."""
    import copy

    from onnx import numpy_helper
    from qonnx.custom_op.general.quant import quant
    from qonnx.util.cleanup import cleanup_model

    m = copy.deepcopy(hls_onnx)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    for node in list(g.node):
        if node.op_type != "Quant":
            continue
        src = node.input[0]
        if src in inits:
            from onnx import helper

            a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
            args = [numpy_helper.to_array(inits[i]) for i in node.input[1:4]]
            mode = a.get("rounding_mode", b"ROUND")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            val = quant(numpy_helper.to_array(inits[src]), *args, signed=int(a.get("signed", 1)),
                        narrow=int(a.get("narrow", 0)), rounding_mode=mode)
            new = numpy_helper.from_array(np.asarray(val, np.float32), node.output[0])
            g.initializer.append(new)
            g.node.remove(node)
        else:  # an activation quantizer: pass the float value through
            node.op_type, node.domain = "Identity", ""
            del node.input[1:]
            del node.attribute[:]
    return cleanup_model(m)


def baseline_bops(hls_onnx, opts, which: str) -> dict:
    """Convert the same model with an hls4ml default configuration and count BOPs from its types.

    ``which``: ``"default"`` - quantizers removed, ``config_from_onnx_model`` defaults (every
    type ``fixed<16,6>``, hls4ml's default precision); ``"qonnx-auto"`` - the QONNX model
    with hls4ml's own precision inference (``granularity="name"``, everything ``auto``).
    """
    import tempfile

    import hls4ml

    from .convert import hls4ml_fixes, quiet

    model = strip_quantizers(hls_onnx) if which == "default" else hls_onnx
    with quiet(), hls4ml_fixes(), tempfile.TemporaryDirectory(prefix="edgekit-hls-baseline-") as d:
        cfg = hls4ml.utils.config_from_onnx_model(model, granularity="model" if which == "default" else "name",
                                                  backend=opts.hls4ml_backend, default_reuse_factor=opts.reuse_factor)
        hm = hls4ml.converters.convert_from_onnx_model(model, output_dir=d, backend=opts.hls4ml_backend,
                                                       io_type=opts.io_type, hls_config=cfg)
        rows = []
        for layer, fan_in, n_out, positions, x_bits, w_bits, acc_bits in _compute_layers(hm):
            macs = fan_in * n_out * positions
            rows.append({"layer": layer.name, "macs": macs, "input_bits": x_bits, "weight_bits": w_bits,
                         "accum_bits": acc_bits, "bops": macs * x_bits * w_bits, "accum_bitops": macs * acc_bits})
    return {"config": which, "layers": rows, "bops": sum(r["bops"] for r in rows),
            "accum_bitops": sum(r["accum_bitops"] for r in rows)}


def estimate(hls_model, hls_onnx, plan: PrecisionPlan | None, board: FpgaBoard, opts, baselines: bool = True) -> dict:
    """The estimates of ``hls_model``; with ``baselines`` also hls4ml's own configurations of ``hls_onnx``
    (off for graphs built from edgekit's integer IR: hls4ml's QONNX path cannot convert those)."""
    rows = layer_estimates(hls_model, board, opts.io_type)
    summary = summarize(rows, board, opts.io_type, opts.clock_period_ns)
    tight_bops = summary["totals"]["bops"]
    tight_acc = sum(r["accum_bitops"] or 0 for r in rows)
    compared = ("default", "qonnx-auto") if baselines else ()
    baselines = {}
    for which in compared:
        try:
            b = baseline_bops(hls_onnx, opts, which)
        except Exception as e:  # a baseline is a comparison, never a reason to fail the build
            baselines[which] = {"error": f"{type(e).__name__}: {e}"}
            continue
        b["bops_reduction_percent"] = round(100.0 * (1 - tight_bops / b["bops"]), 2) if b["bops"] else None
        b["accum_bitops_reduction_percent"] = (round(100.0 * (1 - tight_acc / b["accum_bitops"]), 2)
                                               if b["accum_bitops"] else None)
        baselines[which] = b
    return {"model": "first-order estimate, not synthesis (see docs/fpga.md)", "dsp_min_bits": DSP_MIN_BITS,
            "io_type": opts.io_type, "reuse_factor": opts.reuse_factor, "clock_period_ns": opts.clock_period_ns,
            "layers": rows, **summary, "accum_bitops": tight_acc, "baselines": baselines,
            **({} if compared else {"baselines_note": "hls4ml's own configurations are not compared: the graph "
                                    "was built from edgekit's integer IR, which hls4ml's QONNX path cannot convert"}),
            "smallest_fitting_reuse_factor": smallest_fitting_reuse_factor(rows, board, opts.io_type,
                                                                           opts.hls4ml_backend)}


def format_estimates(est: dict) -> str:
    """The table ``edgekit build --target fpga`` prints."""
    lines = [f"{'layer':<18}{'MACs':>8}{'x bits':>7}{'w bits':>7}{'acc':>5}{'BOPs':>11}{'mults':>7}{'on':>5}"
             f"{'DSP':>6}{'LUT':>8}{'FF':>8}{'BRAM18':>7}{'cycles':>7}"]
    for r in est["layers"]:
        lines.append(f"{r['layer']:<18}{r['macs']:>8}{r['input_bits']:>7}{r['weight_bits']:>7}{r['accum_bits']:>5}"
                     f"{r['bops']:>11}{r['multipliers']:>7}{r['multiplier_on']:>5}{r['dsp']:>6}{r['lut']:>8}"
                     f"{r['ff']:>8}{r['bram18']:>7}{_or_dash(r['latency_cycles']):>7}")
    t, u, lat = est["totals"], est["utilization_percent"], est["latency"]
    lines.append(f"{'total':<18}{t['macs']:>8}{'':>7}{'':>7}{'':>5}{t['bops']:>11}{t['multipliers']:>7}{'':>5}"
                 f"{t['dsp']:>6}{t['lut']:>8}{t['ff']:>8}{t['bram18']:>7}"
                 f"{lat['cycles'] if lat.get('cycles') is not None else '-':>7}")
    lines.append(f"{est['part']} ({est['board']}): DSP {t['dsp']}/{est['part_resources']['dsp']} ({u['dsp']}%), "
                 f"LUT {t['lut']}/{est['part_resources']['lut']} ({u['lut']}%), FF {t['ff']}/"
                 f"{est['part_resources']['ff']} ({u['ff']}%), BRAM18 {t['bram18']}/{est['part_resources']['bram18']} "
                 f"({u['bram18']}%): {'fits' if est['fits'] else 'DOES NOT FIT'} (estimate)")
    if not est["fits"]:
        lines.append(overfit_advice(est))
    if lat.get("cycles") is not None:
        lines.append(f"latency ~{lat['cycles']} cycles = {lat['ns']} ns at {est['clock_period_ns']} ns, "
                     f"initiation interval {lat['initiation_interval']} (estimate)")
    if est.get("baselines_note"):
        lines.append(est["baselines_note"])
    for name, b in est["baselines"].items():
        if "error" in b:
            lines.append(f"baseline {name}: not available ({b['error']})")
            continue
        what = ("hls4ml default config (fixed<16,6>, quantizers removed)" if name == "default"
                else "hls4ml's own QONNX precision inference")
        lines.append(f"vs {what}: BOPs {b['bops']} -> {t['bops']} ({_change(b['bops_reduction_percent'])}), "
                     f"accumulator bit-ops {b['accum_bitops']} -> {est['accum_bitops']} "
                     f"({_change(b['accum_bitops_reduction_percent'])})")
    return "\n".join(lines)


def overfit_advice(est: dict) -> str:
    """What to do about a build whose estimate does not fit its part."""
    rf = est.get("smallest_fitting_reuse_factor")
    if rf is not None:
        return (f"the smallest reuse factor that fits {est['part']} is {rf} (estimate): rebuild with "
                f"--reuse-factor {rf}")
    return (f"no reuse factor fits {est['part']} (estimate): choose a larger part (`edgekit targets` lists the "
            "FPGA boards) or a smaller model")


def _change(reduction: float | None) -> str:
    if reduction is None:
        return "n/a"
    return f"{reduction:.1f}% fewer" if reduction >= 0 else f"{-reduction:.1f}% more"


def _or_dash(v) -> str:
    return "-" if v is None else str(v)
