"""Layer contracts: data flows frontends -> ir -> {sim, backends} -> build/verify/api -> cli.

The layer and independence contracts are import-linter's (`.importlinter` at the top of
the repository, run here through its Python API so `make test` enforces them). Two rules
import-linter does not express are checked on grimp's import graph: no import cycle
anywhere inside edgekit, and no private name (`_x`) used across modules.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "edgekit"


def _lint_imports(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                           "sys.exit(lint_imports_command())", str(config), "--no-cache"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_import_linter_contracts_hold():
    proc = _lint_imports(ROOT / ".importlinter")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_import_linter_contracts_can_fail(tmp_path):
    """The same tool on a contract the code breaks (the IR above its front ends) reports it."""
    config = tmp_path / "reversed.ini"
    config.write_text("[importlinter]\nroot_package = edgekit\n\n[importlinter:contract:reversed]\n"
                      "name = reversed\ntype = layers\nlayers =\n    edgekit.ir\n    edgekit.frontends\n")
    proc = _lint_imports(config)
    assert proc.returncode != 0 and "BROKEN" in proc.stdout, proc.stdout[-3000:]


def _import_cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.append(m)
                    if m == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_no_import_cycles_inside_edgekit():
    cycles = _import_cycles(grimp.build_graph("edgekit"))
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def _module_name(path: Path, top: Path) -> str:
    rel = path.relative_to(top).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def private_names_across_modules(package: Path = PACKAGE) -> list[str]:
    """`from edgekit.x import _y` and `x._y` on an imported edgekit module, anywhere in edgekit."""
    found = []
    top = package.parent
    for path in sorted(package.rglob("*.py")):
        module = _module_name(path, top)
        tree = ast.parse(path.read_text(), str(path))
        imported_modules: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = _resolve(module, path.name == "__init__.py", node.level, node.module)
                if not source.startswith("edgekit"):
                    continue
                for alias in node.names:
                    target = f"{source}.{alias.name}"
                    if (top / (target.replace(".", "/") + ".py")).exists() or \
                            (top / target.replace(".", "/") / "__init__.py").exists():
                        imported_modules[alias.asname or alias.name] = target
                    elif alias.name.startswith("_") and not alias.name.startswith("__") and source != module:
                        found.append(f"{module}: from {source} import {alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("edgekit") and alias.asname:
                        imported_modules[alias.asname] = alias.name
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id in imported_modules and node.attr.startswith("_") \
                    and not node.attr.startswith("__") and imported_modules[node.value.id] != module:
                found.append(f"{module}: {imported_modules[node.value.id]}.{node.attr}")
    return sorted(set(found))


def test_no_private_name_imported_across_modules():
    found = private_names_across_modules()
    assert not found, "private names used across modules:\n" + "\n".join(found)


def test_private_name_check_can_fail(tmp_path):
    """The checker finds both forms (guards against a check that cannot fail)."""
    package = tmp_path / "edgekit"
    (package / "ir").mkdir(parents=True)
    for name in ("__init__.py", "errors.py", "ir/__init__.py", "ir/contract.py"):
        (package / name).write_text("")
    (package / "probe.py").write_text("from edgekit.ir import contract as c\nfrom edgekit.errors import _hidden\n"
                                      "from .ir.contract import public\nx = c._private\n")
    found = private_names_across_modules(package)
    assert found == ["edgekit.probe: edgekit.ir.contract._private", "edgekit.probe: from edgekit.errors import _hidden"]
