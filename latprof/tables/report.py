"""Plain-text summaries of tables for the terminal."""

from __future__ import annotations

from latprof import models
from latprof.models import lines as plan
from latprof.spec import KEY_FIELDS, Context
from latprof.tables.io import LatencyTable, failed_rows


def table_info(t: LatencyTable, path) -> str:
    """`t`'s metadata has passed `tables.io.check_meta` (`tables.io.read` checks it)."""
    df, meta = t.df, t.meta
    dev = meta.get("device") or {}
    ver = meta.get("versions") or {}
    ident = {k: v for k, v in dev.items() if k not in ("kind", "name", "slug", "simd_flags")}
    lines = [
        f"table      {path}",
        f"device     {dev.get('name')} [{dev.get('kind')}, {dev.get('slug')}] {ident}",
        f"software   torch {ver.get('torch')}, cuda {ver.get('cuda')}, cudnn {ver.get('cudnn')}, "
        f"triton {ver.get('triton')}, latprof {ver.get('latprof')}",
        f"schema     version {meta.get('schema_version')}, {meta.get('content_hash', '')[:23]}...",
        f"written    created {meta.get('created_at')}, updated {meta.get('updated_at')}, "
        f"hosts {', '.join(meta.get('hosts') or [])}",
        f"reference  {(meta.get('reference') or {}).get('workload')}: "
        f"{(meta.get('reference') or {}).get('baseline_us') or float('nan'):.1f} us baseline",
        f"rows       {len(df)}",
    ]
    if len(df):
        shapes = df.drop_duplicates(["op", "kernel_h", "kernel_w", "stride_h", "stride_w", "h", "w", "groups"])
        linear = int((shapes["op"] == "linear").sum())
        lines.append(f"shapes     {len(shapes)} distinct kernel/stride/size/group combinations"
                     + (f" ({linear} of Linear layers: GEMMs)" if linear else ""))
        by = df.groupby(["backend", "dtype", "layout", "batch"]).agg(
            rows=("c_out", "size"), noisy=("flag_noisy", "sum"), drift=("flag_drift", "sum"),
            median_rel_iqr=("rel_iqr_norm", "median"),
            latency_us_min=("latency_norm_us_p50", "min"), latency_us_max=("latency_norm_us_p50", "max"))
        lines.append("coverage")
        lines += ["  " + s for s in by.reset_index().to_string(index=False, float_format="%.3g").splitlines()]
        noisy, drift = int(df["flag_noisy"].sum()), int(df["flag_drift"].sum())
        failed, busy = int(failed_rows(df).sum()), int(df["flag_contended"].fillna(False).sum())
        lines.append(f"flags      {noisy} noisy ({noisy / len(df):.1%}), {drift} drifted ({drift / len(df):.1%}), "
                     f"{busy} contended ({busy / len(df):.1%}), {failed} failed ({failed / len(df):.1%})")
        if failed:
            reasons = df.loc[failed_rows(df), "error"].value_counts().head(3)
            lines += [f"  failed   {n} x {reason}" for reason, n in reasons.items()]
    return "\n".join(lines)


def model_coverage(t: LatencyTable, model: str, batch: int | None) -> str:
    """How much of a model's sweep lines the table holds, per batch/dtype/backend present."""
    net, size = models.load(model)
    layers = models.conv_layers(net, size)
    ok = t.df[~failed_rows(t.df)]
    keys = set(ok[list(KEY_FIELDS)].itertuples(index=False, name=None))  # a failed shape is not covered
    combos = t.df[["batch", "dtype", "layout", "backend", "tile"]].drop_duplicates()
    if batch is not None:
        combos = combos[combos["batch"] == batch]
    out = [f"coverage of {model} (dense lines):"]
    if combos.empty:
        out.append("  the table holds no rows for that batch size")
    for combo in combos.itertuples(index=False):
        lines = plan.model_lines(layers, Context(*combo))
        specs = {s for line in lines for s in line.specs()}
        have = sum(s.key() in keys for s in specs)
        out.append(f"  batch {combo.batch} {combo.dtype} {combo.layout} {combo.backend}: "
                   f"{have}/{len(specs)} shapes ({have / max(len(specs), 1):.0%})")
    return "\n".join(out)
