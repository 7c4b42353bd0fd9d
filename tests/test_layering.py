"""The layering docs/architecture.md states: each package of ttplan imports only from the packages above it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ttplan"
#: docs/architecture.md's list, top to bottom; the base modules (errors, files, user_code) are above all of them
ORDER = ("core", "models", "runtime", "latency", "arch", "analysis", "training", "bench", "cli")
BASE = {"errors", "files", "user_code"}


def _imported(path: Path) -> set[str]:
    """The ttplan packages and base modules `path` imports anywhere (module level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
        out.update(name.split(".")[1] for name in names if name.startswith("ttplan."))
    return out


def test_every_package_imports_only_from_the_packages_above_it():
    assert {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()} == set(ORDER)
    wrong = []
    for rank, package in enumerate(ORDER):
        allowed = BASE | set(ORDER[: rank + 1])
        for path in sorted((PACKAGE / package).rglob("*.py")):
            wrong += [f"{path.relative_to(PACKAGE.parent)} imports ttplan.{target}"
                      for target in sorted(_imported(path) - allowed)]
    assert not wrong, "\n".join(wrong)


def test_the_base_modules_import_only_each_other():
    for name in BASE:
        assert _imported(PACKAGE / f"{name}.py") <= BASE, name
