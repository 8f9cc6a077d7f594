"""Cortex-M kernel variants: one module per variant (reference, DSP GEMM, DSP depthwise 3x3,
DSP depthwise of any shape, DSP dense, Helium GEMM), the helpers they share (``common``), the
interface they implement (``base``) and their registry with the per-node selection
(``registry``). docs/kernels.md says how to add one.

Every optimized kernel computes exactly the integers of its reference kernel
(``templates/cortexm/ops/``): it only changes the order of the int32 additions (exact: the
static overflow check bounds every partial sum, and SMLAD's sums wrap like int32 adds)
and the instructions of the epilogue, never its arithmetic. What it exploits is what the
code generator knows at build time: shapes, strides and zero points become constants,
weights are stored in the order in which the inner loop consumes them, and the TFLite
double-rounding requantization is folded into one 64-bit multiply-add with per-channel
constants (``contract.fast_double_rounding``).
"""
