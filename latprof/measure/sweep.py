"""`latprof sweep` as a function: the one sweep orchestrator.

A model, a grid and a request file are three sources of shapes (`plan_sweep`); whichever
names them, one path opens the device, the table, the clock and the budget, measures with
the interleaved scheduler (`scheduler.Profiler`), samples lines sparsely (`measure_sparse`)
and, for a model, writes the step table.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from latprof import env
from latprof.errors import LatprofError
from latprof.measure import backends
from latprof.measure import device as devices
from latprof.measure import plan as grids
from latprof.measure.scheduler import MeasureResult, Profiler
from latprof.measure.sparse import SparseLine
from latprof.measure.timing import Clock, CudaClock, Protocol
from latprof.models import lines as plan
from latprof.spec import ConvSpec, Context
from latprof.staircase import lines as lines_
from latprof.staircase import options, steptable
from latprof.tables import io as tbl
from latprof.tables import request as requests
from latprof.tables.store import TableStore


@dataclass
class SweepConfig:
    """Everything a sweep needs; the CLI fills it from options."""

    model: str | None = None
    input_size: tuple[int, int, int] | None = None
    grid: dict | None = None             # cin, cout, hw, kernel, stride, groups: lists of ints
    batches: tuple[int, ...] = (1,)
    dtype: str = "float32"
    layout: str = "nchw"
    device: str | None = None
    gpu: str | None = None
    backend: str | None = None
    tile: str = ""
    every: int = 1
    dense: bool = False                  # model lines: every count, not the sparse sampler
    measure_grid: bool = True            # model sweeps: also the (c_in, c_out) pairs pruning looks up
    shard: tuple[int, int] = (1, 1)
    budget_minutes: float | None = None
    out: Path | None = None
    threads: int | None = None
    protocol: Protocol = field(default_factory=Protocol)
    progress: bool = True
    request: Path | None = None          # a request file (`latprof tables request`) instead of a model or grid
    #: For a model sweep: the shapes a pruner of the model will look up given the table so far
    #: (`prune.latmodel.search_space_specs`); the sweep measures them after the lines, so that
    #: prune needs no request round. None: the lines-only estimate (`staircase.options.grid_pairs`).
    search_space: Callable[[tbl.LatencyTable, Context], list[ConvSpec]] | None = None


@dataclass
class SweepSummary:
    path: Path
    device: devices.Device
    planned: int
    measured: int
    skipped: int
    left: int
    noisy: int
    drifted: int
    seconds: float
    lines: list = field(default_factory=list)
    mode: str = "dense"
    line_points: int = 0                 # counts the lines would have densely
    steps_path: Path | None = None
    contended: int = 0                   # rows flagged: another process was busy while they were sampled
    timed_s: float = 0.0                 # seconds inside the timed samples of the rows written
    dtype_note: str = ""                 # with dtype "auto": which dtype was chosen, and why


@dataclass
class SweepPlan:
    """What one sweep measures, from whichever source named it (a model, a grid or a request)."""

    specs: list[ConvSpec]                # measured as listed
    lines: list[plan.Line]               # sampled sparsely (`measure_sparse`)
    grid: bool = False                   # then the (c_in, c_out) pairs pruning looks up
    mode: str = "dense"
    line_points: int = 0                 # shapes the lines would hold densely
    dtype: str = "float32"               # of the drift reference workload
    model_lines: list[plan.Line] = field(default_factory=list)   # a model sweep's lines: its step table


def plan_sweep(cfg: SweepConfig, dev: devices.Device, backend: str) -> SweepPlan:
    """The one planner: a model's lines (sparse, dense or coarse), a grid, or a request file;
    sharded by line (a grid point is a line of one value)."""
    sources = [name for name, given in (("--model", cfg.model), ("a grid (--cin/--cout)", cfg.grid),
                                         ("--request", cfg.request)) if given]
    if len(sources) > 1:
        raise LatprofError(f"give one of --model, a grid (--cin/--cout/...) or --request, not {' and '.join(sources)}")
    if not sources:
        raise LatprofError("nothing to sweep: give --model NAME, or a grid with --cin and --cout (and optionally "
                           "--hw, --kernel, --stride, --groups), or --request FILE")
    if cfg.request is not None:
        return _plan_request(cfg, dev)
    lines: list[plan.Line] = []
    for batch in cfg.batches:
        ctx = Context(batch, cfg.dtype, cfg.layout, backend, cfg.tile)
        if cfg.model:
            lines += plan.load_lines(cfg.model, ctx, input_size=cfg.input_size, every=cfg.every)[1]
        else:
            for spec in grids.grid_specs(**cfg.grid, **asdict(ctx)):
                lines.append(plan.Line(spec, "c_out", (spec.c_out,)))
    lines = grids.shard(lines, *cfg.shard)
    specs = plan.line_specs(lines)
    if cfg.model and not cfg.dense and cfg.every == 1:
        return SweepPlan([], lines, cfg.measure_grid, "sparse", len(specs), cfg.dtype, lines)
    mode = "coarse" if cfg.every > 1 else "dense"
    return SweepPlan(specs, [], False, mode, len(specs), cfg.dtype, lines if cfg.model else [])


def _plan_request(cfg: SweepConfig, dev: devices.Device) -> SweepPlan:
    """A request file's shapes, measured as listed, then its lines (format 2) sampled sparsely,
    without the grid; the batch, dtype, backend and tile come from the request."""
    if cfg.dense or cfg.every > 1:
        raise LatprofError("--dense and --every apply to model sweeps; a request's shapes are measured as "
                           "listed and its lines sampled sparsely (ask for dense lines with `latprof tables "
                           "request` without --sparse)")
    req = requests.load_request(cfg.request)
    if not req.specs and not req.lines:
        raise LatprofError(f"{cfg.request} asks for no shapes and no lines: the table it was written for "
                           "already holds everything; there is nothing to measure")
    wanted = req.meta.get("device") or {}
    if wanted.get("slug") and not tbl.same_device(wanted, {"kind": dev.kind, "slug": dev.slug}):
        raise LatprofError(f"{cfg.request} asks for measurements of {wanted.get('name')!r} but this sweep runs "
                           f"on {dev.name!r}; run it there (`--gpu NAME`), or set \"device\" to null in the file "
                           "if any device will do")
    bases = req.specs + [line.base for line in req.lines]
    used = sorted({s.backend for s in bases})
    if cfg.backend and used and used != [cfg.backend]:
        raise LatprofError(f"--backend {cfg.backend} disagrees with the request's backend(s) {', '.join(used)}; "
                           "leave out --backend")
    for backend in used:
        backends.check(backend, dev, {s.dtype for s in bases})
    if "triton" in used:
        from latprof.kernels import TileConfig

        for tile in {s.tile for s in bases if s.backend == "triton"}:
            TileConfig.parse(tile)
    specs, lines = grids.shard(req.specs, *cfg.shard), grids.shard(req.lines, *cfg.shard)
    dtypes = [s.dtype for s in specs + [line.base for line in lines]]
    mode = f"request {Path(cfg.request).name}" + (f", {len(lines)} lines sparse" if lines else "")
    return SweepPlan(specs, lines, False, mode, len(dict.fromkeys(specs + plan.line_specs(lines))),
                     max(set(dtypes), key=dtypes.count) if dtypes else cfg.dtype)


def table_path(cfg: SweepConfig, dev: devices.Device) -> Path:
    if cfg.out is not None:
        return Path(cfg.out)
    i, n = cfg.shard
    suffix = f".shard{i}of{n}" if n > 1 else ""
    return env.tables_dir() / f"{dev.slug}{suffix}.parquet"


def make_clock(dev: devices.Device, threads: int | None = None, l2_flush: bool = True, pin: bool = False,
               malloc: bool = True) -> Clock:
    """The clock for `dev`: CUDA events on a GPU, `perf_counter_ns` at a fixed thread count on the CPU
    (`pin`: one thread pinned to one core).
    Use it as a context manager: process-wide settings (the thread count) are restored on exit."""
    if dev.kind == "cuda":
        return CudaClock(dev.torch_device, l2_flush, devices.nvml_handle(dev))
    return Clock(threads or env.cpu_threads(), pin=pin, malloc=malloc)


def table_meta(dev: devices.Device, clock: Clock, protocol: Protocol) -> dict:
    return {
        "device": {"kind": dev.kind, "name": dev.name, "slug": dev.slug, **dev.identity},
        "versions": devices.software_versions(dev),
        "protocol": {**protocol.to_dict(), "threads": clock.threads,
                     **({"cudnn_benchmark": devices.software_versions(dev).get("cudnn_benchmark"), "tf32": False}
                        if dev.kind == "cuda" else {})},
        "host": devices.host_fingerprint(),
    }


def run(cfg: SweepConfig) -> SweepSummary:
    """Plan, then measure on one device into one table; then the step table of a finished model sweep."""
    dev = devices.select(cfg.device, cfg.gpu)
    backend = cfg.backend or backends.default_backend(dev)
    note = ""
    if cfg.dtype == "auto":
        cfg.dtype, why = resolve_auto_dtype(dev)
        note = f"{cfg.dtype}: {why}"
    if cfg.request is None:
        backends.check(backend, dev, {cfg.dtype})
        if backend == "triton" and not cfg.tile:
            raise LatprofError("--backend triton needs --tile, e.g. --tile 64x64x32,w4,s3")
        if cfg.tile and backend != "triton":
            raise LatprofError(f"--tile applies to --backend triton only (this sweep uses {backend})")
        if cfg.tile:
            from latprof.kernels import TileConfig

            cfg.tile = str(TileConfig.parse(cfg.tile))  # canonical text: one key per tile config
    todo = plan_sweep(cfg, dev, backend)
    path = table_path(cfg, dev)
    deadline = time.monotonic() + cfg.budget_minutes * 60 if cfg.budget_minutes else None
    t0 = time.monotonic()
    with make_clock(dev, cfg.threads, cfg.protocol.l2_flush, cfg.protocol.pin, cfg.protocol.steady_malloc) as clock, \
            TableStore(path, table_meta(dev, clock, cfg.protocol)) as store:
        profiler = Profiler(dev, clock, cfg.protocol, store, dtype=todo.dtype, host=devices.host_fingerprint(),
                            deadline=deadline, progress=cfg.progress)
        result = profiler.measure(todo.specs, desc=f"sweep {dev.slug}")
        planned = len(todo.specs)
        if todo.lines and not result.left:  # a budget spent on the shapes: the lines wait for the rerun
            sampled, points = measure_sparse(profiler, store, todo.lines, todo.grid, cfg.search_space)
            add_result(result, sampled)
            planned += points
        raw = store.table
    steps_file = None
    if todo.model_lines and not result.left:
        index = lines_.TableIndex(raw)
        steps_file = steptable.write_steps(steptable.steps_path(path),
                                           [lines_.fit_line(index, line) for line in todo.model_lines], raw)
    return SweepSummary(path, dev, planned, result.measured, result.skipped, len(result.left),
                        result.noisy, result.drifted, time.monotonic() - t0, todo.lines or todo.model_lines,
                        todo.mode, todo.line_points, steps_file, result.contended, result.timed_s, note)


def resolve_auto_dtype(dev: devices.Device) -> tuple[str, str]:
    """`--dtype auto`: the dtype deployments of this device run in, and why (on the CPU,
    `cpu.best_dtype` from its instruction set; on a GPU float16, which every GPU latprof
    supports runs on tensor cores)."""
    if dev.kind == "cpu":
        from latprof.measure.cpu import best_dtype

        return best_dtype(dev.identity.get("simd_flags"))
    return "float16", "GPUs run float16 on tensor cores"


#: Most rounds of grid measurement (each measures the pairs the refined fits ask for; a bfloat16
#: VGG-16 sweep still had 53 unplanned pairs after 4; prune prices any left from the lines).
GRID_ROUNDS = 8


def measure_sparse(profiler, store: TableStore, todo: list[plan.Line], grid: bool, search_space=None):
    """Measure each line with a `SparseLine` sampler (in index space, so grouped lines work),
    all lines' requests measured together in interleaved rounds; then the (c_in, c_out) pairs
    a pruner looks up (`search_space(table, ctx)` per measured context, else `options.grid_pairs`).
    Resumable: points already in the table are fed back without being measured again."""
    total = MeasureResult()
    samplers = [SparseLine(1, len(line.values), noise_rel=lines_.FIT_NOISE_REL) for line in todo]
    planned: set[ConvSpec] = set()
    step = 0
    while True:
        wanted = [(i, p) for i, s in enumerate(samplers) for p in s.next_points()]
        if not wanted:
            break
        step += 1
        specs = [todo[i].spec_at(todo[i].values[p - 1]) for i, p in wanted]
        planned.update(specs)
        add_result(total, profiler.measure(specs, desc=f"sparse round {step}"))
        if total.left:
            return total, len(planned)
        store.compact()  # so that the index holds this round's rows, with their errors
        index = lines_.TableIndex(store.table)
        for (i, p), spec in zip(wanted, specs):
            row = index.get(spec)  # None: the shape failed (the sampler does not ask again)
            samplers[i].feed({p: None if row is None else row[0]}, {p: math.nan if row is None else row[3]})
    # Grid pairs of one shape can land on another shape's line (same size and kernel, c_in equal
    # to that line's c_in) and refine its fit, which can change its options: repeat until the
    # grid of the current fits is all measured.
    for round_ in range(GRID_ROUNDS if grid else 0):
        store.compact()
        pairs = [p for p in dict.fromkeys(_search_pairs(store.table, todo, search_space)) if not store.has(p)]
        if not pairs:
            break
        planned.update(pairs)
        add_result(total, profiler.measure(pairs, desc=f"grid {round_ + 1}"))
        if total.left:
            break
    return total, len(planned)


def _search_pairs(table: tbl.LatencyTable, todo: list[plan.Line], search_space) -> list[ConvSpec]:
    """The shapes a pruner will look up that the lines may lack: from the model's search space
    when the caller can build it, else estimated from the lines' fits."""
    if search_space is not None:
        contexts = dict.fromkeys(Context(b.batch, b.dtype, b.layout, b.backend, b.tile) for b in (l.base for l in todo))
        try:
            return [s for ctx in contexts for s in search_space(table, ctx)]
        except LatprofError:  # a model the pruner cannot analyse: it still gets the estimate
            pass
    index = lines_.TableIndex(table)  # fitted only when the estimate is used
    return options.grid_pairs([lines_.fit_line(index, line) for line in todo])


def add_result(total, part) -> None:
    """Add one measuring call's counts (a `MeasureResult`) to a running total."""
    total.measured += part.measured
    total.skipped += part.skipped
    total.noisy += part.noisy
    total.drifted += part.drifted
    total.contended += part.contended
    total.timed_s += part.timed_s
    total.left = part.left
