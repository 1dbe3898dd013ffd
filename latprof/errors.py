"""The one user-facing error type.

A `LatprofError` is a user error, not a bug: the CLI prints its message and exits 1
without a traceback. Messages say what went wrong, why, and the command that fixes it.
"""


class LatprofError(Exception):
    """Bad input or an environment that cannot do what was asked."""


class Unreachable(LatprofError):
    """A latency target no configuration of the search space meets (the message says how close
    the smallest one comes; `smallest` is that latency as text); `latprof prune` may widen the
    space and try again."""

    def __init__(self, message: str, smallest: str = ""):
        super().__init__(message)
        self.smallest = smallest
