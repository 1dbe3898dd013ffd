"""The one user-facing error type.

A `LatprofError` is a user error, not a bug: the CLI prints its message and exits 1
without a traceback. Messages say what went wrong, why, and the command that fixes it.
"""


class LatprofError(Exception):
    """Bad input or an environment that cannot do what was asked."""
