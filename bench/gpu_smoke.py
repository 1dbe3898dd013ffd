"""GPU smoke test: the first thing to run on a machine with a CUDA GPU (`make gpu-smoke`).

One verdict per check (PASS, WARN, FAIL, SKIP), in under 5 minutes on a current GPU:

  identity   name, SMs, compute capability, L2, TF32 and cuDNN settings under the clock,
             NVML handle UUID = CUDA UUID, three NVML readings
  kernels    the GPU kernel tests (pytest -m gpu tests/kernels, compiled, not interpreted)
  timing     latprof's CudaClock median against triton.testing.do_bench (median) on four fp16
             shapes (tiny, mid, large, depthwise): within +-5 %
  warmup     wall time of CudaClock.warmup of a ~5 ms conv, default protocol: under 0.2 s
  line       a mini fp16 cuDNN sweep of one line (c_out 8..256 step 8): every row measured,
             kernel names recorded, settings in the table's metadata
  wave       a Triton fp16 line (c_out 4..256 step 4) fitted against the wave model's predicted
             edges (the device built from the recorded SM count and compute capability)
  prune      `latprof sweep` of small_cifar10 in fp16 (its own table: prune needs a model's lines),
             then `latprof prune` with measurement (calibration, closed loop, report), then again
             with --cuda-graphs (the report's eager/graph ratios and launch-bound verdicts)
  graphs     CudaClock.graphed: a captured small_cifar10 replays its eager output; eager and graph
             timed in one session (batch 1 and 32, fp16): graph not slower than eager (+5 %)

Without a CUDA GPU it says it skipped and exits 0. With --out DIR it also writes
gpu_smoke_<device>.json and .md there (commit them under bench/results/). Exit status 1 when a
check FAILs.

    python bench/gpu_smoke.py [--gpu 0] [--out bench/results] [--only timing,warmup]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKS = ("identity", "kernels", "timing", "warmup", "line", "wave", "prune", "graphs")
#: latprof's median and do_bench's must agree this closely.
TIMING_TOLERANCE = 0.05
#: The warm-up of a ~5 ms conv must end within this wall time (the old loop took ~5 s).
WARMUP_LIMIT_S = 0.2
#: Predicted wave-model edges found this often in the measured Triton line: PASS, else WARN (the
#: wave model is a first-order model; a miss is a finding, not a broken install).
WAVE_RECALL = 0.5


# --- verdicts that need no GPU (tested on the CPU) --------------------------------------------

def timing_verdict(latprof_us: float, bench_us: float, tolerance: float = TIMING_TOLERANCE) -> tuple[str, float]:
    """PASS when latprof's median is within `tolerance` of do_bench's; the relative difference."""
    rel = latprof_us / bench_us - 1.0
    return ("PASS" if abs(rel) <= tolerance else "FAIL"), rel


def edge_agreement(predicted, measured, tolerance: int) -> tuple[float, float]:
    """(recall, precision): shares of predicted edges with a measured edge within `tolerance`
    channels, and of measured edges with a predicted one; 1.0 for an empty side."""
    def share(a, b):
        return sum(any(abs(x - y) <= tolerance for y in b) for x in a) / len(a) if a else 1.0
    return share(list(predicted), list(measured)), share(list(measured), list(predicted))


# --- the checks ---------------------------------------------------------------------------------

class Smoke:
    def __init__(self, dev, out_dir: Path):
        self.dev, self.tmp = dev, out_dir
        self.results: list[dict] = []

    def record(self, name: str, verdict: str, detail: str, **figures) -> None:
        self.results.append({"check": name, "verdict": verdict, "detail": detail, **figures})
        print(f"{verdict:5s} {name:9s} {detail}", flush=True)

    def clock(self, **kw):
        from latprof.measure import device as devices
        from latprof.measure.timing import CudaClock

        return CudaClock(self.dev.torch_device, True, devices.nvml_handle(self.dev), **kw)

    def identity(self) -> None:
        import torch

        from latprof.measure import device as devices

        ident, env = self.dev.identity, os.environ.get("TRITON_INTERPRET_WAS")
        with self.clock() as clock:
            flags = devices.cuda_flags()
            readings = []
            for _ in range(3):
                clock.sample(lambda: torch.cuda._sleep(1_000_000))   # ~1 ms of GPU work
                readings.append(clock.gpu_state())
        handle = devices.nvml_handle(self.dev)
        nvml_uuid = devices.nvml_uuid(handle) if handle is not None else None
        cuda_uuid = str(ident.get("uuid") or "")
        same = nvml_uuid is not None and nvml_uuid.split("-", 1)[-1] == cuda_uuid.split("GPU-")[-1]
        detail = (f"{self.dev.name}: {ident.get('sm_count')} SMs, sm_{ident.get('compute_capability')}, "
                  f"L2 {ident.get('l2_bytes', 0) / 2**20:.0f} MiB, {ident.get('memory_bytes', 0) / 2**30:.0f} GiB; "
                  f"cudnn {torch.backends.cudnn.version()}, {json.dumps(flags)}; CUDA UUID {cuda_uuid}, NVML "
                  f"UUID {nvml_uuid}; NVML readings {readings}"
                  + (f"; TRITON_INTERPRET={env} was set in the environment, 0 for this run" if env else ""))
        if handle is None:
            verdict = "WARN"      # nvidia-ml-py absent or NVML failed: sweeps record no clocks
        elif not all(r.get("gpu_clock_mhz") for r in readings):
            verdict = "FAIL"
        elif not same:
            verdict = "WARN" if "MIG" in self.dev.name else "FAIL"   # MIG: NVML reads the parent GPU
        else:
            verdict = "PASS"
        if flags["cudnn_allow_tf32"] or flags["matmul_allow_tf32"]:
            verdict = "FAIL"      # the clock must time float32 as IEEE float32
        self.record("identity", verdict, detail, identity=ident, flags=flags, nvml_uuid=nvml_uuid,
                    readings=readings)

    def kernels(self) -> None:
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "tests/kernels"]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240,
                              env={**os.environ, "TRITON_INTERPRET": "0"})
        last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
        self.record("kernels", "PASS" if proc.returncode == 0 else "FAIL", f"{' '.join(cmd[2:])}: {last}",
                    returncode=proc.returncode)

    def timing(self) -> None:
        import numpy as np
        from triton.testing import do_bench

        from latprof.measure import backends
        from latprof.spec import ConvSpec

        shapes = {
            "tiny": ConvSpec(c_in=16, c_out=16, h=8, w=8, batch=1),
            "mid": ConvSpec(c_in=128, c_out=128, h=28, w=28, batch=8),
            "large": ConvSpec(c_in=256, c_out=512, h=56, w=56, batch=16),
            "depthwise": ConvSpec(c_in=256, c_out=256, h=56, w=56, batch=16, groups=256),
        }
        rows, verdicts = {}, []
        with self.clock() as clock:
            for name, spec in shapes.items():
                run = backends.make_runner(spec.replace(dtype="float16", backend="cudnn"), self.dev)
                clock.warmup(run, 0.03, 0.0)
                ours = float(np.median([clock.sample(run) for _ in range(200)]))
                bench = do_bench(run, warmup=25, rep=100, return_mode="median") * 1e3
                verdict, rel = timing_verdict(ours, bench)
                verdicts.append(verdict)
                rows[name] = {"latprof_us": ours, "do_bench_us": bench, "rel": rel}
        detail = ", ".join(f"{k} {v['latprof_us']:.1f}/{v['do_bench_us']:.1f} us ({v['rel']:+.1%})"
                           for k, v in rows.items())
        self.record("timing", "PASS" if all(v == "PASS" for v in verdicts) else "FAIL",
                    f"latprof/do_bench medians: {detail}", shapes=rows)

    def warmup(self) -> None:
        from triton.testing import do_bench

        from latprof.measure import backends
        from latprof.measure.timing import Protocol
        from latprof.spec import ConvSpec

        base = ConvSpec(c_in=256, c_out=256, h=56, w=56, batch=8, dtype="float32", backend="cudnn")
        with self.clock() as clock:
            per_image_ms = do_bench(backends.make_runner(base, self.dev), warmup=10, rep=50,
                                    return_mode="median") / base.batch
            batch = max(1, round(5.0 / per_image_ms))              # a conv of about 5 ms
            spec = base.replace(batch=batch)
            run = backends.make_runner(spec, self.dev)             # a new shape: its first call too
            t0 = time.perf_counter()
            clock.warmup(run, Protocol().warmup_s, Protocol().min_sample_s)
            wall = time.perf_counter() - t0
            call_ms = clock.sample(run) / 1e3
        self.record("warmup", "PASS" if wall < WARMUP_LIMIT_S else "FAIL",
                    f"{spec.label()}: one call {call_ms:.2f} ms, warm-up {wall:.3f} s (limit {WARMUP_LIMIT_S} s)",
                    call_ms=call_ms, warmup_s=wall)

    def _sweep(self, out: Path, counts: list[int], *, hw: int, backend: str = "cudnn", tile: str = ""):
        """A quick fp16 sweep of the line 64 -> `counts` (3x3, batch 8, hw x hw) on this GPU."""
        from latprof.measure import sweep as sweeps
        from latprof.measure.timing import Protocol
        from latprof.tables import io as tbl

        grid = dict(cin=[64], cout=counts, hw=[hw], kernel=[3], stride=[1], groups=[1])
        cfg = sweeps.SweepConfig(grid=grid, batches=(8,), dtype="float16", gpu=str(self.dev.index), backend=backend,
                                 tile=tile, out=out, protocol=Protocol.quick(), progress=False)
        summary = sweeps.run(cfg)
        return summary, tbl.read(out)

    def line(self) -> None:
        counts = list(range(8, 257, 8))
        s, t = self._sweep(self.tmp / "line.parquet", counts, hw=28)
        df = t.df
        named = int((df["algo"].fillna("") != "").sum())
        lat = df.sort_values("c_out")["latency_norm_us_p50"].to_numpy()
        versions = t.meta.get("versions", {})
        ok = (len(df) == len(counts) and bool(df["latency_us_p50"].gt(0).all()) and named == len(df)
              and "cudnn_benchmark" in versions and versions.get("cudnn_allow_tf32") is False)
        self.record("line", "PASS" if ok else "FAIL",
                    f"64->8..256 @28x28 b8 fp16: {len(df)}/{len(counts)} rows in {s.seconds:.1f} s, {named} with "
                    f"kernel names, {int(df['flag_noisy'].sum())} noisy, {int(df['flag_throttled'].sum())} "
                    f"throttled; {lat[0]:.1f} .. {lat[-1]:.1f} us; settings {json.dumps({k: versions.get(k) for k in ('cudnn_benchmark', 'cudnn_allow_tf32')})}",
                    rows=len(df), seconds=s.seconds)

    def wave(self) -> None:
        """64 -> 4..256 at 56x56, batch 8: 392 row tiles, so on a GPU with a few hundred block
        slots the model puts a wave step where a tile column step is, and tile steps without one."""
        from latprof.kernels import TileConfig, predicted_edges, preset_from_identity
        from latprof.spec import ConvSpec
        from latprof.staircase.fit import fit_steps

        from latprof.kernels import compiled_resources

        preset = preset_from_identity(self.dev.identity)
        if preset is None:
            self.record("wave", "SKIP", f"the wave model knows no sm_{self.dev.identity.get('compute_capability')}")
            return
        tile, step, hw = TileConfig.parse("64x64x32,w4,s3"), 4, 56
        counts = list(range(step, 257, step))
        s, t = self._sweep(self.tmp / "triton.parquet", counts, hw=hw, backend="triton", tile=str(tile))
        df = t.df.sort_values("c_out")
        fit = fit_steps(df["c_out"].tolist(), df["latency_norm_us_p50"].tolist())
        full = ConvSpec(c_in=64, c_out=256, h=hw, w=hw, batch=8, dtype="float16", backend="triton", tile=str(tile))
        regs, smem = compiled_resources(full, tile) or (None, None)      # the kernel as compiled here
        predicted = predicted_edges(full, tile, preset, "c_out", regs_per_thread=regs, smem_bytes=smem)
        recall, precision = edge_agreement(predicted, fit.edges, step)
        lat = df["latency_norm_us_p50"].to_numpy()
        self.record("wave", "PASS" if recall >= WAVE_RECALL else "WARN",
                    f"{preset.name} ({preset.sm_count} SMs), 64->4..256 @{hw}x{hw} b8 fp16, tile {tile}: predicted "
                    f"edges {predicted}, measured {list(fit.edges)} ({len(df)} rows in {s.seconds:.1f} s, "
                    f"{lat[0]:.1f} .. {lat[-1]:.1f} us); recall {recall:.0%}, precision {precision:.0%} "
                    f"(within {step} channels); compiled: {regs} registers, {smem} B shared",
                    predicted=predicted, measured=list(fit.edges), recall=recall, precision=precision,
                    compiled_regs=regs, compiled_smem=smem)

    def prune(self) -> None:
        table, out = self.tmp / "small_cifar10.parquet", self.tmp / "prune"
        base = [sys.executable, "-m", "latprof"]
        steps = [
            base + ["sweep", "--model", "small_cifar10", "--batch", "8", "--dtype", "float16", "--gpu",
                    str(self.dev.index), "--quick", "--no-progress", "--out", str(table)],
            # a 1 s target every configuration meets: small_cifar10 at batch 8 is launch-bound on a
            # GPU (flat lines, no channel count to save at); this checks the path, not the search
            base + ["prune", "small_cifar10", "--table", str(table), "--target-ms", "1000", "--quick", "--compare",
                    "--out", str(out), "--json", str(out / "report.json")],
        ]
        graphs_out = self.tmp / "prune-graphs"
        steps.append(base + ["prune", "small_cifar10", "--table", str(table), "--target-ms", "1000", "--quick",
                             "--cuda-graphs", "--out", str(graphs_out), "--json", str(graphs_out / "r.json")])
        for cmd in steps:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240,
                                  env={**os.environ, "TRITON_INTERPRET": "0"})
            if proc.returncode != 0:
                tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
                self.record("prune", "FAIL", f"`{' '.join(cmd[2:4])}` exited {proc.returncode}: {tail}")
                return
        rep = json.loads((out / "report.json").read_text())
        graphed = json.loads((graphs_out / "r.json").read_text())
        o, p = rep["original"], rep["pruned"]
        measured = o.get("measured_ms") is not None and p.get("measured_ms") is not None
        launch = graphed.get("launch", {})
        ok = measured and graphed.get("cuda_graphs") is True and len(launch) == 2
        self.record("prune", "PASS" if ok else "FAIL",
                    f"small_cifar10 fp16 b8: original {o.get('predicted_ms'):.3f} ms predicted / "
                    f"{o.get('measured_ms')} measured, pruned {p.get('predicted_ms'):.3f} / {p.get('measured_ms')}; "
                    f"target met: {rep.get('target_met')}; warnings: {len(rep.get('warnings', []))}; --cuda-graphs: "
                    + ", ".join(f"{k} eager/graph {v['eager_over_graph']:.2f} (launch-bound: {v['launch_bound']})"
                                for k, v in launch.items()),
                    report={k: rep.get(k) for k in ("original", "pruned", "target_ms", "target_met", "warnings")},
                    launch=launch)

    def graphs(self) -> None:
        import torch

        from latprof import models
        from latprof.measure.modeltime import LAUNCH_BOUND_RATIO, eager_over_graph, measure_session
        from latprof.measure.timing import Protocol

        net, size = models.load("small_cifar10")
        net = net.to(self.dev.torch_device, torch.float16).eval()
        x = torch.randn(1, *size, device=self.dev.torch_device, dtype=torch.float16)
        out = {}

        def run():
            with torch.inference_mode():
                out["y"] = net(x)
                return out["y"]
        rows, ok = {}, True
        with self.clock() as clock:
            want = run().clone()
            replay = clock.graphed(run)
            replay()
            clock.sync()
            same = bool(torch.allclose(out["y"].float(), want.float(), atol=1e-2, rtol=1e-2))
            for batch in (1, 32):
                session = measure_session([net, net], size, batch, "float16", self.dev, clock, Protocol.quick(),
                                          graphs=[False, True])
                ratio = eager_over_graph(session, 0, 1)
                rows[batch] = {"eager_us": session.stats[0].p50, "graph_us": session.stats[1].p50, "ratio": ratio,
                               "launch_bound": ratio >= LAUNCH_BOUND_RATIO}
                ok = ok and ratio >= 1 / 1.05
        detail = "; ".join(f"batch {b}: eager {v['eager_us']:.0f} us, graph {v['graph_us']:.0f} us, eager/graph "
                           f"{v['ratio']:.2f}{' (launch-bound)' if v['launch_bound'] else ''}" for b, v in rows.items())
        self.record("graphs", "PASS" if same and ok else "FAIL",
                    f"small_cifar10 fp16: replay {'matches' if same else 'DIFFERS FROM'} eager; {detail}",
                    batches=rows, same_output=same)


# --- main ---------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", default="0", help="the GPU to test (index or name, as `latprof sweep --gpu`)")
    ap.add_argument("--only", help=f"comma-separated checks to run (of {', '.join(CHECKS)})")
    ap.add_argument("--out", type=Path, help="also write gpu_smoke_<device>.json and .md into this folder")
    args = ap.parse_args(argv)
    only = [c.strip() for c in args.only.split(",")] if args.only else list(CHECKS)
    unknown = sorted(set(only) - set(CHECKS))
    if unknown:
        ap.error(f"unknown checks {unknown}; choose among {', '.join(CHECKS)}")

    import torch

    if not torch.cuda.is_available():
        print(f"gpu-smoke: skipped: no CUDA GPU here (torch {torch.__version__}, torch.cuda.is_available() is "
              "False). Run it on a machine with an NVIDIA GPU.")
        return 0
    # A leftover TRITON_INTERPRET=1 would time the interpreter: compiled kernels only, here and in
    # the subprocesses (Triton reads it when latprof.kernels is first imported, below).
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        os.environ["TRITON_INTERPRET_WAS"] = os.environ["TRITON_INTERPRET"]
    os.environ["TRITON_INTERPRET"] = "0"

    from latprof.measure import device as devices

    dev = devices.select(gpu=args.gpu)
    print(f"gpu-smoke on cuda:{dev.index} {dev.name}: {', '.join(only)}", flush=True)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="latprof-gpu-smoke-") as tmp:
        smoke = Smoke(dev, Path(tmp))
        for name in only:
            t0 = time.perf_counter()
            try:
                getattr(smoke, name)()
            except Exception as exc:  # a check that crashes is a FAIL with its reason; the others still run
                smoke.record(name, "FAIL", f"raised {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
            smoke.results[-1]["seconds"] = time.perf_counter() - t0
    total = time.perf_counter() - t_start
    failed = [r["check"] for r in smoke.results if r["verdict"] == "FAIL"]
    print(f"gpu-smoke: {len(smoke.results) - len(failed)}/{len(smoke.results)} checks without FAIL in {total:.0f} s"
          + (f"; FAIL: {', '.join(failed)}" if failed else ""))
    if args.out is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from common import write_results

        report = {"command": " ".join(["python", "bench/gpu_smoke.py"] + (argv or sys.argv[1:])),
                  "seconds": total, "checks": smoke.results,
                  "machine": {"gpu": dev.name, "python": platform.python_version(), "torch": torch.__version__,
                              **{k: v for k, v in devices.software_versions(dev).items() if k != "python"}}}
        md = [f"# GPU smoke test: {dev.name}", "", "| check | verdict | detail |", "|---|---|---|"]
        md += [f"| {r['check']} | {r['verdict']} | {r['detail'].replace('|', '/')} |" for r in smoke.results]
        md += ["", f"Command: `{report['command']}` ({total:.0f} s)"]
        write_results(args.out, f"gpu_smoke_{dev.slug}", report, md)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
