"""The test tree's own rules: every folder is a package (so two test files may share a basename)."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_every_test_folder_is_a_package():
    folders = {p.parent for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts}
    missing = sorted(str(f.relative_to(TESTS.parent)) for f in folders if not (f / "__init__.py").is_file())
    assert not missing, f"add an __init__.py to {', '.join(missing)}: without it pytest imports its test files by " \
                        "basename, and one sharing a name with another folder's fails to import"
