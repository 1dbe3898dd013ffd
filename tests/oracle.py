"""A latency oracle: a complete synthetic raw table for any model, with a known staircase.

`oracle_table` writes every shape of a model's sweep lines, then asks the latency model
what else its search space looks up, prices those shapes and adds them, and repeats until
nothing is missing; then `latprof.prune.pipeline.load` must succeed on it. The result is the
table a perfect sweep would give, without measuring anything, so tests of everything
downstream of a sweep run on any model in seconds. `Oracle.rounds` and `Oracle.requests`
record how many shapes each round asked for (one round, no request: the contract).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from latprof.errors import LatprofError
from latprof.models import lines as plan
from latprof.spec import Context, ConvSpec
from latprof.tables import io as tbl
from synthetic import META, row

#: Tile sizes of the oracle's implicit GEMM: output channels in blocks of 16, input channels
#: (per group) in K-chunks of 8, so every line has a staircase with known edges.
BLOCK_OUT, BLOCK_IN = 16, 8


def oracle_us(spec: ConvSpec) -> float:
    """MACs of the conv with c_out padded to a multiple of 16 and c_in per group to a multiple
    of 8, at 1e-4 us per MAC, plus a 2 us launch cost: latency steps at each 16th output and
    8th input channel and is flat in between."""
    c_out = math.ceil(spec.c_out / BLOCK_OUT) * BLOCK_OUT
    c_in = math.ceil((spec.c_in // spec.groups) / BLOCK_IN) * BLOCK_IN
    macs = spec.batch * c_out * c_in * spec.h_out * spec.w_out * spec.kernel_h * spec.kernel_w
    return 2.0 + 1e-4 * macs


@dataclass
class Oracle:
    path: Path
    rounds: list[int] = field(default_factory=list)   # search-space shapes added (what a sweep adds)
    requests: list[int] = field(default_factory=list)  # shapes prune still asked for, per request
    setup: object = None                               # the pipeline's Setup from the last load


def oracle_table(path, model: str, ctx: Context = Context(), *, input_size=None, latency=oracle_us,
                 every: int = 1, max_rounds: int = 8, **prune) -> Oracle:
    """Write a table at `path` with every shape `latprof prune model` looks up under `ctx`,
    priced by `latency`. `prune` holds further `PruneConfig` fields (min_keep, max_options,
    keep_residual, importance) that change the search space and so what is looked up.

    First what a model sweep measures: the lines (every `every`-th count and both ends, as
    `latprof sweep --every`; 1 is complete, larger is faster to build and fit), then the search
    space's shapes (`latmodel.search_space_specs`, counted in `rounds`). Then `pipeline.load`
    itself; should it still stop with a request file, the shapes it asks for are added too and
    counted in `requests` (a sweep that measured less than prune looks up)."""
    from latprof.prune import latmodel, pipeline
    from latprof.tables import request as requests

    path = Path(path)
    specs = plan.line_specs(plan.load_lines(model, ctx, input_size=input_size, every=every)[1])
    table = tbl.LatencyTable(tbl.conform(pd.DataFrame([row(s, latency(s)) for s in specs])), dict(META))
    out = Oracle(path)
    space = {k: prune[k] for k in ("min_keep", "max_options", "keep_residual") if k in prune}
    asked = latmodel.search_space_specs(model, table, ctx, input_size=input_size, **space)
    out.rounds.append(len(asked))
    if asked:
        table.df = tbl.upsert(table.df, pd.DataFrame([row(s, latency(s)) for s in asked]))
    request = path.with_name(path.stem + ".request.json")
    cfg = pipeline.PruneConfig(model=model, table=str(path), input_size=input_size, batch=ctx.batch,
                               dtype=ctx.dtype, backend=ctx.backend, measure=False, out=path.parent / "out",
                               request_out=request, **prune)
    for _ in range(max_rounds):
        tbl.write(path, table)
        request.unlink(missing_ok=True)
        try:
            out.setup = pipeline.load(cfg)
            return out
        except LatprofError:
            if not request.exists():  # not a missing-shapes stop: the pipeline's own error
                raise
        asked = requests.read_request(request)
        out.requests.append(len(asked))
        table.df = tbl.upsert(table.df, pd.DataFrame([row(s, latency(s)) for s in asked]))
    raise AssertionError(f"{model}: still missing shapes after {max_rounds} request rounds {out.requests}")
