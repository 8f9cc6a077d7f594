"""The XOR-popcount of one output of a binary layer on DSP cores, as straight-line Thumb-2 assembly generated
at build time for the layer's shape (templates/cortexm/ops_bin/, docs/kernels.md "Binary and ternary layers").

The Cortex-M has no popcount instruction. The words of a row are added into bit-sliced counters by a
Harley-Seal tree of carry-save adders laid out here, not looped over: each level holds at most two words,
a third is folded by a carry-save adder (5 instructions) that sends one word up a level. Words come in pairs
stored as ``(v1, v0 ^ v1)`` (activations and weights alike), so adding a pair's two XORs to the level-0
counter ``l`` is 6 instructions: with ``d1 = a1 ^ w1`` and ``e = d0 ^ d1 = (a0 ^ a1) ^ (w0 ^ w1)``, the sum
is ``l ^ e`` and the carry ``maj(l, d0, d1) = ((l ^ d1) & e) ^ d1`` (the first pair: ``e`` and
``d1 & ~e``). At the end each level's words are counted once: SWAR nibble counts (Thumb-2 takes the masks
as immediates), two of them per nibble where they fit, byte sums, USADA8. A row of many words is cut into
chunks, each one ``asm`` statement within the registers the core has and the reach of an LDRD offset.
"""
from __future__ import annotations

from dataclasses import dataclass

#: registers one chunk may take besides its two pointers: its scratch registers and, where one is left, a
#: register holding 0 across the layer's loop (GCC must find them all with the frame pointer r7 reserved
#: (-fno-omit-frame-pointer): 11 + 2 of r0-r6, r8-r12, lr)
MAX_REGISTERS = 11
#: the reach of an LDRD/LDR immediate offset (bytes)
MAX_OFFSET = 1020
#: nibble counts per word: at most 4; a nibble holds 15
NIBBLE_MAX = 15


@dataclass(frozen=True)
class Item:
    """Words of a row: a pair (2 words stored (v1, v0 ^ v1)) or a single word, at ``offset`` words from the
    output's activation base; its weight words follow the previous item's in flash."""
    pair: bool
    offset: int


class _Regs:
    def __init__(self):
        self.free: list[str] = []
        self.count = 0
        self.peak = 0
        self.live = 0

    def take(self) -> str:
        if not self.free:
            self.free.append(f"t{self.count}")
            self.count += 1
        self.live += 1
        self.peak = max(self.peak, self.live)
        return self.free.pop()

    def give(self, *regs: str) -> None:
        for r in regs:
            self.live -= 1
            self.free.append(r)


class _Tree:
    """The instructions of one chunk, with its registers."""

    def __init__(self):
        self.lines: list[str] = []
        self.regs = _Regs()
        self.levels: dict[int, list[str]] = {}

    def op(self, text: str) -> None:
        self.lines.append(text)

    def push(self, level: int, reg: str) -> None:
        words = self.levels.setdefault(level, [])
        words.append(reg)
        if len(words) == 3:  # carry-save adder: l, b, c -> l = l ^ b ^ c, b = maj(l, b, c) one level up
            l, b, c = words
            u = self.regs.take()
            self.op(f"eor %[{u}], %[{l}], %[{b}]")
            self.op(f"and %[{b}], %[{l}], %[{b}]")
            self.op(f"eor %[{l}], %[{u}], %[{c}]")
            self.op(f"and %[{u}], %[{u}], %[{c}]")
            self.op(f"orr %[{b}], %[{b}], %[{u}]")
            self.regs.give(u, c)
            del words[1:]
            self.push(level + 1, b)

    def add_pair(self, offset: int) -> None:
        x, y, r, s = (self.regs.take() for _ in range(4))
        self.op(f"ldrd %[{x}], %[{y}], [%[pa], #{4 * offset}]")
        self.op(f"ldrd %[{r}], %[{s}], [%[pw]], #8")
        self.op(f"eor %[{x}], %[{x}], %[{r}]")         # d1
        self.op(f"eor %[{y}], %[{y}], %[{s}]")         # e = d0 ^ d1
        ones = self.levels.setdefault(0, [])
        if not ones:
            self.op(f"bic %[{x}], %[{x}], %[{y}]")     # carry d0 & d1 = d1 & ~e; the sum is e
            self.regs.give(r, s)
            ones.append(y)
        else:
            l = ones[0]
            self.op(f"eor %[{r}], %[{l}], %[{x}]")     # l ^ d1
            self.op(f"eor %[{l}], %[{l}], %[{y}]")     # the sum l ^ d0 ^ d1
            self.op(f"and %[{r}], %[{r}], %[{y}]")
            self.op(f"eor %[{x}], %[{r}], %[{x}]")     # the carry
            self.regs.give(y, r, s)
        self.push(1, x)

    def add_single(self, offset: int) -> None:
        x, r = self.regs.take(), self.regs.take()
        self.op(f"ldr %[{x}], [%[pa], #{4 * offset}]")
        self.op(f"ldr %[{r}], [%[pw]], #4")
        self.op(f"eor %[{x}], %[{x}], %[{r}]")
        self.regs.give(r)
        self.push(0, x)

    def nibbles(self, v: str) -> None:
        """v -> its per-nibble bit counts (at most 4 each)."""
        t = self.regs.take()
        self.op(f"and %[{t}], %[{v}], #0xAAAAAAAA")
        self.op(f"sub %[{v}], %[{v}], %[{t}], lsr #1")
        self.op(f"and %[{t}], %[{v}], #0xCCCCCCCC")
        self.op(f"and %[{v}], %[{v}], #0x33333333")
        self.op(f"add %[{v}], %[{v}], %[{t}], lsr #2")
        self.regs.give(t)

    def count(self, out: str, zero_operand: bool) -> None:
        """``out`` = sum over levels L of 2^L * popcount(words of L); frees every word. The 0 that USADA8
        needs is the input operand ``zero`` or, without one, set in a scratch register."""
        words = sorted((level, w) for level, ws in self.levels.items() for w in ws)
        # nibble groups: one word, or two whose nibble counts add (weights 1:1 or 1:2) without passing 15
        groups: list[tuple[int, str, int]] = []    # (level of the group, its word, the most a nibble holds)
        i = 0
        while i < len(words):
            level, w = words[i]
            self.nibbles(w)
            if i + 1 < len(words) and words[i + 1][0] - level in (0, 1):
                level2, w2 = words[i + 1]
                self.nibbles(w2)
                shift = level2 - level
                self.op(f"add %[{w}], %[{w}], %[{w2}]" + (f", lsl #{shift}" if shift else ""))
                self.regs.give(w2)
                groups.append((level, w, 4 + (4 << shift)))
                i += 2
            else:
                groups.append((level, w, 4))
                i += 1
        # byte sums of each group's nibbles, then bytes of several groups added (shifted to a common level)
        # while a byte cannot pass 255, each such sum counted by one USADA8
        zero = "zero" if zero_operand else self.regs.take()
        if not zero_operand:
            self.op(f"mov %[{zero}], #0")
        first = True
        j = 0
        while j < len(groups):
            base, acc, most = groups[j]
            most = self.bytes(acc, most)
            j += 1
            while j < len(groups):
                level, w, gmost = groups[j]
                shift = level - base
                if most + (2 * gmost << shift) > 255:
                    break
                most += self.bytes(w, gmost) << shift
                self.op(f"add %[{acc}], %[{acc}], %[{w}]" + (f", lsl #{shift}" if shift else ""))
                self.regs.give(w)
                j += 1
            if first and base == 0:
                self.op(f"usad8 %[{out}], %[{acc}], %[{zero}]")
            elif first:
                self.op(f"usad8 %[{acc}], %[{acc}], %[{zero}]")
                self.op(f"lsl %[{out}], %[{acc}], #{base}")
            elif base == 0:
                self.op(f"usada8 %[{out}], %[{acc}], %[{zero}], %[{out}]")
            else:
                self.op(f"usad8 %[{acc}], %[{acc}], %[{zero}]")
                self.op(f"add %[{out}], %[{out}], %[{acc}], lsl #{base}")
            self.regs.give(acc)
            first = False
        if not zero_operand:
            self.regs.give(zero)
        self.levels = {}

    def bytes(self, v: str, most: int) -> int:
        """v's nibble counts (at most ``most`` each) -> byte counts; returns the most a byte holds."""
        if 2 * most <= NIBBLE_MAX:  # the two nibbles' sum fits the low nibble
            self.op(f"add %[{v}], %[{v}], %[{v}], lsr #4")
            self.op(f"and %[{v}], %[{v}], #0x0F0F0F0F")
        else:
            t = self.regs.take()
            self.op(f"and %[{t}], %[{v}], #0xF0F0F0F0")
            self.op(f"and %[{v}], %[{v}], #0x0F0F0F0F")
            self.op(f"add %[{v}], %[{v}], %[{t}], lsr #4")
            self.regs.give(t)
        return 2 * most


@dataclass(frozen=True)
class Chunk:
    """One asm statement: the items it reads from ``base`` (words from the output's activation base),
    its instructions and scratch registers; the count it leaves is in register ``out``; ``zero``: it reads
    the input operand ``zero`` (0)."""
    base: int
    lines: tuple[str, ...]
    registers: tuple[str, ...]
    out: str
    zero: bool


def _generate(items: list[Item]) -> _Tree:
    tree = _Tree()
    base = items[0].offset
    for item in items:
        (tree.add_pair if item.pair else tree.add_single)(item.offset - base)
    return tree


def _finish(items: list[Item]) -> Chunk:
    for zero_operand in (True, False):  # a register kept at 0 saves a MOV per output where one is left
        tree = _generate(items)
        out = tree.regs.take()
        tree.count(out, zero_operand)
        chunk = Chunk(items[0].offset, tuple(tree.lines), tuple(f"t{i}" for i in range(tree.regs.count)), out,
                      zero_operand)
        if len(chunk.registers) + zero_operand <= MAX_REGISTERS:
            break
    return chunk


def _fits(items: list[Item]) -> bool:
    return 4 * (items[-1].offset - items[0].offset) <= MAX_OFFSET and len(_finish(items).registers) <= MAX_REGISTERS


def chunks(items: list[Item]) -> list[Chunk]:
    """The row's items cut into asm statements, each as long as registers and offsets allow."""
    out: list[Chunk] = []
    start = 0
    while start < len(items):
        end = start + 1
        while end < len(items) and _fits(items[start:end + 1]):
            end += 1
        out.append(_finish(items[start:end]))
        start = end
    return out


def group_items(groups: int, words: int, stride: int, first: int = 0) -> list[Item]:
    """Items of ``groups`` runs of ``words`` words each (a pixel's channels, a dense row), run g starting at
    ``first + g * stride`` words: each run's words in pairs, an odd last word single."""
    items = []
    for g in range(groups):
        at = first + g * stride
        items += [Item(True, at + j) for j in range(0, words - 1, 2)]
        if words % 2:
            items.append(Item(False, at + words - 1))
    return items


def count_instructions(chunk_list: list[Chunk]) -> int:
    return sum(len(c.lines) for c in chunk_list)
