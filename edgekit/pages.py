"""The HTML pages edgekit writes (report.html, profile.html, the search's report.html) and
their plots: Jinja templates under ``templates/report/`` and matplotlib figures embedded as
inline SVG.

Pages are static: no JavaScript and no external resources, so a browser shows them from
``file://`` with nothing to fetch and nothing to fail. Plots are deterministic (the same
data gives the same bytes): no date in the SVG metadata, a fixed id salt per plot, text
kept as text (``svg.fonttype = none``) so the page stays small and searchable.

Figures are built with :class:`matplotlib.figure.Figure`, never pyplot: no GUI backend,
no global figure registry, nothing that depends on a display.
"""
from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator
from contextlib import contextmanager

from .resources import resource_dir

#: the report page of a build directory (``edgekit build`` and ``edgekit report`` write it)
REPORT_PAGE = "report.html"
#: files a build directory may hold that the report page shows when present
VERIFY_RECORD = "verify.json"  # the last `edgekit verify` (edgekit/verify.py writes it)
VALIDATE_RECORD = "validate.json"  # `edgekit validate`: accuracy, confusion_matrix (rows: true class), ...

#: one palette for every page (matplotlib's tab10, readable on white and in grey print)
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")

_RC = {"svg.fonttype": "none", "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9,
       "font.family": "DejaVu Sans", "axes.spines.top": False, "axes.spines.right": False}


def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(resource_dir("templates") / "report")),
                             autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["thousands"] = lambda v: "-" if v is None else f"{v:,}"
    env.filters["fixed"] = lambda v, digits=2: "-" if v is None else f"{v:,.{digits}f}"
    env.filters["percent"] = lambda v, digits=1: "-" if v is None else f"{100 * v:.{digits}f}%"
    env.filters["shape"] = lambda s: "x".join(map(str, s)) or "1"
    return env


def render(template: str, **context: Any) -> str:
    """One page from ``templates/report/<template>``."""
    return _environment().get_template(template).render(**context)


@contextmanager
def figure(name: str, width: float, height: float) -> Iterator[Any]:
    """A matplotlib Figure (inches) under the pages' style; ``name`` salts the SVG ids so that
    several plots on one page never share an id."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(dict(_RC, **{"svg.hashsalt": f"edgekit-{name}"})):
        yield Figure(figsize=(width, height), layout="constrained")


def svg(fig) -> str:
    """The figure as inline SVG markup (no XML prolog, no date), safe to embed in a page.

    Call it inside the ``figure`` block: the salt and the text settings apply when saving.
    matplotlib numbers its groups per file (figure_1, axes_1, ...), so every id and every
    reference to one gets the plot's name as a prefix: ids stay unique on a page of plots."""
    import matplotlib
    from markupsafe import Markup

    prefix = matplotlib.rcParams["svg.hashsalt"]
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', text)
    text = re.sub(r'(href="#|url\(#)([^")]+)', rf"\1{prefix}-\2", text)
    return Markup(text)


def write_page(path: Path, html: str) -> Path:
    """Write a page atomically (a reader never sees half a page); returns its path."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(html)
    os.replace(tmp, path)
    return path


def read_record(build_dir: Path, name: str) -> dict | None:
    """A JSON record another command left in the build directory, or None when there is none.

    An unreadable record is shown as such on the page rather than failing the report."""
    path = Path(build_dir) / name
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return {"unreadable": f"{path}: {e}"}
    return data if isinstance(data, dict) else {"unreadable": f"{path}: not a JSON object"}


# ---------------------------------------------------------------------------------------
# Plots more than one page uses
# ---------------------------------------------------------------------------------------
def bar_chart(name: str, labels: list[str], values: list[float], xlabel: str,
              annotations: list[str] | None = None, color: str = PALETTE[0]) -> str:
    """Horizontal bars, one per label (top to bottom in order), each with its value written
    beside it so that a small bar is still read exactly."""
    height = 0.9 + 0.24 * max(len(labels), 1)
    with figure(name, 7.5, height) as fig:
        ax = fig.subplots()
        ys = list(range(len(labels)))
        ax.barh(ys, values, color=color, height=0.7)
        ax.set_yticks(ys, labels)
        ax.invert_yaxis()
        ax.set_xlabel(xlabel)
        top = max(values, default=0) or 1
        ax.set_xlim(0, top * 1.28)
        for y, v, text in zip(ys, values, annotations or [f"{v:,.0f}" for v in values]):
            ax.text(v + top * 0.01, y, text, va="center", fontsize=8)
        ax.grid(axis="x", color="#ddd", linewidth=0.6)
        ax.set_axisbelow(True)
        return svg(fig)


def capacity_chart(name: str, regions: list[dict]) -> str:
    """Used against available, one bar per memory region or resource: ``regions`` rows have
    ``label``, ``capacity``, ``parts`` (list of (name, amount), stacked in order) and
    optionally ``unit``. When everything uses under 15% the axis ends short of 100% (the
    bars would be slivers) and says where the capacity is."""
    height = 1.3 + 0.45 * max(len(regions), 1)
    colours: dict[str, str] = {}
    with figure(name, 7.5, height) as fig:
        ax = fig.subplots()
        legend: dict[str, Any] = {}
        widest = 0.0
        for y, region in enumerate(regions):
            cap = region["capacity"] or 0
            left = 0.0
            for part, amount in region["parts"]:
                colour = colours.setdefault(part, PALETTE[len(colours) % len(PALETTE)])
                share = 100.0 * amount / cap if cap else 0.0
                legend.setdefault(part, ax.barh(y, share, left=left, height=0.6, color=colour))
                left += share
            widest = max(widest, left)
            used = sum(a for _, a in region["parts"])
            ax.text(left, y, f"  {used:,} of {cap:,} {region.get('unit', 'B')} ({left:.1f}%)", va="center",
                    fontsize=8)
        if widest >= 15:
            ax.axvline(100, color="#c00", linestyle="--", linewidth=1)
            ax.text(100, -0.5, " capacity", color="#c00", fontsize=8, va="bottom")
            ax.set_xlim(0, max(widest, 100) * 1.45)
        else:
            right = max(widest, 0.5) * 2.2
            ax.set_xlim(0, right)
            ax.text(right, -0.5, "capacity (100%) is off the right edge", color="#c00", fontsize=8, ha="right",
                    va="bottom")
        ax.set_yticks(range(len(regions)), [r["label"] for r in regions])
        ax.set_ylim(len(regions) - 0.4, -0.8)
        ax.set_xlabel("% of the capacity")
        if legend:
            fig.legend(legend.values(), legend.keys(), loc="outside lower center", fontsize=8,
                       ncols=min(len(legend), 6), frameon=False)
        return svg(fig)


def confusion_matrix_chart(name: str, matrix: list[list[int]], classes: list[str]) -> str:
    """Counts per (true, predicted) class, each cell labelled with its count."""
    import numpy as np

    m = np.asarray(matrix, dtype=np.int64)
    n = m.shape[0]
    side = min(1.6 + 0.45 * n, 9.0)
    with figure(name, side + 1.2, side) as fig:
        ax = fig.subplots()
        image = ax.imshow(m, cmap="Blues")
        fig.colorbar(image, ax=ax, shrink=0.8, label="count")
        labels = [str(c) for c in classes] if len(classes) == n else [str(i) for i in range(n)]
        ax.set_xticks(range(n), labels, rotation=45 if max(map(len, labels), default=0) > 3 else 0, ha="right"
                      if max(map(len, labels), default=0) > 3 else "center")
        ax.set_yticks(range(n), labels)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.spines[:].set_visible(False)
        threshold = m.max() / 2 if m.size else 0
        if n <= 20:  # beyond that the numbers no longer fit their cells; the colour still reads
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, f"{m[i, j]}", ha="center", va="center", fontsize=8,
                            color="white" if m[i, j] > threshold else "black")
        return svg(fig)


def validation_section(build_dir: Path) -> dict | None:
    """What the page shows of ``validate.json`` (``edgekit validate``): a classifier's accuracy,
    the float reference's and the confusion matrix plot; a regressor's errors."""
    record = read_record(build_dir, VALIDATE_RECORD)
    if record is None:
        return None
    if "unreadable" in record:
        return {"problem": record["unreadable"]}
    path = Path(build_dir) / VALIDATE_RECORD
    if record.get("task") == "regression":
        return {"task": "regression", "samples": record.get("samples"), "source": record.get("input_source"),
                "metrics": [(name, record.get(key)) for name, key in (
                    ("RMSE", "rmse"), ("largest error", "max_error"), ("cosine similarity", "cosine"),
                    ("float reference RMSE", "float_rmse"), ("float reference cosine", "float_cosine"))
                    if record.get(key) is not None],
                "reference": record.get("float_reference"), "firmware_exact": record.get("firmware_exact")}
    matrix = record.get("confusion_matrix")
    if not (isinstance(matrix, list) and matrix and all(isinstance(r, list) and len(r) == len(matrix)
                                                        for r in matrix)):
        return {"problem": f"{path}: no square confusion_matrix"}
    classes = record.get("classes") or [str(i) for i in range(len(matrix))]
    return {"task": "classification", "accuracy": record.get("accuracy"), "classes": classes,
            "samples": sum(sum(r) for r in matrix), "source": record.get("input_source") or record.get("dataset"),
            "float_accuracy": record.get("float_accuracy"), "accuracy_drop": record.get("accuracy_drop"),
            "reference": record.get("float_reference"), "firmware_exact": record.get("firmware_exact"),
            "plot": confusion_matrix_chart("confusion", matrix, classes)}


def verify_section(build_dir: Path) -> dict | None:
    """The last verification's stages, as ``edgekit verify --json`` wrote them to verify.json."""
    record = read_record(build_dir, VERIFY_RECORD)
    if record is None:
        return None
    if "unreadable" in record or not isinstance(record.get("stages"), list):
        return {"problem": record.get("unreadable", f"{Path(build_dir) / VERIFY_RECORD}: no stages")}
    return record
