"""Flash (or load into RAM), reset and run the harness firmware on a real board through
pyocd, serving its semihosting requests until it exits.

Run as a separate process by ``edgekit flash --probe pyocd`` (so that a hung probe can be
killed after the time limit):

    python -m edgekit.backends.cortexm.pyocd_run --target TARGET --elf firmware.elf
        [--uid PROBE] [--load flash|ram] [--timeout SECONDS]

in the directory that holds inputs.bin; the firmware writes outputs.bin there. The
semihosting console output (EK_VECTORS=, EK_STACK_USED=) is printed line by line as it
arrives. Exit status: the firmware's own exit code (0 ok; 100 + n for a fault), or
NO_PROBE (120), CONNECT_FAILED (121), HALTED (122: stopped for something other than
semihosting), TIMEOUT (124).

pyocd's SemihostAgent handles the file and console operations; SYS_EXIT and
SYS_EXIT_EXTENDED (which pyocd leaves unimplemented) end the run here.
"""
from __future__ import annotations

import argparse
import sys
import time

NO_PROBE, CONNECT_FAILED, HALTED, TIMEOUT = 120, 121, 122, 124
ADP_STOPPED_APPLICATION_EXIT = 0x20026
VTOR = 0xE000ED08


def _agent_class():
    from pyocd.debug.semihost import SemihostAgent

    class ExitingAgent(SemihostAgent):
        exit_code = None

        def handle_sys_exit(self, args: int) -> int:  # r1 holds the reason itself on 32-bit targets
            self.exit_code = 0 if args == ADP_STOPPED_APPLICATION_EXIT else 1
            return 0

        def handle_sys_exit_extended(self, args: int) -> int:
            reason, code = self._get_args(args, 2)
            self.exit_code = code if reason == ADP_STOPPED_APPLICATION_EXIT else 1
            return 0

        _REQUEST_MAP = dict(SemihostAgent._REQUEST_MAP)
        _REQUEST_MAP[0x18] = handle_sys_exit
        _REQUEST_MAP[0x20] = handle_sys_exit_extended

    return ExitingAgent


def _load_into_ram(target, elf: str) -> None:
    """Write the ELF's loadable segments, then point VTOR, MSP and PC at its vector table."""
    from elftools.elf.elffile import ELFFile

    with open(elf, "rb") as f:
        e = ELFFile(f)
        for seg in e.iter_segments():
            if seg["p_type"] == "PT_LOAD" and seg["p_filesz"]:
                target.write_memory_block8(seg["p_paddr"], list(seg.data()))
        vectors = min(s["p_paddr"] for s in e.iter_segments() if s["p_type"] == "PT_LOAD" and s["p_filesz"])
    sp, reset = target.read32(vectors), target.read32(vectors + 4)
    target.write32(VTOR, vectors)
    target.write_core_register("msp", sp)
    target.write_core_register("xpsr", 0x01000000)  # Thumb state
    target.write_core_register("pc", reset & ~1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgekit.backends.cortexm.pyocd_run")
    p.add_argument("--target", required=True, help="pyocd target name")
    p.add_argument("--elf", required=True)
    p.add_argument("--uid", help="probe unique ID (pyocd list)")
    p.add_argument("--load", choices=["flash", "ram"], default="flash")
    p.add_argument("--timeout", type=float, default=120.0)
    a = p.parse_args(argv)

    from pyocd.core.helpers import ConnectHelper
    from pyocd.core.target import Target
    from pyocd.debug.semihost import InternalSemihostIOHandler
    from pyocd.flash.file_programmer import FileProgrammer

    deadline = time.monotonic() + a.timeout
    try:
        session = ConnectHelper.session_with_chosen_probe(blocking=False, return_first=True, unique_id=a.uid,
                                                          target_override=a.target)
    except Exception as e:  # pyocd raises assorted errors for unknown targets, USB permission problems
        print(f"edgekit: pyocd could not open a session: {e}", file=sys.stderr)
        return CONNECT_FAILED
    if session is None:
        print("edgekit: no debug probe found by pyocd", file=sys.stderr)
        return NO_PROBE
    try:
        with session:
            target = session.board.target
            if a.load == "flash":
                FileProgrammer(session).program(a.elf, file_format="elf")
                target.reset_and_halt()
            else:
                target.reset_and_halt()
                _load_into_ram(target, a.elf)
            io = InternalSemihostIOHandler()
            agent = _agent_class()(target.get_target_context(), io_handler=io, console=io)
            target.resume()
            while True:
                if time.monotonic() > deadline:
                    print(f"edgekit: the firmware did not finish within {a.timeout:.0f} s", file=sys.stderr)
                    target.halt()
                    return TIMEOUT
                if target.get_state() == Target.State.HALTED:
                    if agent.check_and_handle_semihost_request():
                        if agent.exit_code is not None:
                            agent.cleanup()
                            return int(agent.exit_code)
                        target.resume()
                        continue
                    pc = target.read_core_register("pc")
                    print(f"edgekit: the target halted at pc=0x{pc:08x}, not for semihosting", file=sys.stderr)
                    return HALTED
                time.sleep(0.0005)
    except Exception as e:
        print(f"edgekit: pyocd failed: {type(e).__name__}: {e}", file=sys.stderr)
        return CONNECT_FAILED


if __name__ == "__main__":
    sys.exit(main())
