"""The one error type users see: bad input, told in one line."""


class TTPlanError(ValueError):
    """Bad input: the message names the bad value and what would be accepted."""
