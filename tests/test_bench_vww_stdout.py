"""``edgekit bench mlperf-tiny --json`` writes only the JSON on stdout, also when it makes the visual
wake words stand-in with TensorFlow, which prints its SavedModel endpoints (Python) and the
converter's settings (C++) on stdout while it converts."""
import json
import os
import sys

import pytest

from edgekit.bench import vww_keras


def test_stdout_to_stderr_moves_python_and_file_descriptor_writes(capfd):
    print("before")
    with vww_keras._stdout_to_stderr():
        print("python print")
        os.write(1, b"fd write\n")
        sys.stdout.write("sys.stdout write\n")
    print("after")
    out, err = capfd.readouterr()
    assert out == "before\nafter\n"
    assert "python print" in err and "fd write" in err and "sys.stdout write" in err


def test_stdout_is_restored_after_an_error(capfd):
    with pytest.raises(RuntimeError):
        with vww_keras._stdout_to_stderr():
            raise RuntimeError("conversion failed")
    print("still stdout")
    assert capfd.readouterr().out == "still stdout\n"


@pytest.mark.slow
def test_making_the_stand_in_prints_nothing_on_stdout(tmp_path, capfd):
    pytest.importorskip("tensorflow")
    path = vww_keras.make_vww_tflite(tmp_path / "vww.tflite", calibration=4)
    out, err = capfd.readouterr()
    assert out == "", out[:300]
    assert path.stat().st_size > 100_000
    assert "Saved artifact" in err  # TensorFlow's print went to stderr, not away


def test_bench_json_is_the_only_stdout(tmp_path, capfd, monkeypatch):
    """The CLI under --json with a stand-in maker that prints like TensorFlow does: stdout parses as JSON."""
    from edgekit.bench import mlperf
    from edgekit.cli import main

    def noisy_run(models=None, notes=None, **kw):
        with vww_keras._stdout_to_stderr():
            print("Saved artifact at '/tmp/x'")
            os.write(1, b"fully_quantize: 0, inference_type: 6\n")
        notes.append("vww: stand-in")
        return []

    monkeypatch.setattr(mlperf, "run_mlperf", noisy_run)
    rc = main(["bench", "mlperf-tiny", "--models", "vww", "--json"])
    out, err = capfd.readouterr()
    assert rc == 0
    assert json.loads(out) == {"rows": [], "notes": ["vww: stand-in"]}
    assert "Saved artifact" in err and "fully_quantize" in err


def test_bench_passes_io_buffers_to_the_builds(capfd, monkeypatch):
    """``edgekit bench mlperf-tiny --io-buffers caller`` measures builds with the caller's input and output
    buffers (the cost docs/c-api.md compares), not silently the default."""
    from edgekit.bench import mlperf
    from edgekit.cli import main

    seen = {}

    def run(models=None, notes=None, **kw):
        seen.update(kw, models=models)
        return []

    monkeypatch.setattr(mlperf, "run_mlperf", run)
    assert main(["bench", "mlperf-tiny", "--models", "ad", "--io-buffers", "caller", "--json"]) == 0
    assert seen["io_buffers"] == "caller" and seen["models"] == ["ad"]
    assert main(["bench", "mlperf-tiny", "--models", "ad", "--json"]) == 0
    assert seen["io_buffers"] is None  # edgekit build's default, the input and output in the arena
    capfd.readouterr()
