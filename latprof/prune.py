"""`latprof prune` as a function: table -> latency model -> search -> surgery -> report."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from latprof import device as devices, env, flops, graph as graphs, latmodel, models, steps, surgery
from latprof.errors import LatprofError
from latprof.table import LatencyTable
from latprof.timing import Clock, Protocol


#: Extra searches when the pruned model, measured on this machine, misses the target.
MAX_RETRIES = 3
#: The closed loop accepts a measured latency only this far under the target: two whole-model
#: measurements of one model on this project's shared CPU differed by up to ~5%, and the final
#: report measures again.
MEASURE_MARGIN = 0.03


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
    min_keep: float = steps.MIN_KEEP
    max_options: int = steps.MAX_OPTIONS
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
    data: str | None = None            # data spec for --fitness accuracy (see latprof.data)
    fitness_steps: int = 100
    fitness_epochs: int | None = None
    train_device: str | None = None
    search_options: dict = field(default_factory=dict)   # passed to the searcher (e.g. evo's population)


@dataclass
class Candidate:
    name: str
    counts: dict[str, tuple[int, int]]   # conv name -> (c_in, c_out)
    predicted_ms: float | None
    macs: int
    params: int
    measured_ms: float | None = None


@dataclass
class PruneReport:
    model: str
    device: str
    context: dict
    algo: str
    importance: str
    target_ms: float
    calibrated: bool
    scale: float
    rest_ms: float
    original: Candidate
    pruned: Candidate
    groups: list[dict]
    search_seconds: float
    evaluations: int
    baselines: list[Candidate] = field(default_factory=list)
    files: dict = field(default_factory=dict)
    attempts: list[dict] = field(default_factory=list)   # closed-loop searches: budget, predicted, measured
    fitness: str = "importance"
    fitness_value: float | None = None   # retained importance, or validation accuracy after brief training
    accuracy: dict = field(default_factory=dict)   # with --data: test accuracy of original and pruned
    fits: dict = field(default_factory=dict, repr=False)  # root conv -> its c_out LineFit, for plots; not saved

    @property
    def met(self) -> bool:
        got = self.pruned.measured_ms if self.pruned.measured_ms is not None else self.pruned.predicted_ms
        return got is not None and got <= self.target_ms * 1.0000001

    def to_dict(self) -> dict:
        d = asdict(replace(self, fits={}))
        del d["fits"]
        d["target_met"] = self.met
        return d


def _device_present(table: LatencyTable) -> devices.Device | None:
    dev = table.device
    if dev.get("kind") == "cpu":
        here = devices.cpu_device()
        return here if here.slug == dev.get("slug") else None
    try:
        here = devices.cuda_device(dev.get("name", ""))
    except LatprofError:
        return None
    return here if here.slug == dev.get("slug") else None


def _check_device(cfg: PruneConfig, table: LatencyTable) -> None:
    if cfg.device is None or cfg.force:
        return
    want, have = devices.normalise(cfg.device), devices.normalise(str(table.device.get("name", "")))
    if want not in have and want != devices.normalise(str(table.device.get("slug", ""))):
        raise LatprofError(f"the table was measured on {table.device.get('name')!r}, not {cfg.device!r}; "
                           "use that device's table, or --force to prune with this one anyway")


def run(cfg: PruneConfig) -> PruneReport:
    from latprof import share
    from latprof.search import run_search
    from latprof.search.importance import option_values

    table = share.open_table(cfg.table)
    _check_device(cfg, table)
    ctx = steps.context(table, cfg.batch, cfg.dtype, cfg.backend)
    for warning in share.check_compat(table, batch=ctx.batch, dtype=ctx.dtype):
        print(f"warning: {warning}")
    net, size = load_model(cfg.model, cfg.input_size)
    original = copy.deepcopy(net)
    graph = graphs.analyse(net, size, keep_residual=cfg.keep_residual)
    if not graph.groups:
        raise LatprofError(f"{cfg.model} has no prunable channel group (all kept: try --no-keep-residual)")
    lm = latmodel.build(graph, table, ctx, min_keep=cfg.min_keep, max_options=cfg.max_options)
    prev = torch.load(cfg.weights_prev, map_location="cpu") if cfg.weights_prev else None
    scores = [surgery.group_scores(graph, g, cfg.importance, prev) for g in graph.groups]
    values = [option_values(s, opts) for s, opts in zip(scores, lm.options)]
    full = lm.full_counts()
    smallest = [opts[0] for opts in lm.options]
    lm.conv_sum(full)
    lm.conv_sum(smallest)
    if lm.missing:
        _missing(cfg, lm, table)
    here = _device_present(table) if cfg.measure is not False else None
    if cfg.measure and here is None:
        raise LatprofError("--measure: the table's device is not this machine; prune without measuring")
    # measure whole models with the thread count the table was measured with
    threads = (table.meta.get("protocol") or {}).get("threads") or env.cpu_threads()
    clock = Clock(threads) if here is not None and here.kind == "cpu" else None
    if here is not None and here.kind == "cuda":
        from latprof.timing import CudaClock
        clock = CudaClock(here.torch_device)
    protocol = Protocol.quick() if cfg.quick else Protocol()
    if clock is not None:  # calibrate scale and rest on whole models: full, smallest, halfway, 2 random
        rng = np.random.default_rng(cfg.seed)
        configs = [full, smallest, [opts[len(opts) // 2] for opts in lm.options]]
        configs += [[opts[rng.integers(len(opts))] for opts in lm.options] for _ in range(2)]
        sums = [lm.conv_sum(c) for c in configs]
        if lm.missing:
            _missing(cfg, lm, table)
        nets = [_pruned_copy(original, size, cfg, c) for c in configs]
        measured = _measure(nets, size, ctx, here, clock, protocol, table)
        lm.scale, lm.rest_us = latmodel.fit_calibration(sums, measured)
        lm.calibrated = True
    full_us = lm.predict(full)
    target_us = cfg.target_ms * 1e3 if cfg.target_ms is not None else cfg.target_ratio * full_us
    fitness = _fitness(cfg, original, size, lm, prev)
    search_s, budget_us, attempts = 0.0, target_us, []
    for attempt in range(1 + (MAX_RETRIES if clock is not None else 0)):
        problem = lm.problem(values, budget_us)
        if lm.missing:
            _missing(cfg, lm, table)
        t0 = time.perf_counter()
        result = run_search(cfg.algo, problem, seed=cfg.seed, fitness=fitness, **cfg.search_options)
        search_s += time.perf_counter() - t0
        counts = [lm.options[g][i] for g, i in enumerate(result.choice)]
        graph = graphs.analyse(copy.deepcopy(original), size, keep_residual=cfg.keep_residual)
        pruned = surgery.prune(graph, surgery.choose(graph, counts, cfg.importance, prev))
        if clock is None:
            break
        # Closed loop: a search exploits the model's errors (it picks what the model thinks is
        # cheap), so the pruned model is measured and, if it misses, searched again with the
        # budget shrunk by the measured/predicted ratio.
        got = _measure([pruned], size, ctx, here, clock, protocol, table)[0]
        attempts.append({"budget_ms": budget_us / 1e3, "predicted_ms": lm.predict(counts) / 1e3,
                         "measured_ms": got / 1e3})
        if got <= target_us * (1 - MEASURE_MARGIN):
            break
        budget_us *= min(target_us * (1 - MEASURE_MARGIN) / got, 0.99)
    report = PruneReport(
        model=cfg.model, device=str(table.device.get("name")), context=asdict(ctx), algo=cfg.algo,
        importance=cfg.importance, target_ms=target_us / 1e3, calibrated=lm.calibrated, scale=lm.scale,
        rest_ms=lm.rest_us / 1e3,
        original=_candidate("original", original, size, lm, full_us),
        pruned=_candidate(f"latprof ({cfg.algo})", pruned, size, lm, lm.predict(counts)),
        groups=[{"root": g.root, "channels": g.channels, "options": lm.options[g.index], "kept": k,
                 "convs_out": list(g.out_convs)} for g, k in zip(graph.groups, counts)],
        search_seconds=search_s, evaluations=result.evaluations, attempts=attempts,
        fitness=cfg.fitness, fitness_value=result.value)
    report.fits = {g.root: lm.fits.get((t.spec, "c" if t.spec.depthwise else "c_out"))
                   for g in graph.groups for t in lm.terms if t.name == g.root}
    base_nets = []
    if cfg.compare:
        base_nets = _baselines(original, size, cfg, report.pruned.macs)
        report.baselines = [_candidate(name, m, size, lm, predict_model(lm, m)) for name, m in base_nets]
    if clock is not None:
        cands = [report.original, report.pruned] + report.baselines
        nets = [original, pruned] + [m for _, m in base_nets]
        for cand, ms in zip(cands, _measure(nets, size, ctx, here, clock, protocol, table)):
            cand.measured_ms = ms / 1e3
    if cfg.data:  # accuracy before search and of the pruned model before fine-tuning (test split)
        from latprof import data as datasets
        from latprof.train import eval_loader, evaluate

        test = eval_loader(datasets.load(cfg.data, seed=cfg.seed, image_size=size[-1]).test)
        report.accuracy = {"original_test": evaluate(original, test), "pruned_test": evaluate(pruned, test)}
    report.files = _save(cfg, pruned, size, report)
    return report


def load_model(ref: str, input_size=None) -> tuple[nn.Module, tuple[int, int, int]]:
    """A registry name or file.py:factory (random weights), or a trained model saved with
    torch.save (`latprof train`, `latprof prune`): a path ending in .pt or .pth."""
    if ref.endswith((".pt", ".pth")):
        from latprof.train import load_model as load_saved

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
    from latprof import accfit, data as datasets

    splits = datasets.load(cfg.data, seed=cfg.seed, image_size=size[-1])
    return accfit.accuracy_fitness(
        original, lambda m: graphs.analyse(m, size, keep_residual=cfg.keep_residual), lm.options, splits,
        fitness_steps=cfg.fitness_steps, fitness_epochs=cfg.fitness_epochs, seed=cfg.seed,
        importance=cfg.importance, prev=prev, device=cfg.train_device)


def _missing(cfg: PruneConfig, lm: latmodel.LatencyModel, table: LatencyTable):
    from latprof import request as requests

    path = cfg.request_out or (cfg.out / "request.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    specs = sorted(lm.missing)
    requests.write_request(path, specs, {"device": table.device, "model": cfg.model})
    listing = "\n".join(f"  {s.label()}" for s in specs[:15])
    more = f"\n  ... and {len(specs) - 15} more" if len(specs) > 15 else ""
    raise LatprofError(f"the table lacks {len(specs)} shape(s) the search needs:\n{listing}{more}\n"
                       f"they are listed in {path}; measure them on {table.device.get('name')} with "
                       f"`latprof sweep --request {path} --out TABLE`, merge, and prune again")


def _measure(nets, size, ctx, here, clock, protocol, table: LatencyTable) -> list[float]:
    """Whole-model latencies normalised to the table's reference baseline (one scale for all)."""
    from latprof.modeltime import measure_models

    baseline = (table.meta.get("reference") or {}).get("baseline_us")
    return measure_models(nets, size, ctx.batch, ctx.dtype, here, clock, protocol, baseline_us=baseline)


def _pruned_copy(original: nn.Module, size, cfg: PruneConfig, counts: list[int]) -> nn.Module:
    g = graphs.analyse(copy.deepcopy(original), size, keep_residual=cfg.keep_residual)
    return surgery.prune(g, surgery.choose(g, counts, "l1"))


def _candidate(name: str, model: nn.Module, size, lm: latmodel.LatencyModel, predicted_us: float | None) -> Candidate:
    macs, params = flops.count(model, size)
    pred = None if predicted_us is None or not np.isfinite(predicted_us) else predicted_us / 1e3
    return Candidate(name, surgery.channel_counts(model), pred, macs, params)


def predict_model(lm: latmodel.LatencyModel, model: nn.Module) -> float | None:
    """Predicted latency (us) of any pruned variant, from its conv shapes; None if the table lacks one."""
    counts = surgery.channel_counts(model)
    total = 0.0
    before = set(lm.missing)
    for t in lm.terms:
        ci, co = counts[t.name]
        v = lm.lookup(t, ci, co)
        if v is None:
            lm.missing = before
            return None
        total += v
    return lm.scale * total + lm.rest_us


def _baselines(original, size, cfg, macs_target) -> list[tuple[str, nn.Module]]:
    """Uniform keep ratio, and Torch-Pruning's magnitude pruner (round_to=8), at the same MACs."""
    import torch_pruning as tp

    def uniform(r):
        g = graphs.analyse(copy.deepcopy(original), size, keep_residual=cfg.keep_residual)
        counts = [max(1, int(round(r * grp.channels))) for grp in g.groups]
        return surgery.prune(g, surgery.choose(g, counts, "l1"))

    def magnitude(r):
        m = copy.deepcopy(original)
        pruner = tp.pruner.MagnitudePruner(m, torch.zeros(1, *size), importance=tp.importance.MagnitudeImportance(p=1),
                                           pruning_ratio=r, ignored_layers=graphs.classifier(m), round_to=8)
        pruner.step()
        return m

    out = []
    for name, make in (("uniform ratio", lambda r: uniform(1 - r)), ("torch-pruning L1, round_to=8", magnitude)):
        lo, hi, best = 0.0, 0.95, None
        for _ in range(12):  # bisection on the pruning ratio until MACs match
            mid = (lo + hi) / 2
            m = make(mid)
            macs = flops.count(m, size)[0]
            best = (m, macs) if best is None or abs(macs - macs_target) < abs(best[1] - macs_target) else best
            lo, hi = (mid, hi) if macs > macs_target else (lo, mid)
        out.append((name, best[0]))
    return out


def _save(cfg: PruneConfig, model: nn.Module, size, report: PruneReport) -> dict:
    cfg.out.mkdir(parents=True, exist_ok=True)
    files = {"model": str(cfg.out / "pruned.pt"), "structure": str(cfg.out / "structure.json")}
    torch.save(model, files["model"])
    structure = {"model": cfg.model, "input_size": list(size),
                 "convs": {k: list(v) for k, v in surgery.channel_counts(model).items()}}
    Path(files["structure"]).write_text(json.dumps(structure, indent=1) + "\n")
    example = torch.zeros(1, *size)
    if cfg.export == "torchscript":
        files["torchscript"] = str(cfg.out / "pruned.ts")
        torch.jit.trace(model.eval(), example).save(files["torchscript"])
    elif cfg.export == "onnx":
        files["onnx"] = str(cfg.out / "pruned.onnx")
        torch.onnx.export(model.eval(), example, files["onnx"], dynamo=False)
    return files
