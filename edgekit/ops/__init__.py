"""IR operators, one module per operator, each registering an ``edgekit.ir.operators.Op``.

Nothing is listed here: ``edgekit.ir.operators.operators()`` imports every module of this
package (modules starting with ``_`` are shared helpers).
"""
