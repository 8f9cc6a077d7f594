"""``edgekit export`` of an FPGA build: the hls4ml project as a standalone folder.

The folder is the project hls4ml wrote (``firmware/`` with the HLS C++ and every
``ap_fixed`` type from edgekit's integer analysis, the weights, the test bench with
edgekit's simulator outputs in ``tb_data/``, ``build_prj.tcl`` for Vitis or Vivado
HLS, ``build_lib.sh`` for the g++ C-simulation) plus the ONNX graph hls4ml received,
with the configuration's paths pointing inside the folder. Synthesis needs only the
vendor tool; hls4ml can reopen it with ``hls4ml.converters.link_existing_project``.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from ...version import __version__
from ...errors import BuildDirError
from ...manifest import Manifest

EXPORT_MARKER = "edgekit-export.json"
HLS_MODEL = "hls_model.onnx"
HLS_TOOLS = {"Vitis": "vitis_hls", "Vivado": "vivado_hls"}

README = """\
# {project}: {source} for {part}

Exported by edgekit {version} from an FPGA build for {board} ({part}): an hls4ml {hls4ml_version}
{backend} project, {io_type}, reuse factor {reuse_factor}, clock {clock_period_ns} ns. The
fixed-point types come from edgekit's integer analysis{exact_note}.

    {tool} -f build_prj.tcl        # C-simulation and synthesis with {backend} HLS
    sh build_lib.sh                # the C-simulation library with g++ only (no vendor tools)

`tb_data/` holds test-bench inputs and edgekit's simulator outputs for them;
{graph_note}
"""


def export_hls(build_dir: Path, manifest: Manifest, dest: Path) -> Path:
    """Write the standalone HLS project folder ``dest`` from the FPGA build ``build_dir`` (an earlier
    export there is replaced; any other non-empty folder is refused)."""
    project = build_dir / manifest.hls["project_dir"]
    from_ir = manifest.layout.get("inputs") == "codes"  # built from edgekit's integer IR: no ONNX graph for hls4ml
    if not (project / "hls4ml_config.yml").is_file() or not (from_ir or (build_dir / HLS_MODEL).is_file()):
        raise BuildDirError(f"{build_dir}: the hls4ml project is incomplete; rebuild with `edgekit build --target fpga`")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        if not (dest / EXPORT_MARKER).is_file():
            raise BuildDirError(f"{dest}: exists and is not an empty folder; choose another folder")
        shutil.rmtree(dest)
    shutil.copytree(project, dest)
    if not from_ir:
        shutil.copyfile(build_dir / HLS_MODEL, dest / HLS_MODEL)
    cfg = dest / "hls4ml_config.yml"
    cfg.write_text(re.sub(r"^OnnxModel: .*$", f"OnnxModel: {HLS_MODEL}", cfg.read_text(), flags=re.M))
    h, p = manifest.hls, manifest.precision
    (dest / "README.md").write_text(README.format(
        project=h["project_name"], source=Path(manifest.source).name, part=manifest.part, board=manifest.board,
        version=__version__, hls4ml_version=h["hls4ml_version"], backend=h["backend"], io_type=h["io_type"],
        reuse_factor=h["reuse_factor"], clock_period_ns=h["clock_period_ns"],
        graph_note=("the model was made from edgekit's integer IR: it takes the input quantizer's codes and "
                    "returns the output codes (firmware/nnet_utils/nnet_edgekit.h holds edgekit's layers)."
                    if from_ir else f"`{HLS_MODEL}` is the graph as hls4ml's QONNX front end received it "
                    "(channels last)."),
        tool=HLS_TOOLS.get(h["backend"], "vitis_hls"),
        exact_note=" (bit-exact with edgekit's simulator)" if p["exact"] else
        f" where it can (float scales: {p['reason']})"))
    (dest / EXPORT_MARKER).write_text(json.dumps({
        "edgekit_version": __version__, "build_dir": str(build_dir.resolve()), "target": manifest.target,
        "board": manifest.board, "part": manifest.part, "hls": h, "source_sha256": manifest.source_sha256,
        "macs": manifest.macs, "bops": manifest.bops}, indent=1))
    return dest
