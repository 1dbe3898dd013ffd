"""The closed loop's rules (`pipeline.search` runs it): the budgets candidates are searched at,
how far under the target a measurement must land, where one more round searches, and how the
latency model is corrected by what the loop measured."""

from __future__ import annotations

import numpy as np

from latprof.prune import latmodel

#: Budgets, as shares of the target, at which candidates are searched when this machine can
#: measure them (the closed loop picks among them by measurement).
CANDIDATE_BUDGETS = (1.0, 0.96, 0.92, 0.88, 0.84)
#: Rounds of candidates when none measures under the target.
MAX_ROUNDS = 3
#: The closed loop accepts a measured latency only this far under the target: two whole-model
#: measurements of one model on this project's shared CPU differed by up to ~5%, and the final
#: report measures again.
MEASURE_MARGIN = 0.03
#: How far under the limit the chosen candidate may land before one more round of budgets is
#: searched between it and the next candidate over (`landing_shares`).
LANDING = 0.02


def recalibrate_locally(lm: latmodel.LatencyModel, measured: list[tuple[list[int], float]],
                        original_us: float) -> None:
    """Shift the model's constant so that it reads true on the candidates the closed loop measured
    (`measured`: counts and ratio to the original): the median of measured - predicted over them
    is added to `rest_us` (the scale from `calibrate` stays). A search exploits the model where it
    is optimistic: on googlenet (64x64, one CPU thread) the configurations dp picked measured 1-16%
    above a fit on full, smallest, halfway and random models (`bench/probes/search_picks.py`, two
    runs; docs/protocol.md "Where the search looks"). The candidates lie where the next round
    searches, so their error is the one that matters there; refitting the slope on points that
    close together would not be."""
    base = lm.rest_us - lm.local_shift_us
    off = _offsets(lm, measured, original_us, base)
    if off:
        lm.local_shift_us = float(np.median(off))
        lm.rest_us = base + lm.local_shift_us
        lm.local = len(off)


def held_out_prediction(lm: latmodel.LatencyModel, measured: list[tuple[list[int], float]], pick: list[int],
                        original_us: float) -> float | None:
    """The pick's latency (us) as the model predicts it with its constant shifted by the median
    error of the *other* candidates the closed loop measured (`measured`, as in
    `recalibrate_locally`): the model corrected where the search looks, not by the pick's own
    measurement. None when no other candidate was measured."""
    base = lm.rest_us - lm.local_shift_us
    off = _offsets(lm, [(c, r) for c, r in measured if list(c) != list(pick)], original_us, base)
    return lm.scale * lm.conv_sum(pick) + base + float(np.median(off)) if off else None


def _offsets(lm: latmodel.LatencyModel, measured, original_us: float, base: float) -> list[float]:
    off = [r * original_us - (lm.scale * lm.conv_sum(c) + base) for c, r in measured]
    return [o for o in off if np.isfinite(o)]


def landing_shares(found: dict, best: tuple, limit: float, predicted=None) -> tuple[float, ...]:
    """Budgets for one more round when the best candidate under the limit landed more than
    `LANDING` under it and a candidate of more value measured over it: interpolated on measured
    latency between the two (a search of budgets 4% apart with a 3% margin landed 4-14% under
    its targets in the value benchmark). `predicted(cand)`: the model's prediction now (after
    `recalibrate_locally`), in the units of `limit`; the budgets come back in those units. Without
    it, the candidates' budget shares are interpolated instead. () when there is nothing to refine."""
    got, cand, share = best
    over = [(s, g, c) for g, c, s in found.values() if g > limit and c.result.value > cand.result.value and s > share]
    if got >= limit * (1 - LANDING) or not over:
        return ()
    o_share, o_got, o_cand = min(over, key=lambda t: t[:2])
    at, o_at = (share, o_share) if predicted is None else (predicted(cand), predicted(o_cand))
    aim = at + (limit - got) / (o_got - got) * (o_at - at)
    return tuple(at + f * (aim - at) for f in (0.5, 0.8, 1.0))
