"""The verdict's measurement, in a fresh process: `python -m latprof.prune.confirm SPEC OUT`.

`latprof prune` saves the pruned model (and the models it is compared with) and times the files
here, in processes of their own, as a user checking the result would (`timer.fresh_sessions`
starts them). Why not in prune's own process (docs/protocol.md, "The verdict"): on this
project's CPU the same saved densenet121 pair (64x64, batch 1) read 0.589-0.603 (latprof's
session) and 0.606-0.631 (a plain loop) inside the process that had pruned it, 0.577-0.584 and
0.587-0.591 in a fresh one: the process a model runs in moves its ratio to the original by a few
percent, so one process cannot say how far a second would read. And the closed loop's session
chose the model partly because it read low there; the verdict counts only sessions after it.

SPEC (JSON): the prune configuration (`PruneConfig` fields) and the model files to time. OUT
(JSON): the original's drift-normalised median latency (us) and each model's per-round ratios to
the original, from one `Timer.ratios` session.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace


def main(argv: list[str]) -> None:
    import torch

    from latprof.prune import pipeline
    from latprof.tables import io as tbl
    from latprof.tables import remote

    spec = json.loads(Path(argv[0]).read_text())
    cfg = pipeline.PruneConfig(**{**spec["cfg"], "input_size": tuple(spec["cfg"]["input_size"])})
    table = remote.open_table(cfg.table)
    original, size = pipeline.load_model(cfg.model, cfg.input_size)
    setup = SimpleNamespace(table=table, ctx=tbl.context(table, cfg.batch, cfg.dtype, cfg.backend), size=size,
                            original=original, warnings=[])
    timer = pipeline.make_timer(cfg, setup)
    if timer is None:
        raise SystemExit("latprof.prune.confirm: the table's device is not this machine")
    nets = [torch.load(f, map_location="cpu", weights_only=False).eval() for f in spec["files"]]
    with timer.clock:
        ratios = timer.ratios(nets)
    Path(argv[1]).write_text(json.dumps({"original_us": timer.sessions_us[0],
                                         "ratios": [r.tolist() for r in ratios]}))


if __name__ == "__main__":
    main(sys.argv[1:])
