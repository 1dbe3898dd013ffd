"""The shared value types: what is measured (`ConvSpec`), the table rows a model is read from
(`Context`), and what was observed (`Measurement`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from latprof.errors import LatprofError

DTYPES = ("float32", "float16", "bfloat16")
LAYOUTS = ("nchw", "nhwc")
BACKENDS = ("cpu", "cudnn", "triton")
#: What a row times: a 2-D convolution, or a Linear layer (a GEMM: `h` x `w` rows of `c_in`
#: features per image, e.g. a ConvNeXt block's pointwise layers on H x W tokens, a classifier on
#: 1 x 1). A linear spec has kernel 1, stride 1, no padding and one group.
OPS = ("conv2d", "linear")


@dataclass(frozen=True, order=True)
class ConvSpec:
    """One 2-D convolution forward pass to time (or, with op "linear", one Linear layer's GEMM).

    `h`, `w` are the *input* spatial size (of a linear spec: its tokens per image); `tile` is
    the Triton tile config as text ("" for backends that choose their own). Every field is part
    of the table key.
    """

    c_in: int
    c_out: int
    h: int
    w: int
    kernel_h: int = 3
    kernel_w: int = 3
    stride_h: int = 1
    stride_w: int = 1
    pad_h: int = 1
    pad_w: int = 1
    dilation_h: int = 1
    dilation_w: int = 1
    groups: int = 1
    batch: int = 1
    dtype: str = "float32"
    layout: str = "nchw"
    backend: str = "cpu"
    tile: str = ""
    op: str = "conv2d"

    def __post_init__(self) -> None:
        for name in ("c_in", "c_out", "h", "w", "kernel_h", "kernel_w", "stride_h", "stride_w",
                     "dilation_h", "dilation_w", "groups", "batch"):
            if getattr(self, name) < 1:
                raise LatprofError(f"{name} must be >= 1 in {self.label()}")
        if self.pad_h < 0 or self.pad_w < 0:
            raise LatprofError(f"padding must be >= 0 in {self.label()}")
        if self.c_in % self.groups or self.c_out % self.groups:
            raise LatprofError(
                f"c_in={self.c_in} and c_out={self.c_out} must both be divisible by groups={self.groups}")
        if self.dtype not in DTYPES:
            raise LatprofError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        if self.layout not in LAYOUTS:
            raise LatprofError(f"unknown layout {self.layout!r}; choose one of {', '.join(LAYOUTS)}")
        if self.backend not in BACKENDS:
            raise LatprofError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.op not in OPS:
            raise LatprofError(f"unknown op {self.op!r}; choose one of {', '.join(OPS)}")
        ones = (self.kernel_h, self.kernel_w, self.stride_h, self.stride_w, self.dilation_h, self.dilation_w,
                self.groups)
        if self.op == "linear" and (set(ones) != {1} or self.pad_h or self.pad_w):
            raise LatprofError("a linear spec has kernel 1, stride 1, padding 0, dilation 1 and one group; "
                               f"got {self.label()} k{self.kernel_h}x{self.kernel_w} g{self.groups}")
        if self.h_out < 1 or self.w_out < 1:
            raise LatprofError(f"the output of {self.label()} would be empty")

    @property
    def h_out(self) -> int:
        return (self.h + 2 * self.pad_h - self.dilation_h * (self.kernel_h - 1) - 1) // self.stride_h + 1

    @property
    def w_out(self) -> int:
        return (self.w + 2 * self.pad_w - self.dilation_w * (self.kernel_w - 1) - 1) // self.stride_w + 1

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.c_in == self.c_out

    def macs(self) -> int:
        """Multiply-accumulates of the forward pass (bias excluded)."""
        per_out = (self.c_in // self.groups) * self.kernel_h * self.kernel_w
        return self.batch * self.c_out * self.h_out * self.w_out * per_out

    def replace(self, **changes) -> "ConvSpec":
        return dataclasses.replace(self, **changes)

    def to_row(self) -> dict:
        return dataclasses.asdict(self)

    def key(self) -> tuple:
        """The table's unique key for this spec: every field, in `KEY_FIELDS` order. (Not
        `dataclasses.astuple`, which deep-copies: 100 us a call, and fits call this per count.)"""
        return tuple(getattr(self, name) for name in _FIELD_NAMES)

    @classmethod
    def from_row(cls, row) -> "ConvSpec":
        return cls(**{f.name: _py(row[f.name]) for f in dataclasses.fields(cls)})

    def label(self) -> str:
        k = f"{self.kernel_h}x{self.kernel_w}" if self.kernel_h != self.kernel_w else f"{self.kernel_h}"
        s = f"/s{self.stride_h}" if self.stride_h == self.stride_w else f"/s{self.stride_h}x{self.stride_w}"
        g = f" g{self.groups}" if self.groups > 1 else ""
        t = f" tile={self.tile}" if self.tile else ""
        if self.op == "linear":
            return (f"linear {self.c_in}->{self.c_out} @{self.h}x{self.w} tokens b{self.batch} "
                    f"{self.dtype} [{self.backend}{t}]")
        return (f"{self.c_in}->{self.c_out} k{k}{s}{g} @{self.h}x{self.w} b{self.batch} "
                f"{self.dtype} {self.layout} [{self.backend}{t}]")


KEY_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ConvSpec))
_FIELD_NAMES = KEY_FIELDS


def _py(value):
    """numpy scalars from a DataFrame row back to plain Python values."""
    return value.item() if hasattr(value, "item") else value


@dataclass(frozen=True)
class Context:
    """The measurement conditions a model is swept, read or priced under: one (batch, dtype,
    layout, backend, tile) combination of a table. Travels as one value instead of five arguments."""

    batch: int = 1
    dtype: str = "float32"
    layout: str = "nchw"
    backend: str = "cpu"
    tile: str = ""

    def apply(self, spec: ConvSpec) -> ConvSpec:
        """`spec` (a layer's own shape) under these conditions."""
        return spec.replace(batch=self.batch, dtype=self.dtype, layout=self.layout, backend=self.backend,
                            tile=self.tile)

    def label(self) -> str:
        tile = f" tile {self.tile}" if self.tile else ""
        return f"batch {self.batch} {self.dtype} {self.layout} {self.backend}{tile}"


@dataclass(frozen=True)
class Measurement:
    """What one shape's samples showed: the measurement columns of a table row
    (`tables.io.MEASUREMENT_COLUMNS` declares their types and meaning; a test keeps the two equal).
    Latencies are per call, in microseconds."""

    latency_us_p50: float
    latency_us_p10: float
    latency_us_p25: float
    latency_us_p75: float
    latency_us_p90: float
    latency_us_min: float
    latency_us_mean: float
    rel_iqr: float
    latency_norm_us_p50: float
    latency_norm_us_p25: float
    latency_norm_us_p75: float
    rel_iqr_norm: float
    ref_us_p50: float
    ref_baseline_us: float
    ref_drift_rel: float
    n_samples: int
    inner_reps: int
    threads: int
    macs: int
    flag_noisy: bool
    flag_drift: bool
    flag_throttled: bool
    algo: str
    gpu_clock_mhz: float | None
    gpu_temp_c: float | None
    measured_at: str
    host: str
    session: str
    flag_failed: bool = False    # the shape could not run: no latency, `error` says why
    error: str = ""
    rel_se: float = math.nan     # relative standard error of the normalised median
    n_instances: int = 1         # fresh allocations sampled side by side
    instance_spread: float = math.nan
    contention: float = math.nan   # others' busy CPUs during the row (NaN: unknown)
    flag_contended: bool = False

    def row(self, spec: ConvSpec) -> dict:
        """The table row: the spec's key fields, then these columns."""
        return {**spec.to_row(), **dataclasses.asdict(self)}
