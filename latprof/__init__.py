"""latprof: measure convolution latency, fit its staircase, prune to a latency target."""

__version__ = "0.1.0"

from latprof.errors import LatprofError  # noqa: E402

__all__ = ["LatprofError", "__version__"]
