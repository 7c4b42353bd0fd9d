"""`ttplan.bench.model` is a package without an import cycle, and its `__main__` is the fresh-process child."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import ttplan.bench.model as package
from ttplan.bench.model.processes import CHILD

PACKAGE = Path(package.__file__).parent
NAME = "ttplan.bench.model"


def _imports(path: Path) -> set[str]:
    """The modules of this package that `path` imports anywhere (module level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(NAME):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names if (PACKAGE / f"{a.name}.py").is_file())
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith(NAME))
    return out


def test_the_package_modules_import_each_other_without_a_cycle():
    graph = {(NAME if p.stem == "__init__" else f"{NAME}.{p.stem}"): _imports(p) for p in PACKAGE.glob("*.py")}
    assert {f"{NAME}.measure", f"{NAME}.processes", f"{NAME}.report", f"{NAME}.__main__"} <= set(graph)
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join((*path, module))
        if module in done:
            return
        for target in graph.get(module, ()):
            visit(target, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())
    assert all(NAME not in targets for module, targets in graph.items() if module != NAME), graph


def test_the_child_entry_point_is_this_package_and_answers_in_one_line():
    from ttplan.bench.model import ChildRequest
    from ttplan.core.latency import LatencyProfile, OpModel

    assert CHILD == NAME and (PACKAGE / "__main__.py").is_file()
    profile = LatencyProfile("macs", "cpu", 1, "test", {"dense:any": OpModel(0.0, 0.0, 1.0)})
    request = ChildRequest({"arch": "resnet999", "batch": 1, "threads": 1}, profile.to_dict(), 1)
    done = subprocess.run([sys.executable, "-m", CHILD], input=json.dumps(asdict(request)), capture_output=True,
                          text=True, check=False, cwd=Path(__file__).parents[2])
    assert done.returncode == 2 and done.stdout == "", done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "resnet999" in last, done.stderr
