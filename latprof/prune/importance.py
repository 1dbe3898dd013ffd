"""Per-output-channel importance criteria for one conv, and the value of keeping the top k.

Every criterion has the same signature::

    fn(weight, *, bn=None, weight_prev=None) -> Tensor[C_out]   (float32, CPU; higher = keep)

``weight`` is a conv weight ``(C_out, C_in/groups, kh, kw)`` (or any ``(C_out, ...)`` tensor,
e.g. a linear layer's); a filter is one output channel's slice, flattened. Criteria ignore the
keyword arguments they do not use, so a caller can pass everything it has.

Which channels to remove is decided here; how many per group is the searchers' job, which sees
the criterion only through ``option_values``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from latprof.errors import LatprofError

Criterion = Callable[..., Tensor]


def _filters(weight: Tensor) -> Tensor:
    """(C_out, everything else) in float64 on the CPU: scores are cheap, precision is free."""
    if not isinstance(weight, Tensor) or weight.dim() < 2:
        raise LatprofError(f"importance needs a weight of shape (C_out, ...), got "
                           f"{getattr(weight, 'shape', type(weight).__name__)}")
    return weight.detach().to("cpu", torch.float64).reshape(weight.shape[0], -1)


def _out(score: Tensor) -> Tensor:
    return score.to(torch.float32)


def l1(weight: Tensor, *, bn: nn.BatchNorm2d | None = None, weight_prev: Tensor | None = None) -> Tensor:
    """Sum of absolute weights of each filter (Li et al., "Pruning Filters for Efficient ConvNets")."""
    return _out(_filters(weight).abs().sum(dim=1))


def l2(weight: Tensor, *, bn: nn.BatchNorm2d | None = None, weight_prev: Tensor | None = None) -> Tensor:
    """Euclidean norm of each filter."""
    return _out(_filters(weight).norm(dim=1))


def bn_scale(weight: Tensor, *, bn: nn.BatchNorm2d | None = None, weight_prev: Tensor | None = None) -> Tensor:
    """|gamma| of the BatchNorm after the conv (network slimming): a channel the BN scales to ~0
    contributes ~nothing downstream whatever its filter looks like."""
    c_out = _filters(weight).shape[0]
    if bn is None:
        raise LatprofError("bn_scale needs the BatchNorm that follows the conv (bn=...); "
                           "for a conv without one use l1, l2 or fpgm")
    if getattr(bn, "weight", None) is None:
        raise LatprofError("bn_scale needs an affine BatchNorm (affine=True): this one has no gamma")
    gamma = bn.weight.detach().to("cpu", torch.float64).reshape(-1)
    if gamma.numel() != c_out:
        raise LatprofError(f"bn_scale: the BatchNorm has {gamma.numel()} channels but the conv "
                           f"has {c_out} outputs; pass the BatchNorm that follows this conv")
    return _out(gamma.abs())


def fpgm(weight: Tensor, *, bn: nn.BatchNorm2d | None = None, weight_prev: Tensor | None = None) -> Tensor:
    """Filter pruning via geometric median (He et al., CVPR 2019): a filter's summed Euclidean
    distance to all other filters of the layer. A filter near the geometric median is well
    represented by the others, so it is redundant and scores LOW; outlying filters score high."""
    f = _filters(weight)
    return _out(torch.cdist(f, f).sum(dim=1))


def acs(weight: Tensor, *, bn: nn.BatchNorm2d | None = None, weight_prev: Tensor | None = None) -> Tensor:
    """Training dynamics via adjusted cosine similarity (LAP, Chen et al., Neural Networks 2022).

    For each filter, subtract its own mean in each checkpoint and take the cosine between the
    two centred vectors (``weight_prev``: an earlier checkpoint of the same layer, ``weight``:
    the current one); the score is ``1 - ACS``, in [0, 2].

    Sign, our reading of LAP's "important filters are distinguished by their dynamic changes":
    a filter whose direction is still changing receives a substantial loss gradient, so the
    loss is sensitive to it and it is KEPT (high score); a filter whose direction has stopped
    moving (ACS near 1), including one decaying toward zero under weight decay with a fixed
    direction, gets little gradient and is pruned first. A centred filter of zero norm (all
    weights equal, e.g. an already-zeroed channel) has ACS 0 by convention.
    """
    if weight_prev is None:
        raise LatprofError("acs compares two checkpoints of the layer: pass weight_prev=... "
                           "(the same conv's weight from an earlier epoch)")
    now, before = _filters(weight), _filters(weight_prev)
    if now.shape != before.shape:
        raise LatprofError(f"acs: weight {tuple(weight.shape)} and weight_prev "
                           f"{tuple(weight_prev.shape)} must have the same shape")
    now = now - now.mean(dim=1, keepdim=True)
    before = before - before.mean(dim=1, keepdim=True)
    norms = now.norm(dim=1) * before.norm(dim=1)
    cos = torch.where(norms > 0, (now * before).sum(dim=1) / norms.clamp_min(1e-300), 0.0)
    return _out(1.0 - cos.clamp(-1.0, 1.0))


IMPORTANCE: dict[str, Criterion] = {"l1": l1, "l2": l2, "bn_scale": bn_scale, "fpgm": fpgm, "acs": acs}


def acs_regrowth(weight: Tensor, weight_prev: Tensor, keep: int, *, regrow: float = 0.1) -> list[int]:
    """LAP's filter selection: the ``keep`` filters to keep, by ACS with regrowth (sorted indices).

    Step 1: the ``keep`` filters with the highest ``acs`` score (ties: lower index first).
    Step 2, regrowth. Our reading of LAP ("filters pruned by mistake can grow back"): ACS looks
    only at the direction of a filter, so a filter that stopped turning but carries a large
    weight is dropped by it although the layer's output depends on it. Regrowth re-admits such
    filters by magnitude: the ``n = round(regrow * keep)`` lowest-ACS kept filters are exchange
    candidates, and so are the ``n`` dropped filters with the largest L1 norm (current weights).
    Pairing the largest-L1 dropped filter with the smallest-L1 candidate, and so on, each pair is
    swapped while the dropped filter's L1 is strictly larger. The kept set's size never changes
    and a filter only comes back if it beats, on L1, the weakest kept filters ACS ranked last.
    ``regrow=0`` is plain ACS selection. (LAP's abstract does not spell the rule out; this is
    the magnitude-based regrowth our brief describes, not a transcription of the paper.)
    """
    c_out = _filters(weight).shape[0]
    if isinstance(keep, bool) or not isinstance(keep, (int, np.integer)) or not 0 <= keep <= c_out:
        raise LatprofError(f"keep must be an integer in 0..{c_out} (the layer's filters), got {keep!r}")
    if isinstance(regrow, bool) or not isinstance(regrow, (int, float)) or not 0.0 <= regrow <= 1.0:
        raise LatprofError(f"regrow must be a share in [0, 1] of the kept filters, got {regrow!r}")
    score = acs(weight, weight_prev=weight_prev).numpy().astype(np.float64)
    by_acs = np.argsort(-score, kind="stable")  # best first, ties by index
    kept, dropped = list(by_acs[:keep]), list(by_acs[keep:])
    n = min(int(np.floor(regrow * keep + 0.5)), len(dropped))
    if n > 0:
        norm = l1(weight).numpy().astype(np.float64)
        out = sorted(kept[-n:], key=lambda i: (norm[i], i))  # weakest by ACS, smallest L1 first
        back = sorted(dropped, key=lambda i: (-norm[i], i))[:n]  # largest L1 first
        for o, b in zip(out, back):
            if norm[b] <= norm[o]:
                break
            kept[kept.index(o)] = b
    return sorted(int(i) for i in kept)


def option_values(scores: Tensor, options: Sequence[int]) -> np.ndarray:
    """Share of the layer's total importance kept by keeping the top-k channels, for each k.

    Normalising by the total makes groups of different widths and criteria of different
    scales comparable in one sum (the search objective). Scores must be >= 0 (all criteria
    here are). If they are all zero, channels count equally: the value is ``k / C_out``.
    Returns float64 of ``len(options)``, non-decreasing, 1.0 at ``k = C_out``.
    """
    s = torch.as_tensor(scores).detach().to("cpu", torch.float64).reshape(-1)
    c_out = s.numel()
    if c_out == 0 or not torch.isfinite(s).all() or (s < 0).any():
        raise LatprofError("option_values needs a non-empty vector of finite scores >= 0")
    ks = [int(k) for k in options]
    if any(k < 0 or k > c_out for k in ks) or any(b < a for a, b in zip(ks, ks[1:])):
        raise LatprofError(f"options must be ascending channel counts in 0..{c_out}, got {ks}")
    total = float(s.sum())
    if total <= 0:
        return np.array([k / c_out for k in ks], dtype=np.float64)
    kept = np.concatenate([[0.0], torch.sort(s, descending=True).values.cumsum(0).numpy()])
    out = kept[ks] / total
    out[np.array(ks) == c_out] = 1.0  # exact, whatever the summation order
    return out


def retained(scores: Sequence[Tensor], counts: Sequence[int]) -> float:
    """Mean over groups of the share of each group's importance that keeping counts[k] of its
    channels holds, the top-scored first (`option_values`): one figure for any pruned variant,
    latprof's or a peer's, of how much of the original's channels it keeps by the criterion."""
    if not scores:
        return 1.0
    return float(np.mean([option_values(s, [k])[0] for s, k in zip(scores, counts)]))
