"""`latprof sweep` as a function: plan the shapes, open the table, measure, summarise."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from latprof import backends, device as devices, env, models, plan
from latprof.errors import LatprofError
from latprof.spec import ConvSpec
from latprof.store import TableStore
from latprof.timing import Clock, CudaClock, Protocol


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


def table_path(cfg: SweepConfig, dev: devices.Device) -> Path:
    if cfg.out is not None:
        return Path(cfg.out)
    i, n = cfg.shard
    suffix = f".shard{i}of{n}" if n > 1 else ""
    return env.tables_dir() / f"{dev.slug}{suffix}.parquet"


def plan_lines(cfg: SweepConfig, backend: str) -> list[plan.Line]:
    """The lines to measure (a grid point is a line of one value), sharded by line."""
    if cfg.model and cfg.grid:
        raise LatprofError("give either --model or a grid (--cin/--cout/...), not both")
    lines: list[plan.Line] = []
    for batch in cfg.batches:
        common = dict(batch=batch, dtype=cfg.dtype, layout=cfg.layout, backend=backend, tile=cfg.tile)
        if cfg.model:
            model, size = models.load(cfg.model, cfg.input_size)
            layers = models.conv_layers(model, size)
            lines += plan.model_lines(layers, every=cfg.every, **common)
        elif cfg.grid:
            for spec in plan.grid_specs(**cfg.grid, **common):
                lines.append(plan.Line(spec, "c_out", (spec.c_out,)))
        else:
            raise LatprofError("nothing to sweep: give --model NAME, or a grid with --cin and --cout "
                               "(and optionally --hw, --kernel, --stride, --groups)")
    return plan.shard(lines, *cfg.shard)


def make_clock(dev: devices.Device, cfg: SweepConfig) -> Clock:
    if dev.kind == "cuda":
        torch.cuda.set_device(dev.index)
        return CudaClock(dev.torch_device, cfg.protocol.l2_flush, devices.nvml_handle(dev))
    return Clock(cfg.threads or env.cpu_threads())


def table_meta(dev: devices.Device, clock: Clock, protocol: Protocol) -> dict:
    return {
        "device": {"kind": dev.kind, "name": dev.name, "slug": dev.slug, **dev.identity},
        "versions": devices.software_versions(dev),
        "protocol": {**protocol.to_dict(), "threads": clock.threads},
        "host": devices.host_fingerprint(),
    }


def run(cfg: SweepConfig) -> SweepSummary:
    from latprof.profiler import Profiler

    dev = devices.select(cfg.device, cfg.gpu)
    backend = cfg.backend or backends.default_backend(dev)
    backends.check(backend, dev)
    if backend == "triton" and not cfg.tile:
        raise LatprofError("--backend triton needs --tile, e.g. --tile 64x64x32,w4,s3")
    if cfg.tile and backend != "triton":
        raise LatprofError(f"--tile applies to --backend triton only (this sweep uses {backend})")
    if cfg.tile:
        from latprof.kernels import TileConfig

        cfg.tile = str(TileConfig.parse(cfg.tile))  # canonical text: one key per tile config
    lines = plan_lines(cfg, backend)
    specs = plan.line_specs(lines)
    path = table_path(cfg, dev)
    clock = make_clock(dev, cfg)
    deadline = time.monotonic() + cfg.budget_minutes * 60 if cfg.budget_minutes else None
    t0 = time.monotonic()
    with TableStore(path, table_meta(dev, clock, cfg.protocol)) as store:
        profiler = Profiler(dev, clock, cfg.protocol, store, dtype=cfg.dtype, host=devices.host_fingerprint(),
                            deadline=deadline, progress=cfg.progress)
        sparse_mode = bool(cfg.model) and not cfg.dense and cfg.every == 1
        if sparse_mode:
            result, planned = measure_sparse(profiler, store, lines, cfg.measure_grid)
        else:
            result, planned = profiler.measure(specs, desc=f"sweep {dev.slug}"), len(specs)
        raw = store.table
    steps_file = None
    if cfg.model and not result.left:
        steps_file = write_model_steps(path, raw, lines)
    return SweepSummary(path, dev, planned, result.measured, result.skipped, len(result.left),
                        result.noisy, result.drifted, time.monotonic() - t0, lines,
                        "sparse" if sparse_mode else ("coarse" if cfg.every > 1 else "dense"), len(specs),
                        steps_file)


#: Most rounds of grid measurement (each measures the pairs the refined fits ask for).
GRID_ROUNDS = 4


def measure_sparse(profiler, store: TableStore, lines: list[plan.Line], grid: bool):
    """Measure each line with a `SparseLine` sampler (in index space, so grouped lines work),
    all lines' requests measured together in interleaved rounds; then the (c_in, c_out) pairs
    a pruner looks up (`steps.grid_pairs`). Resumable: points already in the table are fed
    back without being measured again."""
    from latprof import steps
    from latprof.profiler import MeasureResult
    from latprof.sparse import SparseLine

    total = MeasureResult()
    samplers = [SparseLine(1, len(line.values), noise_rel=steps.FIT_NOISE_REL) for line in lines]
    planned: set[ConvSpec] = set()
    step = 0
    while True:
        wanted = [(i, p) for i, s in enumerate(samplers) for p in s.next_points()]
        if not wanted:
            break
        step += 1
        specs = [lines[i].spec_at(lines[i].values[p - 1]) for i, p in wanted]
        planned.update(specs)
        add_result(total, profiler.measure(specs, desc=f"sparse round {step}"))
        if total.left:
            return total, len(planned)
        for (i, p), spec in zip(wanted, specs):
            samplers[i].feed({p: store.latency(spec)})
    # Grid pairs of one shape can land on another shape's line (same size and kernel, c_in equal
    # to that line's c_in) and refine its fit, which can change its options: repeat until the
    # grid of the current fits is all measured.
    for round_ in range(GRID_ROUNDS if grid else 0):
        store.compact()
        index = steps.TableIndex(store.table)
        pairs = [p for p in steps.grid_pairs([steps.fit_line(index, line) for line in lines])
                 if not store.has(p)]
        if not pairs:
            break
        planned.update(pairs)
        add_result(total, profiler.measure(pairs, desc=f"grid {round_ + 1}"))
        if total.left:
            break
    return total, len(planned)


def add_result(total, part) -> None:
    """Add one measuring call's counts (a `MeasureResult`) to a running total."""
    total.measured += part.measured
    total.skipped += part.skipped
    total.noisy += part.noisy
    total.drifted += part.drifted
    total.left = part.left


def write_model_steps(raw_path: Path, raw, lines: list[plan.Line]) -> Path:
    from latprof import steps

    index = steps.TableIndex(raw)
    fits = [steps.fit_line(index, line) for line in lines]
    return steps.write_steps(steps.steps_path(raw_path), fits, raw)
