"""`latprof prune` as a function: table -> latency model -> search -> surgery -> report."""

from __future__ import annotations

import contextlib
import copy
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from latprof import env, models
from latprof.errors import LatprofError, Unreachable
from latprof.measure import device as devices
from latprof.measure.timing import Clock, CudaClock, Protocol, summarize
from latprof.prune import baselines, lacks, latmodel, surgery
from latprof.prune.loop import (CANDIDATE_BUDGETS, MAX_ROUNDS, MEASURE_MARGIN, held_out_prediction, landing_shares,
                                recalibrate_locally)
from latprof.prune.report import PruneReport, candidate
from latprof.prune.timer import CONFIRM_PROCESSES, Timer, add_launch_check, check_cuda_graphs, scaled
from latprof.prune import graph as graphs
from latprof.spec import Context
from latprof.staircase import options
from latprof.tables import io as tbl
from latprof.tables.io import LatencyTable


@dataclass
class PruneConfig:
    model: str
    table: str
    input_size: tuple[int, int, int] | None = None
    batch: int | None = None
    dtype: str | None = None
    backend: str | None = None
    target_ms: float | None = None
    target_ratio: float | None = None
    algo: str = "dp"
    importance: str = "l1"
    weights_prev: Path | None = None
    min_keep: float = options.MIN_KEEP
    max_options: int = options.MAX_OPTIONS
    keep_residual: bool | None = None
    seed: int = 0
    device: str | None = None          # the device the user prunes for; checked against the table's
    force: bool = False
    out: Path = Path("out/prune")
    export: str | None = None          # "torchscript" | "onnx"
    compare: bool = False
    measure: bool | None = None        # None: measure when the table's device is this machine
    quick: bool = False
    request_out: Path | None = None
    fitness: str = "importance"        # "importance" (table only) | "accuracy" (brief training)
    data: str | None = None            # data spec for --fitness accuracy (see latprof.train.data)
    fitness_steps: int = 100
    fitness_epochs: int | None = None
    train_device: str | None = None
    search_options: dict = field(default_factory=dict)   # passed to the searcher (e.g. evo's population)
    cuda_graphs: bool = False          # time whole models as CUDA graph replays (`Timer.cuda_graphs`)
    confirm: int = CONFIRM_PROCESSES   # fresh processes the final measurement runs in (0: one session here)


def _device_present(table: LatencyTable) -> devices.Device | None:
    """This machine's device if it is the one the table was measured on, else None."""
    dev = table.device
    try:
        here = devices.cpu_device() if dev.get("kind") == "cpu" else devices.cuda_device(dev.get("name", ""))
    except LatprofError:
        return None
    return here if tbl.same_device(dev, {"kind": here.kind, "slug": here.slug}) else None


def _check_device(cfg: PruneConfig, table: LatencyTable) -> None:
    if cfg.device is None or cfg.force:
        return
    want, have = devices.normalise(cfg.device), devices.normalise(str(table.device.get("name", "")))
    if want not in have and want != devices.normalise(str(table.device.get("slug", ""))):
        raise LatprofError(f"the table was measured on {table.device.get('name')!r}, not {cfg.device!r}; "
                           "use that device's table, or --force to prune with this one anyway")


@dataclass
class Setup:
    """What the table and the model give before any search: `load`'s result."""

    table: LatencyTable
    ctx: Context
    original: nn.Module
    size: tuple[int, int, int]
    lm: latmodel.LatencyModel
    values: list                     # per group: the value of each option (retained importance)
    prev: dict | None                # --weights-prev state dict (ACS)
    warnings: list[str]


def run(cfg: PruneConfig) -> PruneReport:
    """load -> calibrate -> closed-loop search -> baselines -> report -> save; each step a function.
    With residual groups kept whole by default (`keep_residual` None) and a target that is out of
    reach that way, the search runs again with them pruned too, and the report says so."""
    setup = load(cfg)
    timer = make_timer(cfg, setup)
    with timer.clock if timer is not None else contextlib.nullcontext():
        if timer is not None:
            calibrate(cfg, setup, timer)
        full_us = setup.lm.predict(setup.lm.full_counts())

        def target_us() -> float:
            """--target-ms, or the ratio of the original's latency: measured (pooled over the
            sessions so far) when this machine measures, else predicted."""
            if cfg.target_ms is not None:
                return cfg.target_ms * 1e3
            return cfg.target_ratio * (timer.scale_us() if timer is not None else full_us)
        try:
            found = search(cfg, setup, timer, target_us)
        except Unreachable as exc:
            if cfg.keep_residual is not None or not setup.lm.graph.kept:
                raise
            why = f"the smallest configuration has latency {exc.smallest}"
            cfg = replace(cfg, keep_residual=False)
            kept = setup.warnings
            setup = load(cfg)
            setup.warnings = kept + [f"residual groups are kept whole by default, and then the target is out of "
                                     f"reach ({why}); they are pruned too (--no-keep-residual)"]
            if timer is not None:
                calibrate(cfg, setup, timer)
            found = search(cfg, setup, timer, target_us)
        report = make_report(cfg, setup, found, target_us(), full_us)
        base_nets = []
        if cfg.compare:
            base_nets = baselines.at_equal_macs(setup.original, setup.size, report.pruned.macs, cfg.keep_residual)
            report.baselines = [candidate(name, m, setup.size, baselines.predict_model(setup.lm, m))
                                for name, m in base_nets]
        peers = []
        if cfg.compare and timer is not None:   # the fair peers reach the target by measuring, too
            peers = baselines.at_target(setup.original, setup.size, timer, target_us())
            report.peers = [candidate(name, m, setup.size, baselines.predict_model(setup.lm, m))
                            for name, m, _, _ in peers]
        # (report candidate, model) of everything timed and scored against the original: the pick first
        compared = list(zip([report.pruned] + report.baselines + report.peers,
                            [found.pruned] + [m for _, m in base_nets] + [m for _, m, _, _ in peers]))
        if cfg.compare:   # the importance each keeps, over every group (residual ones too: peers prune them)
            keeps = baselines.importance_kept(setup.original, setup.size, cfg.importance, setup.prev)
            for cand, net in [(report.original, setup.original)] + compared:
                cand.importance = keeps(net)
        if timer is not None:
            sessions = final_sessions(cfg, setup, timer, [net for _, net in compared])
            scale = timer.scale_us()           # with the final sessions' originals in it
            for k, (cand, _) in enumerate(compared):
                cand.session_ratios = [float(np.median(s[k])) for s in sessions]
                _set_measured(cand, np.concatenate([s[k] for s in sessions]), scale)
            report.confirmed = cfg.confirm > 0
            if found.ratios is not None:
                report.loop_ratio = float(np.median(found.ratios))
            for cand, (_, _, _, curve) in zip(report.peers, peers):
                report.peer_macs_at_equal_latency[cand.name] = baselines.macs_at(curve, report.pruned.measured_ratio)
            orig = timer.original_stats()
            report.original.measured_ms, report.original.measured_iqr_ms = scale / 1e3, (orig.p25 / 1e3, orig.p75 / 1e3)
            report.original.measured_ratio = 1.0
            report.target_ms = target_us() / 1e3
            report.sessions = len(timer.sessions_us)
            if timer.cuda_graphs:   # the original and the final model eager too: launch-bound?
                add_launch_check(report, timer, {"original": setup.original, report.pruned.name: found.pruned})
    if cfg.data:  # accuracy before search and of the pruned model before fine-tuning (test split)
        from latprof.train import data as datasets
        from latprof.train.loop import eval_loader, evaluate

        test = eval_loader(datasets.load(cfg.data, seed=cfg.seed, image_size=setup.size[-1]).test)
        report.accuracy = {"original_test": evaluate(setup.original, test),
                           "pruned_test": evaluate(found.pruned, test)}
    report.files = _save(cfg, found.pruned, setup.size, report)
    return report


def load(cfg: PruneConfig) -> Setup:
    """The table (path or URL), its rows for this model, the model, its channel groups, the
    latency model and each group's option values. Missing shapes end here, with a request file."""
    from latprof.prune.importance import option_values
    from latprof.tables import remote

    table = remote.open_table(cfg.table)
    _check_device(cfg, table)
    ctx = tbl.context(table, cfg.batch, cfg.dtype, cfg.backend)
    warnings = tbl.version_warnings(table.meta, devices.software_versions())
    if ctx.backend == "triton":
        warnings.append("the table times latprof's Triton kernels; whole models are timed with PyTorch's own "
                        "convs (cuDNN), so the calibration mixes the two")
    net, size = load_model(cfg.model, cfg.input_size)
    original = copy.deepcopy(net)
    graph = graphs.analyse(net, size, keep_residual=cfg.keep_residual)
    if not graph.groups:
        raise LatprofError(f"{cfg.model} has no prunable channel group (all kept: try --no-keep-residual)")
    lm = latmodel.build(graph, table, ctx, min_keep=cfg.min_keep, max_options=cfg.max_options)
    prev = torch.load(cfg.weights_prev, map_location="cpu") if cfg.weights_prev else None
    scores = [surgery.group_scores(graph, g, cfg.importance, prev) for g in graph.groups]
    values = [option_values(s, opts) for s, opts in zip(scores, lm.options)]
    lm.estimate_pairs = True
    lm.term_tables()  # looks up every option pair: all missing shapes at once, in one request
    if lm.missing:
        lacks.missing(cfg, lm, table)
    if lm.estimated:
        warnings.append(lacks.estimated_pairs(cfg, lm, table))
    return Setup(table, ctx, original, size, lm, values, prev, warnings)


def make_timer(cfg: PruneConfig, setup: Setup) -> Timer | None:
    """A `Timer` when the table's device is this machine (and --no-measure is not given), else None."""
    here = _device_present(setup.table) if cfg.measure is not False else None
    if cfg.measure and here is None:
        raise LatprofError("--measure: the table's device is not this machine; prune without measuring")
    setup.warnings += check_cuda_graphs(cfg.cuda_graphs, setup.table.device, measuring=here is not None)
    if here is None:
        return None
    # whole models are timed with the thread count the table was measured with
    threads = (setup.table.meta.get("protocol") or {}).get("threads") or env.cpu_threads()
    benchmark = bool((setup.table.meta.get("versions") or {}).get("cudnn_benchmark", False))
    protocol = Protocol.quick() if cfg.quick else Protocol()
    clock = (CudaClock(here.torch_device, cudnn_benchmark=benchmark) if here.kind == "cuda"
             else Clock(threads, pin=protocol.pin, malloc=protocol.steady_malloc))
    baseline = (setup.table.meta.get("reference") or {}).get("baseline_us")
    return Timer(here, clock, protocol, setup.ctx, setup.size, baseline, setup.original, cuda_graphs=cfg.cuda_graphs)


def calibrate(cfg: PruneConfig, setup: Setup, timer: Timer) -> None:
    """Fit the latency model's scale and rest on whole models: full, smallest, halfway, 2 random."""
    lm = setup.lm
    rng = np.random.default_rng(cfg.seed)
    configs = [lm.full_counts(), [opts[0] for opts in lm.options], [opts[len(opts) // 2] for opts in lm.options]]
    configs += [[opts[rng.integers(len(opts))] for opts in lm.options] for _ in range(2)]
    sums = [lm.conv_sum(c) for c in configs]
    if lm.missing:
        lacks.missing(cfg, lm, setup.table)
    measured = timer.measure([_pruned_copy(setup.original, setup.size, cfg, c) for c in configs])
    lm.scale, lm.rest_us = latmodel.fit_calibration(sums, measured)
    lm.calibrated = True


@dataclass
class Found:
    counts: list[int]
    pruned: nn.Module
    graph: graphs.Graph
    result: object                   # the searcher's SearchResult
    seconds: float
    attempts: list[dict]
    ratios: np.ndarray | None = None     # the closed loop's per-round ratios to the original, when measured
    predicted_us: float = float("nan")   # its prediction when it was searched (before it was measured)
    held_out_us: float | None = None     # its prediction shifted on the other candidates measured (`held_out_prediction`)


def search(cfg: PruneConfig, setup: Setup, timer: Timer | None, target: Callable[[], float]) -> Found:
    """Search, prune, and (with a timer) choose by measurement: the closed loop.

    A search exploits the latency model's errors (it picks what the model thinks is cheap), so
    with a timer several candidates are searched at budgets a little under the target
    (`CANDIDATE_BUDGETS`), pruned, and measured together in one interleaved session; the one
    that keeps the most value and measures under the target (less `MEASURE_MARGIN`) wins. When
    none does, the budgets shrink by the best candidate's measured/target ratio and the round
    repeats, at most `MAX_ROUNDS` times; the fastest candidate measured is the fallback. When the
    winner lands more than `loop.LANDING` under the limit, one more round searches budgets between it
    and the next candidate over (`loop.landing_shares`). After each measured round the latency
    model's constant is shifted to read true on the candidates measured near the target
    (`loop.recalibrate_locally`), so the next round's budgets mean what they say; each candidate keeps the prediction it had when it
    was searched, and that is what the report compares with its measurement.
    `target()`: the target in us (a ratio of the original's latency moves as its measurement is
    pooled over more sessions); candidates keep their measured ratio to the original, converted
    with the current pool when compared."""
    from latprof.search import run_search

    lm, size = setup.lm, setup.size
    fitness = _fitness(cfg, setup.original, size, lm, setup.prev)
    seconds, attempts, found = 0.0, [], {}

    def candidate(budget_us: float):
        nonlocal seconds
        problem = lm.problem(setup.values, budget_us)
        if lm.missing:
            lacks.missing(cfg, lm, setup.table)
        t0 = time.perf_counter()
        result = run_search(cfg.algo, problem, seed=cfg.seed, fitness=fitness, **cfg.search_options)
        seconds += time.perf_counter() - t0
        counts = [lm.options[g][i] for g, i in enumerate(result.choice)]
        graph = graphs.analyse(copy.deepcopy(setup.original), size, keep_residual=cfg.keep_residual)
        pruned = surgery.prune(graph, surgery.choose(graph, counts, cfg.importance, setup.prev))
        return Found(counts, pruned, graph, result, 0.0, [], predicted_us=lm.predict(counts))

    if timer is None:
        best = candidate(target())
        best.seconds = seconds
        return best
    shares, best, refined, rounds = CANDIDATE_BUDGETS, None, False, 0
    while True:
        fresh = {}
        for share in shares:
            cand = candidate(target() * share)
            key = tuple(cand.counts)
            if key not in found and key not in fresh:
                fresh[key] = (share, cand)
        if fresh:
            ratios = timer.ratios([c.pruned for _, c in fresh.values()])
            for (share, cand), r in zip(fresh.values(), ratios):
                cand.ratios = r
                found[tuple(cand.counts)] = (float(np.median(r)), cand, share)
                attempts.append({"budget_ms": target() * share / 1e3, "predicted_ms": cand.predicted_us / 1e3,
                                 "measured_ms": float(np.median(r)) * timer.scale_us() / 1e3,
                                 "measured_ratio": float(np.median(r)), "value": float(cand.result.value)})
            recalibrate_locally(lm, [(c.counts, got) for got, c, _ in found.values()], timer.scale_us())
        limit = target() * (1 - MEASURE_MARGIN) / timer.scale_us()     # as a ratio to the original
        ok = [(cand.result.value, -got, cand) for got, cand, _ in found.values() if got <= limit]
        if ok:
            best = max(ok, key=lambda t: t[:2])[2]
            aims = () if refined else landing_shares(found, found[tuple(best.counts)], limit,
                                                      lambda c: lm.predict(c.counts) / timer.scale_us())
            shares = tuple(a * timer.scale_us() / target() for a in aims)
            if not shares:
                break
            refined = True
            continue
        rounds += 1
        if rounds >= MAX_ROUNDS:
            break
        fastest = min(got for got, _, _ in found.values())
        shares = tuple(s * min(limit / fastest, 0.99) for s in shares)
    if best is None:
        best = min(found.values(), key=lambda t: t[0])[1]
    best.seconds, best.attempts = seconds, attempts
    best.held_out_us = held_out_prediction(lm, [(c.counts, got) for got, c, _ in found.values()], best.counts,
                                           timer.scale_us())
    return best


def final_sessions(cfg: PruneConfig, setup: Setup, timer: Timer, nets: list[nn.Module]) -> list[list[np.ndarray]]:
    """The verdict's measurement of `nets` (the pick first): per session, each model's per-round
    ratios to the original. In `cfg.confirm` fresh processes timing the saved models
    (`Timer.fresh_sessions`), else in one more session here. Never the closed loop's session:
    it chose the pick partly because the pick read low there."""
    if not cfg.confirm:
        return [timer.ratios(nets)]
    spec = {**asdict(cfg), "input_size": list(setup.size), "confirm": 0}
    return timer.fresh_sessions(spec, nets, cfg.confirm)


def _set_measured(cand, ratios: np.ndarray, scale_us: float) -> None:
    """A candidate's measured latency (ms, its p25-p75) and ratio from its per-round ratios to the original."""
    st = scaled(summarize(ratios), scale_us / 1e3)
    cand.measured_ms, cand.measured_iqr_ms = st.p50, (st.p25, st.p75)
    cand.measured_ratio = float(np.median(ratios))


def make_report(cfg: PruneConfig, setup: Setup, found: Found, target_us: float, full_us: float) -> PruneReport:
    lm = setup.lm
    report = PruneReport(
        model=cfg.model, device=str(setup.table.device.get("name")), context=asdict(setup.ctx), algo=cfg.algo,
        importance=cfg.importance, target_ms=target_us / 1e3, calibrated=lm.calibrated, scale=lm.scale,
        rest_ms=lm.rest_us / 1e3, local_points=lm.local,
        original=candidate("original", setup.original, setup.size, full_us),
        pruned=candidate(f"latprof ({cfg.algo})", found.pruned, setup.size, found.predicted_us),
        groups=[{"root": g.root, "channels": g.channels, "options": lm.options[g.index], "kept": k,
                 "convs_out": list(g.out_convs)} for g, k in zip(found.graph.groups, found.counts)],
        search_seconds=found.seconds, evaluations=found.result.evaluations, attempts=found.attempts,
        fitness=cfg.fitness, fitness_value=found.result.value, warnings=setup.warnings,
        search_note=found.result.note, target_ratio=cfg.target_ratio,
        held_out_ms=None if found.held_out_us is None else found.held_out_us / 1e3)
    report.fits = {g.root: lm.fits.get((t.spec, "c" if t.spec.depthwise else "c_out"))
                   for g in found.graph.groups for t in lm.terms if t.name == g.root}
    return report


def load_model(ref: str, input_size=None) -> tuple[nn.Module, tuple[int, int, int]]:
    """A registry name or file.py:factory (random weights), or a trained model saved with
    torch.save (`latprof train`, `latprof prune`): a path ending in .pt or .pth."""
    if ref.endswith((".pt", ".pth")):
        from latprof.train.loop import load_model as load_saved

        net = load_saved(ref).eval()
        size = input_size or tuple(getattr(net, "latprof_input_size", None) or (3, 224, 224))
        return net, tuple(size)
    return models.load(ref, input_size)


def _fitness(cfg: PruneConfig, original: nn.Module, size, lm, prev):
    """None (the searchers maximise retained importance) or validation accuracy after brief training."""
    if cfg.fitness == "importance":
        return None
    if cfg.fitness != "accuracy":
        raise LatprofError(f"unknown fitness {cfg.fitness!r}; choose importance or accuracy")
    if cfg.algo == "dp":
        raise LatprofError("--fitness accuracy needs a searcher that takes a fitness: --algo evo, abc or ddpg")
    if not cfg.data:
        raise LatprofError("--fitness accuracy needs --data SPEC, the data the model was trained on")
    from latprof.prune import accfit as accfit
    from latprof.train import data as datasets

    splits = datasets.load(cfg.data, seed=cfg.seed, image_size=size[-1])
    return accfit.accuracy_fitness(
        original, lambda m: graphs.analyse(m, size, keep_residual=cfg.keep_residual), lm.options, splits,
        fitness_steps=cfg.fitness_steps, fitness_epochs=cfg.fitness_epochs, seed=cfg.seed,
        importance=cfg.importance, prev=prev, device=cfg.train_device)


def _pruned_copy(original: nn.Module, size, cfg: PruneConfig, counts: list[int]) -> nn.Module:
    g = graphs.analyse(copy.deepcopy(original), size, keep_residual=cfg.keep_residual)
    return surgery.prune(g, surgery.choose(g, counts, "l1"))


def _save(cfg: PruneConfig, model: nn.Module, size, report: PruneReport) -> dict:
    cfg.out.mkdir(parents=True, exist_ok=True)
    files = {"model": str(cfg.out / "pruned.pt"), "structure": str(cfg.out / "structure.json")}
    with tbl.atomic_file(files["model"]) as f:
        torch.save(model, f)
    structure = {"model": cfg.model, "input_size": list(size),
                 "convs": {k: list(v) for k, v in surgery.channel_counts(model).items()}}
    tbl.atomic_write_bytes(files["structure"], (json.dumps(structure, indent=1) + "\n").encode())
    example = torch.zeros(1, *size)
    if cfg.export == "torchscript":
        files["torchscript"] = str(cfg.out / "pruned.ts")
        torch.jit.trace(model.eval(), example).save(files["torchscript"])
    elif cfg.export == "onnx":
        files["onnx"] = str(cfg.out / "pruned.onnx")
        torch.onnx.export(model.eval(), example, files["onnx"], dynamo=False)
    return files
