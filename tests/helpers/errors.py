"""The library-side twin of `cli.one_line_error`: a call raises one `TTPlanError` of one line naming every needle."""

from __future__ import annotations

import pytest

from ttplan.errors import TTPlanError


def one_line(call, *needles: str) -> None:
    """Assert `call()` raises a one-line TTPlanError containing every needle."""
    with pytest.raises(TTPlanError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
