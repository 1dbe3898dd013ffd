"""PNG plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def wave_staircase(path: Path, title: str, channels, costs, edges, current: int, axis: str) -> Path:
    """The wave model's predicted relative cost along one channel axis, edges and the layer's count marked."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=110)
    ax.step(list(channels), costs, where="post", color="tab:blue", lw=1.6, label="waves x K-chunks (predicted)")
    for e in edges:
        ax.axvline(e, color="tab:orange", lw=0.6, alpha=0.6)
    return _finish_line_plot(fig, ax, path, title, axis, current, "relative cost")


def layer_staircase(path: Path, title: str, fit, current: int, axis: str, predicted_edges=()) -> Path:
    """Measured points of one line (noisy ones hollow, excluded ones crossed, outliers ringed in
    red), fitted plateaus (sloped where the fit found a slope), efficient counts, the layer's own
    count, and (optionally) the wave model's predicted edges."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 3.8), dpi=110)
    kinds = [("excluded" if x else "noisy" if n else "ok") for x, n in zip(fit.excluded, fit.noisy)]
    styles = {"ok": dict(color="tab:blue", label="measured (drift-normalised median)"),
              "noisy": dict(facecolors="none", edgecolors="tab:blue", label="flagged noisy (fitted)"),
              "excluded": dict(marker="x", color="tab:gray", label="excluded from the fit")}
    for kind, style in styles.items():
        pts = [(c, v) for c, v, k in zip(fit.channels, fit.latency_us, kinds) if k == kind]
        if pts:
            ax.scatter(*zip(*pts), s=11, zorder=3, **style)
    if fit.fit is not None:
        draw_plateaus(ax, fit.fit.segments, color="tab:green", lw=2, label="fitted plateau (sloped where it rises)")
        out = [(c, v) for c, v in zip(fit.channels, fit.latency_us) if c in set(fit.fit.outliers)]
        if out:
            ax.scatter(*zip(*out), s=70, facecolors="none", edgecolors="tab:red", linewidths=1.2, zorder=5,
                       label="outlier (left out of the fit)")
        eff = [c for c in fit.fit.efficient]
        ax.scatter(eff, [fit.level_at(c) for c in eff], marker="v", s=40, color="tab:orange",
                   label="efficient counts", zorder=4)
    for i, e in enumerate(predicted_edges):
        ax.axvline(e, color="tab:purple", ls=":", lw=1, label="wave-model edge" if i == 0 else None)
    return _finish_line_plot(fig, ax, path, title, axis, current, "latency (us)")


def draw_plateaus(ax, segments, label=None, **style) -> None:
    """Each fitted segment as its line from half a count before its start to half a count after
    its end: flat plateaus level, sloped ones rising (`Segment.at`)."""
    for i, seg in enumerate(segments):
        xs = [seg.start - 0.5, seg.end + 0.5]
        ax.plot(xs, [seg.at(v) for v in xs], label=label if i == 0 else None, **style)


def _finish_line_plot(fig, ax, path: Path, title: str, axis: str, current: int, ylabel: str) -> Path:
    """Mark the layer's own count, label, save and close: the common end of the per-line plots."""
    ax.axvline(current, color="tab:red", ls="--", lw=1.2, label=f"layer's {axis} = {current}")
    ax.set_xlabel(axis)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def prune_summary(path: Path, title: str, layers: list, candidates: list) -> Path:
    """One panel per pruned group (its staircase, the chosen count marked) and a last panel with
    every candidate's latency against its MACs. `layers`: (name, LineFit, chosen); `candidates`:
    objects with name, macs, predicted_ms, measured_ms."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(layers) + 1
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), dpi=100, squeeze=False)
    flat = axes.ravel()
    for ax, (name, fit, chosen) in zip(flat, layers):
        ax.plot(fit.channels, fit.latency_us, ".", ms=3, color="tab:blue")
        if fit.fit is not None:
            draw_plateaus(ax, fit.fit.segments, color="tab:green", lw=1.5)
            out = [(c, v) for c, v in zip(fit.channels, fit.latency_us) if c in set(fit.fit.outliers)]
            if out:
                ax.plot(*zip(*out), "o", ms=5, mfc="none", color="tab:red")
        ax.axvline(chosen, color="tab:red", ls="--", lw=1.2)
        ax.set_title(f"{name}: {chosen}/{fit.line.full}", fontsize=8)
        ax.tick_params(labelsize=6)
    ax = flat[len(layers)]
    for c in candidates:
        y = c.measured_ms if c.measured_ms is not None else c.predicted_ms
        if y is not None:
            ax.scatter(c.macs / 1e6, y, s=25)
            ax.annotate(c.name, (c.macs / 1e6, y), fontsize=6)
    ax.set_xlabel("MMACs", fontsize=7)
    ax.set_ylabel("latency (ms, measured or predicted)", fontsize=7)
    ax.tick_params(labelsize=6)
    for extra in flat[n:]:
        extra.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
