"""Request files: the shapes (or, format 2, the lines) one lab asks another to measure.

The file format only: `write_request`, `load_request`. What a model lacks is decided in
`staircase.lines` (`missing_specs`, `unfittable_lines`); `latprof sweep --request FILE`
measures a request (`measure.sweep`). The format is in the README,
"Sharing tables".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from latprof.errors import LatprofError
from latprof.models import lines as plan
from latprof.tables import io as tbl
from latprof.spec import KEY_FIELDS, ConvSpec

#: Format 1 holds shapes; format 2 adds lines to sample sparsely (written only when there are some).
REQUEST_VERSION = 2


@dataclass
class Request:
    specs: list[ConvSpec]
    meta: dict
    lines: list[plan.Line] = field(default_factory=list)   # sampled sparsely by `sweep --request`


def write_request(path: str | Path, specs: list[ConvSpec], meta: dict, lines: list[plan.Line] = ()) -> Path:
    """JSON `{"latprof_request": 1, "device": ..., ..., "specs": [row, ...]}`, one spec a line;
    `meta["device"]` (the table's device dict, or None) names the device to measure on. With
    `lines`, format 2: also `"lines": [{"base": row, "axis": "c_out", "values": [...]}, ...]`,
    which `sweep --request` samples sparsely, as a model sweep does."""
    path = Path(path)
    own = ("device", "latprof_request", "count", "line_count", "specs", "lines")
    head = {"latprof_request": REQUEST_VERSION if lines else 1, "device": meta.get("device"),
            "created_at": tbl.now_iso(), **{k: v for k, v in meta.items() if k not in own},
            "count": len(specs), **({"line_count": len(lines)} if lines else {})}
    out = ["{"] + [f" {json.dumps(k)}: {json.dumps(v, default=str)}," for k, v in head.items()]
    if lines:
        out += [' "lines": [', ",\n".join("  " + json.dumps({"base": line.base.to_row(), "axis": line.axis,
                                                             "values": list(line.values)}) for line in lines),
                " ],"]
    out += [' "specs": [', ",\n".join("  " + json.dumps(s.to_row()) for s in specs), " ]", "}", ""]
    tbl.atomic_write_bytes(path, "\n".join(out).encode())
    return path


def load_request(path: str | Path) -> Request:
    """A request file with its metadata; every problem is a `LatprofError`."""
    path = Path(path)
    redo = "make it again with `latprof tables request --model M --batch B --out FILE`"
    if not path.is_file():
        raise LatprofError(f"request file {path} does not exist; {redo}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise LatprofError(f"{path} is not valid JSON ({exc}); the request was damaged: {redo}") from None
    if not isinstance(doc, dict) or "latprof_request" not in doc:
        raise LatprofError(f"{path} is not a latprof request (no `latprof_request` field); {redo}")
    version = doc["latprof_request"]
    if not isinstance(version, int) or version < 1:
        raise LatprofError(f"{path}: latprof_request must be a positive integer, got {version!r}; {redo}")
    if version > REQUEST_VERSION:
        raise LatprofError(f"{path} is a request of format {version}, newer than this latprof reads "
                           f"({REQUEST_VERSION}); upgrade latprof: `pip install -U latprof`")
    rows = doc.get("specs", [] if version >= 2 else None)
    if not isinstance(rows, list):
        raise LatprofError(f"{path}: `specs` must be a list of shapes; {redo}")
    specs = []
    for i, row in enumerate(rows):
        specs.append(_spec_from_request(row, i, path))
    items = doc.get("lines", [])
    if "lines" in doc and version < 2:
        raise LatprofError(f"{path}: `lines` needs request format 2 (the file says {version}); {redo}")
    if not isinstance(items, list):
        raise LatprofError(f"{path}: `lines` must be a list of lines; {redo}")
    lines = [_line_from_request(item, i, path) for i, item in enumerate(items)]
    return Request(list(dict.fromkeys(specs)), {k: v for k, v in doc.items() if k not in ("specs", "lines")}, lines)


def _line_from_request(item, i: int, path: Path) -> plan.Line:
    where = f"{path}: line #{i + 1}"
    if not isinstance(item, dict) or set(item) != {"base", "axis", "values"}:
        raise LatprofError(f"{where} must be an object with exactly base, axis and values")
    if item["axis"] not in ("c_out", "c_in", "c"):
        raise LatprofError(f"{where}: axis must be c_out, c_in or c, got {item['axis']!r}")
    values = item["values"]
    if (not isinstance(values, list) or len(values) < 2 or not all(type(v) is int and v >= 1 for v in values)
            or values != sorted(set(values))):
        raise LatprofError(f"{where}: values must be at least two ascending distinct counts >= 1")
    base = _spec_from_request(item["base"], i, path, what="line")
    if (item["axis"] == "c") != base.depthwise:
        raise LatprofError(f"{where}: axis c is for depthwise shapes (groups = c_in = c_out) and only for them")
    line = plan.Line(base, item["axis"], tuple(values))
    if values[-1] != line.full:
        raise LatprofError(f"{where}: the last value ({values[-1]}) must be the base shape's own count ({line.full})")
    try:
        line.specs()
    except LatprofError as exc:
        raise LatprofError(f"{where}: {exc}") from None
    return line


def read_request(path: str | Path) -> list[ConvSpec]:
    """The request's shapes (its lines, if any, are in `load_request(path).lines`)."""
    return load_request(path).specs


def _spec_from_request(row, i: int, path: Path, what: str = "spec") -> ConvSpec:
    where = f"{path}: {what} #{i + 1}" + (" base" if what == "line" else "")
    if not isinstance(row, dict):
        raise LatprofError(f"{where} is not an object of spec fields")
    unknown = sorted(set(row) - set(KEY_FIELDS))
    if unknown:
        raise LatprofError(f"{where} has unknown fields {', '.join(unknown)}; the fields are {', '.join(KEY_FIELDS)}")
    missing = [k for k in ("c_in", "c_out", "h", "w") if k not in row]
    if missing:
        raise LatprofError(f"{where} lacks {', '.join(missing)}")
    for k, v in row.items():
        want = str if k in ("dtype", "layout", "backend", "tile", "op") else int
        if not isinstance(v, want) or isinstance(v, bool):
            raise LatprofError(f"{where}: {k} must be {'text' if want is str else 'an integer'}, got {v!r}")
    try:
        return ConvSpec(**row)  # validates the values
    except LatprofError as exc:
        raise LatprofError(f"{where}: {exc}") from None
