"""The code's shape, checked: no import cycle among kpi's modules (counting imports inside
functions, so none hides behind a lazy import), the configuration importable without pandas,
one home per shared constant, and DAG files of one import and one call per task."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "kpi"


def imported_modules(path: Path) -> set[str]:
    """The kpi modules `path` imports, at the top or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("kpi.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "kpi":  # `from kpi import words`: a module, or __init__'s name
                found |= {f"kpi.{alias.name}" for alias in node.names
                          if (PACKAGE / f"{alias.name}.py").is_file()}
            elif node.module.startswith("kpi."):
                found.add(node.module)
    return found


def import_graph() -> dict[str, set[str]]:
    return {f"kpi.{path.stem}": imported_modules(path) for path in PACKAGE.glob("*.py")
            if path.stem != "__init__"}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every module that can reach itself, with one path back to it."""
    found = []
    for start in sorted(graph):
        paths = [[start]]
        seen = set()
        while paths:
            path = paths.pop()
            for after in sorted(graph.get(path[-1], ())):
                if after == start:
                    found.append([*path, start])
                    paths = []
                    break
                if after not in seen:
                    seen.add(after)
                    paths.append([*path, after])
    return found


def test_the_cycle_finder_finds_a_cycle_through_a_lazy_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from kpi.b import x\n")
    assert imported_modules(module) == {"kpi.b"}
    assert cycles({"kpi.a": {"kpi.b"}, "kpi.b": {"kpi.c"}, "kpi.c": {"kpi.a"}})[0] == [
        "kpi.a", "kpi.b", "kpi.c", "kpi.a"]
    assert cycles({"kpi.a": {"kpi.b"}, "kpi.b": set()}) == []


def test_no_module_of_kpi_imports_itself_back():
    assert cycles(import_graph()) == []


def test_importing_the_configuration_and_settings_does_not_import_pandas():
    code = ("import sys, kpi.config, kpi.settings, kpi.days; "
            "print(sorted(m for m in ('pandas', 'numpy', 'altair') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


SHARED = {"DAY_MS", "EPOCH", "EPOCH_DAY", "EPOCH_ORDINAL", "SITES_FIELDS"}


def test_each_shared_constant_is_defined_once():
    homes: dict[str, list[str]] = {}
    for path in [*PACKAGE.glob("*.py"), *(ROOT / "fake_source").glob("*.py")]:
        for node in ast.parse(path.read_text()).body:
            targets = (node.targets if isinstance(node, ast.Assign) else
                       [node.target] if isinstance(node, ast.AnnAssign) else [])
            for target in targets:
                if isinstance(target, ast.Name) and target.id in SHARED:
                    homes.setdefault(target.id, []).append(path.relative_to(ROOT).as_posix())
    assert {name: places for name, places in homes.items() if len(places) > 1} == {}


def test_each_dag_task_is_one_call_into_kpi_airflow():
    """DAG files import their task entry points from `kpi.airflow`; each task body is one
    call to one of them."""
    for path in (ROOT / "dags").glob("*.py"):
        tree = ast.parse(path.read_text())
        entry_points = {alias.asname or alias.name for node in tree.body
                        if isinstance(node, ast.ImportFrom) and node.module == "kpi.airflow"
                        for alias in node.names}
        tasks = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
                 and any(ast.unparse(d).startswith("task") for d in node.decorator_list)]
        assert tasks, path.name
        for node in tasks:
            body = [s for s in node.body if not (isinstance(s, ast.Expr)
                                                 and isinstance(s.value, ast.Constant))]
            assert len(body) == 1 and isinstance(body[0], ast.Return), f"{path.name}:{node.name}"
            call = body[0].value
            assert isinstance(call, ast.Call) and isinstance(call.func, ast.Name), node.name
            assert call.func.id in entry_points, f"{path.name}:{node.name}: {call.func.id}"
