"""What `latprof prune` reports: each candidate model (predicted and measured latency, MACs,
parameters) and the run as a whole, with the verdict."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch.nn as nn

from latprof.prune import flops, surgery


@dataclass
class Candidate:
    name: str
    counts: dict[str, tuple[int, int]]   # conv name -> (c_in, c_out)
    predicted_ms: float | None
    macs: int
    params: int
    measured_ms: float | None = None
    measured_iqr_ms: tuple[float, float] | None = None   # p25, p75 of the samples behind measured_ms
    measured_ratio: float | None = None   # median per-round latency over the original's, timed together
    #: share of the original's channel importance the model keeps: over every channel group
    #: (residual ones too), the mean share of the group's scores its kept count holds, counting
    #: the top-scored channels (`importance.retained`); 1.0 for the original
    importance: float | None = None
    #: median ratio to the original in each final session (each in a fresh process, `prune
    #: --confirm`): how far two measurements of the same saved model differ
    session_ratios: list = field(default_factory=list)

    @property
    def sessions_apart(self) -> float:
        """The largest distance of one session's median ratio from the pooled median, relative
        (0 with fewer than two sessions)."""
        ss, m = self.session_ratios, self.measured_ratio
        return float(max(abs(s / m - 1) for s in ss)) if len(ss) > 1 and m else 0.0


@dataclass
class PruneReport:
    model: str
    device: str
    context: dict
    algo: str
    importance: str
    target_ms: float
    calibrated: bool
    scale: float
    rest_ms: float
    original: Candidate
    pruned: Candidate
    groups: list[dict]
    search_seconds: float
    evaluations: int
    local_points: int = 0      # the constant (rest_ms) last shifted to fit this many closed-loop candidates
    baselines: list[Candidate] = field(default_factory=list)   # at latprof's MACs
    peers: list[Candidate] = field(default_factory=list)       # pruned to the target by measurement
    #: each peer's MACs at latprof's measured latency, interpolated on its measured models (None: outside them)
    peer_macs_at_equal_latency: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    attempts: list[dict] = field(default_factory=list)   # closed-loop searches: budget, predicted, measured
    fitness: str = "importance"
    fitness_value: float | None = None   # retained importance, or validation accuracy after brief training
    accuracy: dict = field(default_factory=dict)   # with --data: test accuracy of original and pruned
    warnings: list[str] = field(default_factory=list)   # software versions that differ from the table's
    search_note: str = ""        # what the searcher says of its result (e.g. dp fell back to evo, and why)
    target_ratio: float | None = None   # --target-ratio: the target as a share of the original's latency
    sessions: int = 0            # whole-model timing sessions the original's latency is pooled over
    #: the pick's median ratio in the closed loop's session, which chose it (not in the verdict:
    #: a candidate that read low there was likelier to be chosen)
    loop_ratio: float | None = None
    confirmed: bool = False      # the final measurement ran in fresh processes (`prune --confirm`)
    #: the pick's predicted latency with the model's constant shifted on the *other* candidates the
    #: closed loop measured (`loop.held_out_prediction`): the model where the search looks
    held_out_ms: float | None = None
    cuda_graphs: bool = False    # whole models timed as CUDA graph replays (--cuda-graphs)
    #: with --cuda-graphs, per model name: graph_ms, eager_ms, eager_over_graph, launch_bound
    launch: dict = field(default_factory=dict)
    fits: dict = field(default_factory=dict, repr=False)  # root conv -> its c_out LineFit, for plots; not saved

    @property
    def met(self) -> bool:
        got = self.pruned.measured_ms if self.pruned.measured_ms is not None else self.pruned.predicted_ms
        return got is not None and got <= self.target_ms * 1.0000001

    @property
    def sessions_apart(self) -> float:
        """The largest distance of one session's median ratio of the pick from the pooled median,
        relative: the final sessions' (`Candidate.sessions_apart`) and the closed loop's, which is
        not pooled but is a measurement of the same model all the same."""
        c = self.pruned
        loop = abs(self.loop_ratio / c.measured_ratio - 1) if self.loop_ratio and c.measured_ratio else 0.0
        return float(max(c.sessions_apart, loop))

    @property
    def noise_rel(self) -> float | None:
        """How well the pick's latency is known, relative to its median: the larger of half its
        samples' interquartile range and `sessions_apart` (the same model timed in other sessions
        and processes). None when it was not measured."""
        c = self.pruned
        if not c.measured_ms or c.measured_iqr_ms is None:
            return None
        spread = (c.measured_iqr_ms[1] - c.measured_iqr_ms[0]) / (2 * c.measured_ms)
        return float(max(spread, self.sessions_apart))

    @property
    def verdict(self) -> str:
        """"met" / "missed" by the pooled median, and "within noise" when the measurement does not
        settle it: the target lies inside the samples' interquartile range, or closer to the
        median than one session's median is (the closed loop's included)."""
        word = "met" if self.met else "missed"
        iqr = self.pruned.measured_iqr_ms
        if iqr is not None and iqr[0] <= self.target_ms <= iqr[1]:
            return f"{word}, within noise (the target lies between the samples' p25 and p75)"
        got, apart = self.pruned.measured_ms, self.sessions_apart
        if got and abs(got / self.target_ms - 1) <= apart:
            return (f"{word}, within noise (the median is {got / self.target_ms - 1:+.1%} from the target; "
                    f"the sessions' medians, the closed loop's included, differ from it by up to {apart:.1%})")
        return word

    def to_dict(self) -> dict:
        d = asdict(replace(self, fits={}))
        del d["fits"]
        d["target_met"] = self.met
        d["verdict"] = self.verdict
        d["noise_rel"] = self.noise_rel
        return d


def candidate(name: str, model: nn.Module, size, predicted_us: float | None) -> Candidate:
    macs, params = flops.count(model, size)
    pred = None if predicted_us is None or not np.isfinite(predicted_us) else predicted_us / 1e3
    return Candidate(name, surgery.channel_counts(model), pred, macs, params)
