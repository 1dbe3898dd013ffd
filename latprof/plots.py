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
