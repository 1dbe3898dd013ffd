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
    ax.axvline(current, color="tab:red", ls="--", lw=1.2, label=f"layer's {axis} = {current}")
    ax.set_xlabel(axis)
    ax.set_ylabel("relative cost")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def layer_staircase(path: Path, title: str, fit, current: int, axis: str, predicted_edges=()) -> Path:
    """Measured points of one line (flagged ones hollow), fitted plateaus, efficient counts,
    the layer's own count, and (optionally) the wave model's predicted edges."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 3.8), dpi=110)
    ch, lat, fl = list(fit.channels), list(fit.latency_us), list(fit.flagged)
    ax.scatter([c for c, f in zip(ch, fl) if not f], [v for v, f in zip(lat, fl) if not f], s=10,
               color="tab:blue", label="measured (drift-normalised median)", zorder=3)
    if any(fl):
        ax.scatter([c for c, f in zip(ch, fl) if f], [v for v, f in zip(lat, fl) if f], s=12,
                   facecolors="none", edgecolors="tab:blue", label="flagged (noisy/drift)", zorder=3)
    if fit.fit is not None:
        for i, seg in enumerate(fit.fit.segments):
            ax.hlines(seg.level, seg.start - 0.5, seg.end + 0.5, color="tab:green", lw=2,
                      label="fitted plateau" if i == 0 else None)
        eff = [c for c in fit.fit.efficient]
        ax.scatter(eff, [fit.level_at(c) for c in eff], marker="v", s=40, color="tab:orange",
                   label="efficient counts", zorder=4)
    for i, e in enumerate(predicted_edges):
        ax.axvline(e, color="tab:purple", ls=":", lw=1, label="wave-model edge" if i == 0 else None)
    ax.axvline(current, color="tab:red", ls="--", lw=1.2, label=f"layer's {axis} = {current}")
    ax.set_xlabel(axis)
    ax.set_ylabel("latency (us)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
