"""``edgekit export``: a standalone project folder from a build directory.

The folder holds the generated library (``src/model.c``, ``model.h``, ``ek_contract.h``),
a Makefile and a CMakeLists.txt (plus a CMake toolchain file) that build it as a static
library with arm-none-eabi-gcc, and, optionally, the test-harness firmware for the
build's board (``make firmware`` / ``-DEDGEKIT_FIRMWARE=ON``). Nothing in it needs
Python or edgekit: a firmware engineer drops it into their own build.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ...version import __version__
from ...errors import BuildDirError
from ...manifest import load_manifest
from ...targets import get_core
from . import toolchain as tc

LIBRARY = "edgekit_model"

MAKEFILE = """\
# Makefile for the edgekit model library, exported by edgekit {version} from a build for
# {target} ({board}). Needs only GNU make and arm-none-eabi-gcc (no Python, no edgekit).
#
#   make              -> build/lib{lib}.a   (link it and add src/ to your include path)
#   make firmware     -> build/firmware.elf (edgekit's test harness for {board})
#   make CROSS=... CPU_FLAGS=... CFLAGS=...  to override the toolchain or flags

CROSS     ?= arm-none-eabi-
CC        := $(CROSS)gcc
AR        := $(CROSS)ar
CPU_FLAGS ?= {cpu_flags}
CFLAGS    ?= -O2 -g -std=c99 -Wall -Wextra -ffunction-sections -fdata-sections
BUILD     ?= build

FW_SOURCES := {fw_sources}

all: $(BUILD)/lib{lib}.a

$(BUILD)/lib{lib}.a: $(BUILD)/model.o
\t$(AR) rcs $@ $^

$(BUILD)/model.o: src/model.c src/model.h src/ek_contract.h | $(BUILD)
\t$(CC) $(CPU_FLAGS) $(CFLAGS) -Isrc -c $< -o $@

firmware: $(BUILD)/firmware.elf

$(BUILD)/firmware.elf: src/model.c $(FW_SOURCES) firmware/link.ld | $(BUILD)
\t$(CC) $(CPU_FLAGS) $(CFLAGS) -ffreestanding -nostdlib -fno-tree-loop-distribute-patterns -Isrc -Ifirmware \\
\t\tsrc/model.c $(FW_SOURCES) -Tfirmware/link.ld -Wl,--gc-sections -Wl,-Map=$(BUILD)/firmware.map -lgcc -o $@

$(BUILD):
\tmkdir -p $(BUILD)

clean:
\trm -rf $(BUILD)

.PHONY: all firmware clean
"""

CMAKELISTS = """\
# CMake project for the edgekit model library, exported by edgekit {version} from a build
# for {target} ({board}). No Python or edgekit needed.
#
# Standalone:   cmake -S . -B build -DCMAKE_TOOLCHAIN_FILE=cmake/arm-none-eabi.cmake && cmake --build build
# In your app:  add_subdirectory(<this folder>) and target_link_libraries(app PRIVATE {lib});
#               your toolchain's CPU flags apply ({cpu_flags} were used by edgekit).
cmake_minimum_required(VERSION 3.13)
project({lib} LANGUAGES C)

add_library({lib} STATIC src/model.c)
target_include_directories({lib} PUBLIC ${{CMAKE_CURRENT_SOURCE_DIR}}/src)
set_target_properties({lib} PROPERTIES C_STANDARD 99 C_STANDARD_REQUIRED ON C_EXTENSIONS OFF)
target_compile_options({lib} PRIVATE -Wall -Wextra -ffunction-sections -fdata-sections)

option(EDGEKIT_FIRMWARE "also build edgekit's test-harness firmware for {board}" OFF)
if(EDGEKIT_FIRMWARE)
  add_executable(firmware.elf src/model.c {fw_sources})
  target_include_directories(firmware.elf PRIVATE src firmware)
  set_target_properties(firmware.elf PROPERTIES C_STANDARD 99 C_STANDARD_REQUIRED ON C_EXTENSIONS OFF)
  target_compile_options(firmware.elf PRIVATE -ffreestanding -fno-tree-loop-distribute-patterns
                         -ffunction-sections -fdata-sections)
  target_link_options(firmware.elf PRIVATE -nostdlib -T${{CMAKE_CURRENT_SOURCE_DIR}}/firmware/link.ld
                      -Wl,--gc-sections -Wl,-Map=${{CMAKE_CURRENT_BINARY_DIR}}/firmware.map)
  target_link_libraries(firmware.elf PRIVATE gcc)
endif()
"""

TOOLCHAIN = """\
# CMake toolchain file for arm-none-eabi-gcc and {target}, written by edgekit {version}.
set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(CMAKE_C_COMPILER ${{EDGEKIT_CROSS}}gcc)
set(CMAKE_AR ${{EDGEKIT_CROSS}}ar)
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
set(CMAKE_C_FLAGS_INIT "{cpu_flags}")
set(CMAKE_C_FLAGS_RELEASE_INIT "-O2")
if(NOT CMAKE_BUILD_TYPE)
  set(CMAKE_BUILD_TYPE Release CACHE STRING "" FORCE)
endif()
"""

TOOLCHAIN_PREFIX = """\
if(NOT DEFINED EDGEKIT_CROSS)
  set(EDGEKIT_CROSS arm-none-eabi-)
endif()
"""

README = """\
# {lib}: {source} for {target}

Exported by edgekit {version} from a build for {target} on {board}. Plain C99: no heap, no
floating point in inference, {arena} bytes of static RAM (activation arena{arena_note}), weights
const (in flash). Integer contract: docs/integer-contract.md in edgekit.
{ram_note}
```c
#include "model.h"
{usage}
```
{usage_note}
Build the library (GNU make or CMake; arm-none-eabi-gcc; no Python):

    make                                  # build/lib{lib}.a
    cmake -S . -B build -DCMAKE_TOOLCHAIN_FILE=cmake/arm-none-eabi.cmake && cmake --build build

or add `src/model.c` and `src/` to your own project, compiled with your core's flags
(edgekit used `{cpu_flags}`).

`firmware/` is edgekit's test harness for {board} (`make firmware`, or CMake with
`-DEDGEKIT_FIRMWARE=ON`): it reads inputs.bin and writes outputs.bin over semihosting.
"""


#: how the exported README calls the model, by where its input and output live (docs/c-api.md)
USAGE = {
    "arena": ("""ek_input_t *in = ek_model_input();   /* EK_INPUT_COUNT codes: EK_INPUT_SCALE / EK_INPUT_ZERO_POINT */
/* ... write the input codes into in[0 .. EK_INPUT_COUNT-1] ... */
ek_model_run();
const ek_output_t *out = ek_model_output();   /* EK_OUTPUT_COUNT codes */""",
              ", input and output included",
              "\nThe input and output live inside the arena (the build's `--io-buffers arena`): write the whole\n"
              "input before every `ek_model_run()` (the inference reuses its bytes) and read the output\n"
              "before writing the next input. `edgekit build --io-buffers caller` gives\n"
              "`ek_model_run(in, out)` on buffers of your own instead, at the cost of their bytes.\n"),
    "caller": ("""ek_input_t  in[EK_INPUT_COUNT];   /* quantized codes: EK_INPUT_SCALE / EK_INPUT_ZERO_POINT */
ek_output_t out[EK_OUTPUT_COUNT];
ek_model_run(in, out);""",
               "; your input and output buffers, {io_bytes} bytes, come on top",
               "\nThe input and output are your buffers (the build's `--io-buffers caller`); the input is only read.\n"),
}


def _usage(manifest) -> dict:
    usage, arena_note, note = USAGE[manifest.io_buffers or "caller"]
    mem = manifest.memory or {}
    # what the --io-buffers choice costs, as the build measured it (builds before peak RAM have none)
    ram_note = ""
    if "peak_ram_bytes" in mem:
        io = mem.get("io_buffer_bytes", 0)
        stack = mem["peak_ram_bytes"] - manifest.arena_bytes - io
        ram_note = (f"\nOne inference needs {mem['peak_ram_bytes']:,} bytes of RAM on {manifest.board}: the arena's "
                    f"{manifest.arena_bytes:,}" + (f", your input and output buffers' {io:,}" if io else "")
                    + f" and {stack:,} of stack ({mem['peak_ram_stack']}).\n")
    return {"usage": usage, "arena_note": arena_note.format(io_bytes=f"{mem.get('io_buffer_bytes', 0):,}"),
            "usage_note": note, "ram_note": ram_note}


def export(build_dir: str | Path, dest: str | Path) -> Path:
    """Write the standalone project folder ``dest`` from ``build_dir`` (an earlier export there
    is replaced; any other non-empty folder is refused)."""
    build_dir, dest = Path(build_dir), Path(dest)
    manifest = load_manifest(build_dir)
    for f in ("model.c", "model.h", "ek_contract.h"):
        if not (build_dir / "src" / f).is_file():
            raise BuildDirError(f"{build_dir}: src/{f} is missing; rebuild")
    if dest.exists() and any(dest.iterdir()):
        if not (dest / "edgekit-export.json").is_file():
            raise BuildDirError(f"{dest}: exists and is not empty; choose another folder")
        shutil.rmtree(dest)
    core = get_core(manifest.target)
    cpu_flags = " ".join(core.cflags)
    fw = [f"firmware/{f}" for f in tc.FIRMWARE_SOURCES]
    fmt = {"version": __version__, "target": manifest.target, "board": manifest.board, "lib": LIBRARY,
           "cpu_flags": cpu_flags, "fw_sources": " ".join(fw), "arena": manifest.arena_bytes,
           "source": Path(manifest.source).name, **_usage(manifest)}
    (dest / "src").mkdir(parents=True)
    (dest / "firmware").mkdir()
    (dest / "cmake").mkdir()
    for f in ("model.c", "model.h", "ek_contract.h"):
        shutil.copyfile(build_dir / "src" / f, dest / "src" / f)
    for f in sorted((build_dir / "firmware").iterdir()):
        if f.suffix in (".c", ".h") or f.name == "link.ld":
            shutil.copyfile(f, dest / "firmware" / f.name)
    (dest / "Makefile").write_text(MAKEFILE.format(**fmt))
    (dest / "CMakeLists.txt").write_text(CMAKELISTS.format(**fmt))
    (dest / "cmake" / "arm-none-eabi.cmake").write_text(TOOLCHAIN_PREFIX + TOOLCHAIN.format(**fmt))
    (dest / "README.md").write_text(README.format(**fmt))
    (dest / "edgekit-export.json").write_text(json.dumps({
        "edgekit_version": __version__, "build_dir": str(build_dir.resolve()), "target": manifest.target,
        "board": manifest.board, "cflags": list(core.cflags), "source_sha256": manifest.source_sha256,
        "macs": manifest.macs, "arena_bytes": manifest.arena_bytes, "weight_bytes": manifest.weight_bytes,
        "io_buffers": manifest.io_buffers or "caller"},
        indent=1))
    return dest
