"""The generated model.c compiled at every optimization level users build with (and with a frame pointer,
which leaves the inline assembly one register fewer): each must compile warning-free."""
from __future__ import annotations

import subprocess
from pathlib import Path

#: -O0 gets the reference kernels (the optimized ones need __OPTIMIZE__); the others get the DSP kernels
LEVELS = (("-O0",), ("-Og",), ("-Os",), ("-O3",), ("-O2", "-fno-omit-frame-pointer"))


def disassembly_at_every_level(build_dir: Path, work: Path, core_name: str = "cortex-m4") -> dict[tuple, str]:
    """flags -> objdump -d of build_dir's src/model.c compiled with them (-Wall -Wextra -Werror -pedantic);
    fails the test, naming the flags, if one does not compile."""
    from edgekit.backends.cortexm import toolchain as tc
    from edgekit.targets import get_core

    core = get_core(core_name)
    src, obj = Path(build_dir) / "src", Path(work) / "m.o"
    out = {}
    for flags in LEVELS:
        cmd = [tc.arm_gcc(), *core.cflags, *flags, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic",
               "-ffreestanding", f"-I{src}", "-c", str(src / "model.c"), "-o", str(obj)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (flags, proc.stderr[-2000:])
        out[flags] = subprocess.run([tc._binutil("objdump"), "-d", str(obj)], capture_output=True, text=True).stdout
    return out
