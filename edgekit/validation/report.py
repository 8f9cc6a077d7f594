"""The result of ``edgekit validate``: JSON (headline metrics at the top level) and readable text."""
from __future__ import annotations

from dataclasses import dataclass

from ..stages import VerifyReport


@dataclass
class ValidationReport:
    build_dir: str
    board: str
    frontend: str
    input_source: str
    float_reference: str | None  # what the float outputs came from; None: no float reference
    max_drop: float | None  # accuracy points allowed to be lost (classifiers)
    result: dict  # the metrics (metrics.classification / metrics.regression and the float reference's)
    firmware: VerifyReport | None  # verify on the first samples; None when no sample went through it
    written: str | None = None  # validate.json in the build directory

    @property
    def classifier(self) -> bool:
        return self.result["task"] == "classification"

    @property
    def drop_exceeded(self) -> bool:
        drop = self.result.get("accuracy_drop")
        return self.max_drop is not None and drop is not None and drop > self.max_drop

    @property
    def ok(self) -> bool:
        """The firmware subset exact in every stage that must be, and the drop within --max-drop."""
        return (self.firmware is None or self.firmware.ok) and not self.drop_exceeded

    def to_json(self) -> dict:
        fw = self.firmware.to_json() if self.firmware is not None else None
        head = (["accuracy", "float_accuracy", "accuracy_drop"] if self.classifier
                else ["rmse", "cosine", "max_error", "float_rmse", "float_cosine"])
        d = {k: self.result.get(k) for k in head}
        d.update({k: v for k, v in self.result.items() if k not in d})
        d.update(build_dir=self.build_dir, board=self.board, frontend=self.frontend, input_source=self.input_source,
                 float_reference=self.float_reference, max_drop=self.max_drop,
                 drop_exceeded=self.drop_exceeded if self.classifier else None,
                 firmware_vectors=self.firmware.vectors if self.firmware is not None else 0,
                 firmware_exact=self.firmware.ok if self.firmware is not None else None,
                 emulated_board=(fw or {}).get("emulated_board"), firmware=fw, ok=self.ok)
        return d

    # --- text ---
    def text(self) -> str:
        r = self.result
        lines = [f"edgekit validate {self.build_dir}: {r['samples']} samples ({self.input_source}), "
                 f"{'classifier, ' + str(len(r['per_class'])) + ' classes' if self.classifier else 'regressor'}",
                 f"float reference: {self.float_reference or 'none (a TFLite build: give --float-model model.onnx)'}"]
        lines += self.classifier_lines() if self.classifier else self.regressor_lines()
        lines += self.firmware_lines()
        if self.written:
            lines.append(f"wrote {self.written}")
        lines.append(self.verdict())
        return "\n".join(lines)

    def classifier_lines(self) -> list[str]:
        r = self.result
        lines = [f"{'accuracy (integer model)':<32}{100 * r['accuracy']:>8.2f}%  ({r['correct']}/{r['samples']})"]
        if r.get("float_accuracy") is not None:
            lines += [f"{'accuracy (float reference)':<32}{100 * r['float_accuracy']:>8.2f}%",
                      f"{'accuracy drop':<32}{r['accuracy_drop']:>8.2f} points"
                      + (f"  (at most {self.max_drop:g} allowed: {'EXCEEDED' if self.drop_exceeded else 'ok'})"
                         if self.max_drop is not None else ""),
                      f"{'same top-1 class as the float':<32}{100 * r['agreement']:>8.2f}% of samples"]
        cm = r["confusion_matrix"]
        width = max(5, len(str(max(max(row) for row in cm))) + 1)
        lines += ["per class:", f"{'class':>7}{'samples':>9}{'correct':>9}{'accuracy':>10}"]
        for c in r["per_class"]:
            acc = f"{100 * c['accuracy']:.1f}%" if c["accuracy"] is not None else "-"
            lines.append(f"{c['class']:>7}{c['samples']:>9}{c['correct']:>9}{acc:>10}")
        lines += ["confusion matrix (rows: true class, columns: predicted class):",
                  " " * 7 + "".join(f"{j:>{width}}" for j in range(len(cm)))]
        lines += [f"{i:>7}" + "".join(f"{v:>{width}}" for v in row) for i, row in enumerate(cm)]
        return lines

    def regressor_lines(self) -> list[str]:
        r = self.result

        def fmt(v):
            return "-" if v is None else f"{v:.6g}"

        lines = [f"{'':<28}{'rmse':>12}{'max error':>12}{'cosine':>12}",
                 f"{'integer model vs targets':<28}{fmt(r['rmse']):>12}{fmt(r['max_error']):>12}{fmt(r['cosine']):>12}"]
        if r.get("against_float") is not None:
            a = r["against_float"]
            lines += [f"{'float model vs targets':<28}{fmt(r['float_rmse']):>12}{fmt(r['float_max_error']):>12}"
                      f"{fmt(r['float_cosine']):>12}",
                      f"{'integer model vs float':<28}{fmt(a['rmse']):>12}{fmt(a['max_error']):>12}"
                      f"{fmt(a['cosine']):>12}"]
        return lines

    def firmware_lines(self) -> list[str]:
        fw = self.firmware
        if fw is None:
            return ["firmware: not run (--firmware-count 0); the metrics are the integer simulator's"]
        standin = fw.extra.get("emulated_board")
        where = (f" on {standin}" + (f" (stand-in for {fw.board}, the same core)" if standin != fw.board else "")
                 if standin else "")
        ran = [s.stage for s in fw.stages[1:] if s.elements and s.must_be_exact]  # [0] is the simulator itself
        if fw.ok:
            return [f"firmware: the first {fw.vectors} samples{where} give the simulator's outputs exactly "
                    f"({', '.join(ran)}): the metrics above are the simulator's, bit-exact with the firmware"]
        bad = [f"{s.stage}: {s.mismatches}/{s.elements} differ" for s in fw.stages if not s.ok]
        return [f"firmware: the first {fw.vectors} samples{where}: FAIL, {'; '.join(bad)} (edgekit verify shows "
                "the stages)"]

    def verdict(self) -> str:
        if self.ok:
            return "PASS" + (f": accuracy drop within {self.max_drop:g} points" if self.max_drop is not None else "")
        why = []
        if self.firmware is not None and not self.firmware.ok:
            why.append("a stage that must be exact differs from the simulator")
        if self.drop_exceeded:
            why.append(f"the accuracy drop {self.result['accuracy_drop']:.2f} points exceeds --max-drop "
                       f"{self.max_drop:g}")
        return "FAIL: " + "; ".join(why)
