"""Reading a study back: one plain dict per trial (what the progress display, the report
and the checks use), the Pareto front, the nearest infeasible trials, and the one-line
reason a trial or a check failed."""
from __future__ import annotations

from ..errors import EdgekitError


def failure_reason(e: BaseException) -> str:
    """One line for a trial's or a check's failure; exceptions other than EdgekitError are
    bugs (in edgekit), named as such."""
    text = (str(e).strip().splitlines() or [""])[0][:400]
    return text if isinstance(e, EdgekitError) else f"internal error ({type(e).__name__}: {text})"


def trial_rows(study) -> list[dict]:
    """One plain dict per trial (what the report and the progress display show)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        m = ua.get("metrics") or {}
        cons = ua.get("constraints")
        trained = "train" in ua
        rows.append({
            "number": t.number, "state": t.state.name, "status": ua.get("status", t.state.name.lower()),
            "reason": ua.get("reason", ""), "arch": ua.get("describe", ""), "arch_json": ua.get("arch"),
            "val_accuracy": (t.values[0] if (t.values and trained) else None),
            "test_accuracy": ua.get("test_accuracy"), "latency_ms": m.get("latency_ms"),
            "pred_instructions": m.get("pred_instructions"), "pred_cycles": m.get("pred_cycles"),
            "ram_bytes": m.get("ram_bytes"), "flash_bytes": m.get("flash_bytes"),
            "arena_bytes": m.get("arena_bytes"), "macs": m.get("macs"), "constraints": cons,
            "feasible": bool(cons is not None and max(cons) <= 0 and trained),
            "trained": trained, "epochs": (ua.get("train") or {}).get("epochs_run"),
            "seconds": ua.get("seconds"), "worker": ua.get("worker", ""), "artifact": ua.get("artifact"),
            "stage": ua.get("stage", ""),
        })
    return rows


def pareto_front(rows: list[dict]) -> list[dict]:
    """Feasible trained trials not dominated in (val accuracy max, latency min, RAM min)."""
    pts = [r for r in rows if r["feasible"]]

    def dominates(a, b):
        ge = (a["val_accuracy"] >= b["val_accuracy"] and a["latency_ms"] <= b["latency_ms"]
              and a["ram_bytes"] <= b["ram_bytes"])
        gt = (a["val_accuracy"] > b["val_accuracy"] or a["latency_ms"] < b["latency_ms"]
              or a["ram_bytes"] < b["ram_bytes"])
        return ge and gt

    front = [p for p in pts if not any(dominates(q, p) for q in pts if q is not p)]
    return sorted(front, key=lambda r: (-r["val_accuracy"], r["latency_ms"], r["ram_bytes"]))


def nearest_infeasible(rows: list[dict], k: int = 5) -> list[dict]:
    """Trials that came closest to the budgets: smallest sum of positive relative excesses."""
    cand = [r for r in rows if r["constraints"] is not None]
    return sorted(cand, key=lambda r: (sum(max(0.0, c) for c in r["constraints"]),
                                       -(r["val_accuracy"] or 0.0)))[:k]


def trial_rows_one(frozen) -> list[dict]:
    """trial_rows for one FrozenTrial (the in-process callback)."""
    class _S:
        def get_trials(self, deepcopy=False):
            return [frozen]
    return trial_rows(_S())
