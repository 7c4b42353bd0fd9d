"""The output option group (`--json`/`--csv`/`--markdown`, `--out FILE`) and writing a command's result.

Output paths are checked while the options are parsed, before any work (`ttplan.files.check_writable`);
files are written atomically and "wrote PATH" / "replaced PATH" goes to stderr, so stdout stays the data.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import click

from ttplan.errors import TTPlanError
from ttplan.files import atomic_write_text, check_writable, written

FLAGS = {"json": "Write JSON.", "csv": "Write CSV.", "markdown": "Write Markdown."}
SUFFIXES = {".json": "json", ".csv": "csv", ".md": "markdown"}


def checked_path(ctx: click.Context, param: click.Parameter, value: str | None) -> Path | None:
    """Click callback: the output path, refused in one line if it cannot be written (before any work)."""
    if value is None:
        return None
    return check_writable(value, f"--{param.name.replace('_', '-')}" if param.name else "--out")


def out_option(help_text: str, name: str = "--out", default: str | None = None, **kwargs) -> Callable:
    """A path option checked for writability as soon as it is parsed."""
    return click.option(name, type=click.Path(), default=default, callback=checked_path, help=help_text,
                        show_default=default is not None, **kwargs)


def output_options(formats: tuple[str, ...] = ("json", "csv", "markdown"), *, out_help: str | None = None,
                   wide: bool = False) -> Callable[[Callable], Callable]:
    """`--json`/`--csv`/`--markdown` (at most one; passed on as `output`), `--out FILE`, and `--wide` if asked.

    The command receives `output` (the flag's format, else the `--out` suffix's, else None) and `out`.
    """
    out_help = out_help or ("Write to this file instead of stdout (format from the flag or the suffix: "
                            + ", ".join(s for s, f in SUFFIXES.items() if f in formats) + ").")

    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            chosen = [f for f in formats if kwargs.pop(f"as_{f}")]
            if len(chosen) > 1:
                raise TTPlanError(f"{' and '.join('--' + f for f in chosen)} both given: choose one output format")
            out = kwargs.get("out")
            output = chosen[0] if chosen else (SUFFIXES.get(out.suffix.lower()) if out is not None else None)
            return func(*args, output=output if output in formats else None, **kwargs)

        options = [click.option(f"--{f}", f"as_{f}", is_flag=True, help=FLAGS[f]) for f in formats]
        options.append(out_option(out_help))
        if wide:
            options.append(click.option("--wide", is_flag=True,
                                        help="Every column in the text table (the default fits 120 columns)."))
        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper

    return decorate


def emit_text(text: str, out: Path | None, detail: str = "") -> bool:
    """Print `text` on stdout, or write it to `out` atomically and say so on stderr; True if a file was replaced."""
    if not text.endswith("\n"):
        text += "\n"
    if out is None:
        click.echo(text, nl=False)
        return False
    replaced = atomic_write_text(out, text)
    click.echo(written(out, replaced) + detail, err=True)
    return replaced


def warn(lines: list[str]) -> None:
    """Each line on stderr as `warning: …` (stdout stays data)."""
    for line in lines:
        click.echo(f"warning: {line}", err=True)
