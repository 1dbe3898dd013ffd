"""The `latprof` metadata of a raw table, declared (`META_SCHEMA`) and checked before use.

A table travels between labs; its metadata is JSON anyone can edit. Every reader (`io.read`,
reports, merges, prune) relies on `check_meta` having run: the declared keys have their types,
the content hash its form, numbers are finite. Keys not declared here are kept as they are.
"""

from __future__ import annotations

import math
import re

from latprof.errors import LatprofError

_NUMBER = (int, float)
#: The `latprof` metadata of a raw table: key -> (allowed types, required). Other keys are kept
#: as they are (a newer latprof may add some); these are checked before anything reads them.
META_SCHEMA: dict[str, tuple[tuple[type, ...], bool]] = {
    "schema_version": ((int,), True),
    "content_hash": ((str,), True),
    "rows": ((int,), False),
    "device": ((dict,), False),
    "versions": ((dict,), False),
    "protocol": ((dict,), False),
    "reference": ((dict, type(None)), False),
    "host": ((str,), False),
    "hosts": ((list,), False),
    "created_at": ((str,), False),
    "updated_at": ((str,), False),
    "merged_from": ((list,), False),
    "upgraded_from": ((list,), False),
}
#: Text fields inside `device` (its identity values may be numbers or lists).
DEVICE_TEXT = ("kind", "name", "slug")
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
_TYPE_WORDS = {int: "an integer", str: "text", dict: "an object", list: "a list", type(None): "null",
               float: "a number"}


def check_meta(meta, path, *, need_hash: bool = True) -> None:
    """Raise `LatprofError` unless `meta` has the declared types (`META_SCHEMA`): the one check
    that stands between a file's metadata and the code (reports, merges, prune) that reads it."""
    bad = meta_problems(meta, need_hash=need_hash)
    if bad:
        fix = (f"if you trust its rows, adopt it with `latprof tables validate --rehash {path}`"
               if bad == ["it has no content_hash"] else "fetch or measure it again")
        raise LatprofError(f"{path}: the latprof metadata is not valid: {'; '.join(bad[:3])}"
                           f"{' ...' if len(bad) > 3 else ''}; {fix}")


def meta_problems(meta, *, need_hash: bool = True) -> list[str]:
    """What in `meta` breaks `META_SCHEMA` (empty when nothing does)."""
    if not isinstance(meta, dict):
        return [f"it is {_TYPE_WORDS.get(type(meta), type(meta).__name__)}, not an object"]
    out = []
    for key, (types, required) in META_SCHEMA.items():
        if key not in meta:
            if required and (key != "content_hash" or need_hash):
                out.append(f"it has no {key}")
            continue
        value = meta[key]
        if not isinstance(value, types) or isinstance(value, bool):
            want = " or ".join(_TYPE_WORDS.get(t, t.__name__) for t in types)
            out.append(f"{key} must be {want}, not {_TYPE_WORDS.get(type(value), type(value).__name__)}")
    if out:
        return out
    if "content_hash" in meta and not _HASH.match(meta["content_hash"]):
        out.append("content_hash is not sha256:<64 hex digits>")
    if meta.get("rows", 0) < 0:
        out.append("rows is negative")
    device = meta.get("device") or {}
    out += [f"device.{k} must be text" for k in DEVICE_TEXT if k in device and not isinstance(device[k], str)]
    versions = meta.get("versions") or {}
    out += [f"versions.{k} must be text, a number or null" for k, v in versions.items()
            if v is not None and not isinstance(v, (str, int, float))]
    for key in ("hosts", "merged_from"):
        if not all(isinstance(h, str) for h in meta.get(key, [])):
            out.append(f"{key} must be a list of text")
    reference = meta.get("reference") or {}
    base = reference.get("baseline_us")
    if base is not None and (not isinstance(base, _NUMBER) or isinstance(base, bool) or not math.isfinite(base)
                             or base <= 0):
        out.append("reference.baseline_us must be a positive finite number")
    if "workload" in reference and not isinstance(reference["workload"], (str, type(None))):
        out.append("reference.workload must be text")
    threads = (meta.get("protocol") or {}).get("threads")
    if threads is not None and (type(threads) is not int or not 1 <= threads <= 4096):
        out.append("protocol.threads must be an integer from 1 to 4096")
    return out




def short(value, limit: int = 160) -> str:
    """One line of at most `limit` characters of an error's (or any value's) text."""
    text = " ".join(str(value).split()) or type(value).__name__
    return text if len(text) <= limit else text[:limit] + "..."
