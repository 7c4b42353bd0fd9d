"""The README's two examples print what the README shows: the `ttplan layer` command and the Python snippet."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

from tests.helpers.cli import run

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> list[tuple[str, str]]:
    """Every fenced block of the README as (language, text), in order."""
    return re.findall(r"^```(\w*)\n(.*?)^```$", README.read_text(), flags=re.M | re.S)


def _example(language: str, start: str) -> tuple[str, str]:
    """The first `language` block starting with `start`, and the plain block right after it (its output)."""
    blocks = _blocks()
    index = next(i for i, (lang, text) in enumerate(blocks) if lang == language and text.startswith(start))
    assert blocks[index + 1][0] == "", f"the {language} example is not followed by its output"
    return blocks[index][1], blocks[index + 1][1]


def test_the_cli_example_prints_what_the_readme_shows():
    command, shown = _example("bash", "ttplan layer ")
    args = shlex.split(command.replace("\\\n", " "))
    assert args[:2] == ["ttplan", "layer"], args
    result = run(args[1:])
    assert result.exit_code == 0, result.output
    assert result.stdout == shown, "rerun the README's `ttplan layer` example and paste its output"


def test_the_python_example_prints_what_the_readme_shows():
    source, shown = _example("python", "import ttplan")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, "README.md", "exec"), {})
    assert out.getvalue() == shown
