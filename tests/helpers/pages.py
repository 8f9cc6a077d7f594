"""What the page tests share: a search's summary and trial rows made up in the shape
edgekit/nas/finalize.py writes them (so a search page renders without training), and a
reader of a page's DOM."""
from __future__ import annotations

from html.parser import HTMLParser

from edgekit.nas.config import Budget, NasConfig
from edgekit.nas.trials import pareto_front

#: latencies spanning 0.15 ms .. 1,075 ms, the spread that hid trials on a linear axis (issue 14)
LATENCIES_MS = (0.15, 0.4, 1.2, 3.5, 7.0, 11.0, 18.0, 26.0, 95.0, 612.0, 1075.0, 0.9)
ACCURACIES = (0.61, 0.72, 0.80, 0.86, 0.88, 0.90, 0.91, 0.93, 0.94, None, None, 0.55)


def search_results() -> tuple[dict, list[dict], list[dict], NasConfig]:
    """(summary, rows, front, config) of a 12-trial search: 9 trained, 2 over budget before
    training, 1 pruned; budgets 20 ms and 64 KiB; a 4-class data set (chance 0.25)."""
    config = NasConfig(board="nucleo-l4r5zi", target="cortex-m4",
                       budget=Budget(max_ram=64 * 1024, max_latency_ms=20.0))
    rows = []
    for n, (lat, acc) in enumerate(zip(LATENCIES_MS, ACCURACIES)):
        ram = 9_000 + 5_000 * n
        cons = config.budget.violations(ram, 0, lat)
        trained = acc is not None
        rows.append({"number": n, "state": "PRUNED" if n == 11 else "COMPLETE",
                     "status": "feasible" if max(cons) <= 0 else "infeasible",
                     "reason": "" if max(cons) <= 0 else "over budget", "arch": f"1D c{4 * (n + 1)}k3 w8a8, fc4",
                     "val_accuracy": acc, "test_accuracy": acc and acc - 0.01, "latency_ms": lat, "ram_bytes": ram,
                     "flash_bytes": 4_000 + 900 * n, "macs": 10_000 * (n + 1), "constraints": cons,
                     "feasible": trained and max(cons) <= 0, "trained": trained, "epochs": 3 if trained else None,
                     "seconds": 4.5 if trained else None})
    front = pareto_front([r for r in rows if r["trained"]])
    summary = {
        "board": config.board, "target": config.target, "clock_hz": 120_000_000,
        "budget": {"max_ram": config.budget.max_ram, "max_flash": None, "max_latency_ms": 20.0},
        "dataset": "basicmotions", "dataset_description": "BasicMotions (4 classes)",
        "trials": {"total": len(rows), "finished": len(rows), "trained": sum(r["trained"] for r in rows),
                   "feasible": sum(r["feasible"] for r in rows), "infeasible_untrained": 2, "invalid_or_failed": 0},
        "cost_model": {"core": "cortex-m4", "n_fit": 0, "board": "mps2-an386", "holdout": {},
                       "holdout_near_budget": None},
        "pareto": front, "checked": [], "best": None, "feasible": False, "nearest": [],
        "training": {"max_epochs": 30, "patience": 6, "train_subset": None, "final_epochs": 0},
        "chance": {"val": 0.25, "test": 0.25, "n_val": 40, "standard_error": 0.068, "margin": 0.205,
                   "threshold": 0.455},
    }
    return summary, rows, front, config


class Dom(HTMLParser):
    """Tag counts, attribute values and the text of a page (the DOM chromium dumped)."""

    def __init__(self, html: str):
        super().__init__()
        self.tags: dict[str, int] = {}
        self.links: list[str] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        self.links += [v for k, v in attrs if k in ("src", "href") and v is not None]

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_data(self, data):
        if data.strip():
            self.text.append(data.strip())

    def count(self, tag: str) -> int:
        return self.tags.get(tag, 0)

    @property
    def all_text(self) -> str:
        return " ".join(self.text)
