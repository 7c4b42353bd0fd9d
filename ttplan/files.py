"""Reading files a user points ttplan at: every way they can be wrong is one line saying what was expected."""

from __future__ import annotations

import json
from pathlib import Path

from ttplan.errors import TTPlanError


def read_user_text(path: str | Path, what: str, expected: str) -> str:
    """The text of `path`; a missing, non-UTF-8 or empty file is a one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise TTPlanError(f"{what} {str(path)!r} does not exist or is not a file: expected {expected}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TTPlanError(f"{what} {str(path)!r} is not UTF-8 text: expected {expected}") from None
    if not text.strip():
        raise TTPlanError(f"{what} {str(path)!r} is empty: expected {expected}")
    return text


def read_user_json(path: str | Path, what: str, expected: str) -> object:
    """Parse `path` as JSON, with `read_user_text`'s errors plus one for invalid JSON."""
    text = read_user_text(path, what, expected)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise TTPlanError(
            f"{what} {str(path)!r} is not valid JSON ({err.msg} at line {err.lineno}): expected {expected}"
        ) from None
