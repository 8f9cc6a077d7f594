"""Hessian-aware mixed-precision weights under flash, RAM and latency budgets (HAWQ-V2/V3),
measured and verified on the emulated core: ``edgekit mixed-precision``.

The model-side parts (Hessian traces, the ILP, fine-tuning) live in ``edgekit.qat``; this
package measures the per-layer costs on real builds and checks the result (it sits above
the API and the search, whose data sets and stand-in boards it reuses).
"""
