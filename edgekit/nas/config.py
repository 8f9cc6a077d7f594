"""The search's settings: budgets and their parsing, ``NasConfig`` (stored in the study so
that every worker searches the same thing), and byte formatting for messages and reports."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from ..errors import EdgekitError

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(b|k|kb|kib|m|mb|mib)?\s*$", re.I)
_TIME = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(us|ms|s)?\s*$", re.I)


def parse_size(text: str | int) -> int:
    """Bytes from '64KB', '64KiB', '256k', '1MB', '4096' (K/KB/KiB = 1024, M/MB/MiB = 1024^2)."""
    if isinstance(text, int):
        return text
    m = _SIZE.match(str(text))
    if not m:
        raise EdgekitError(f"cannot read a size from '{text}'; write e.g. 64KB, 256KiB, 1MB or 4096")
    unit = (m.group(2) or "b").lower()
    mult = {"b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20}[unit]
    return int(round(float(m.group(1)) * mult))


def parse_latency(text: str | float) -> float:
    """Milliseconds from '20ms', '0.02s', '500us', '20' (ms)."""
    if isinstance(text, (int, float)):
        return float(text)
    m = _TIME.match(str(text))
    if not m:
        raise EdgekitError(f"cannot read a latency from '{text}'; write e.g. 20ms, 0.5s or 800us")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[(m.group(2) or "ms").lower()]


@dataclass(frozen=True)
class Budget:
    max_ram: int | None = None          # bytes
    max_flash: int | None = None        # bytes
    max_latency_ms: float | None = None

    def violations(self, ram: float, flash: float, latency_ms: float) -> list[float]:
        """Relative excess per budget (<= 0: satisfied), the order of ``constraints``."""
        def rel(v, limit):
            return -1.0 if limit is None else (float(v) - limit) / limit
        return [rel(ram, self.max_ram), rel(flash, self.max_flash), rel(latency_ms, self.max_latency_ms)]

    def describe(self) -> str:
        parts = []
        if self.max_ram is not None:
            parts.append(f"RAM <= {fmt_bytes(self.max_ram)}")
        if self.max_flash is not None:
            parts.append(f"flash <= {fmt_bytes(self.max_flash)}")
        if self.max_latency_ms is not None:
            parts.append(f"latency <= {self.max_latency_ms:g} ms")
        return ", ".join(parts) or "no budgets"


CONSTRAINT_NAMES = ("RAM", "flash", "latency")


@dataclass
class NasConfig:
    board: str
    target: str
    budget: Budget
    dataset: str = "har"
    train_subset: int | None = None
    space: dict = field(default_factory=dict)        # SpaceConfig.to_json()
    max_epochs: int | None = None                    # None: from the training set's size (training_defaults)
    patience: int | None = None
    lr: float = 5e-3
    batch: int | None = None
    trial_time_limit: float | None = None            # seconds of training per trial
    seed: int = 0
    measure_band: float = 0.15                       # profile on QEMU when the prediction is this close to the budget
    cost_model: dict = field(default_factory=dict)   # CostModel.to_json() without the raw samples
    weight_bits: str = "sampled"                     # "sampled" (drawn per block) or "hawq" (nas/hawq.py)

    def to_json(self) -> dict:
        d = asdict(self)
        d["budget"] = asdict(self.budget)
        return d

    @staticmethod
    def from_json(d: dict) -> "NasConfig":
        d = dict(d)
        d["budget"] = Budget(**d["budget"])
        return NasConfig(**d)

    def identity(self) -> dict:
        """What must match to resume a study (the trial count and cost model may differ)."""
        d = self.to_json()
        d.pop("cost_model", None)
        return d


# Training defaults follow the training set's size: with 32 series and a batch of 64 an
# epoch is one optimizer step, and no architecture learns anything in 6 of them.
MIN_BATCH, MAX_BATCH = 8, 64
MIN_STEPS = 120          # optimizer steps per trial at least (when the epoch cap allows)
MIN_EPOCHS, MAX_EPOCHS = 6, 60


def training_defaults(n_train: int) -> dict:
    """Batch size, most epochs and patience for ``n_train`` training samples:
    batch = clamp(n_train / 8, 8, 64) (at least 8 steps an epoch where the data allows),
    epochs = clamp(ceil(120 / steps per epoch), 6, 60) (at least 120 optimizer steps),
    patience = max(2, epochs / 5). HAR (6,362 windows): batch 64, 6 epochs, patience 2;
    BasicMotions (32 series): batch 8, 30 epochs, patience 6."""
    n = max(1, int(n_train))
    batch = min(MAX_BATCH, max(MIN_BATCH, n // 8))
    steps = -(-n // batch)
    epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, -(-MIN_STEPS // steps)))
    return {"batch": batch, "max_epochs": epochs, "patience": max(2, epochs // 5)}


def resolve_training(config: "NasConfig", n_train: int) -> list[str]:
    """Fill the training settings left at None from the training set's size (explicit
    values win); returns the names of the ones filled."""
    filled = []
    for name, value in training_defaults(n_train).items():
        if getattr(config, name) is None:
            setattr(config, name, value)
            filled.append(name)
    return filled


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{int(n)} B"




def board_of(config: NasConfig):
    """The board the search fits (a ``targets.Board``)."""
    from ..targets import get_board

    return get_board(config.board)
