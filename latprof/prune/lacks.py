"""What a table lacks for a prune, said once and usefully: the request file and error that stop
it (`missing`), and the pairs it priced from two lines instead (`estimated_pairs`). `cfg` is the
run's `pipeline.PruneConfig`."""

from __future__ import annotations

from pathlib import Path

from latprof.errors import LatprofError
from latprof.prune import latmodel
from latprof.staircase import options
from latprof.tables.io import LatencyTable


def missing(cfg, lm: latmodel.LatencyModel, table: LatencyTable):
    """Write one request file with every shape (and whole line) the search needs that the table
    lacks, and raise the error that says how to measure and merge them: no placeholder in it."""
    from latprof.tables import remote
    from latprof.tables import request as requests

    path = cfg.request_out or (cfg.out / "request.json")
    lines = list(getattr(lm, "missing_lines", []))
    on_lines = {s for line in lines for s in line.specs()}
    specs = sorted(s for s in lm.missing if s not in on_lines)
    requests.write_request(path, specs, {"device": table.device, "model": cfg.model}, lines)
    shown = [f"  {s.label()}" for s in specs[:15]] + [f"  the {line.axis} line of {line.base.label()} "
                                                      f"({len(line.values)} counts)" for line in lines[:15]]
    more = len(specs) + len(lines) - len(shown)
    listing = "\n".join(shown) + (f"\n  ... and {more} more" if more > 0 else "")
    below = (f"\n--min-keep {cfg.min_keep} is below the {options.MIN_KEEP} a model sweep measures its grid "
             "for; the request covers the pairs below it" if cfg.min_keep < options.MIN_KEEP else "")
    what = " and ".join(p for p in (f"{len(specs)} shape(s)" if specs else "",
                                    f"{len(lines)} whole line(s) (sampled sparsely)" if lines else "") if p)
    dev = table.device or {}
    where = "--device cpu" if dev.get("kind") == "cpu" else f"--gpu '{dev.get('name')}'"
    part = path.with_name(path.stem + ".part.parquet")
    if remote.is_url(cfg.table):
        target = cfg.out / "table.parquet"
        merge = f"latprof tables merge {target} {cfg.table} {part}"
    else:
        target = Path(cfg.table)
        merge = f"latprof tables merge {target} {target} {part}"
    raise LatprofError(f"the table lacks {what} the search needs:\n{listing}{below}\n"
                       f"they are listed in {path}; measure them on {dev.get('name')} with "
                       f"`latprof sweep {where} --request {path} --out {part}`, merge with `{merge}`, and prune "
                       f"again with --table {target}")


def estimated_pairs(cfg, lm: latmodel.LatencyModel, table: LatencyTable) -> str:
    """Write the (c_in, c_out) pairs the latency model priced from two lines into a request file,
    and say so: pruning goes on, and measuring them makes the next run exact there."""
    from latprof.tables import request as requests

    path = cfg.out / "pairs.request.json"
    requests.write_request(path, sorted(lm.estimated), {"device": table.device, "model": cfg.model})
    return (f"{len(lm.estimated)} (c_in, c_out) pairs the search may look up are not in the table (its line fits "
            "moved after the sweep planned its pairs); they are priced from their layers' two lines (separable "
            f"grid model). To measure them: `latprof sweep --request {path} --out PART.parquet`, then "
            f"`latprof tables merge` it into {cfg.table}")
