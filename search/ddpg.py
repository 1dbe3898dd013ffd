"""Layer-by-layer reinforcement learning over channel counts, after LAP (an AMC-family DDPG agent).

Episode. The agent walks the groups in problem order. At group t it sees a state, answers a
pruning ratio ``a_t`` in [0, 1], and the group keeps the FEWEST channels whose kept share
``options[t][j] / options[t][-1]`` is ``>= 1 - a_t`` (so ``a_t = 0`` keeps the original count).

State (``N_FEATURES`` values, each in [0, 1]):

0. position ``t / (T - 1)``;  1. the group count, as ``1 / T`` (one step's share of the episode);
2. the group's original channel count / the largest original count;
3. its number of options / the largest number of options;
4. share of the required cut still to make: ``(L_now - target) / (L_full - target)``, clipped;
5. latency already cut: ``(L_full - L_now) / (L_full - L_anchor)``, clipped;
6. the previous group's realised pruning ratio ``1 - kept share`` (0 at t = 0);
7. the group's latency sensitivity (below).

``L_now`` is the latency with the groups decided so far and the rest at their original count;
``L_anchor`` that of the anchor (``common.Repairer``: the smallest configuration, or the
lowest-latency one when the smallest is over target). For these features only, forbidden (NaN)
cells count as their term's largest measured entry; feasibility always uses exact latencies.

Latency sensitivity. LAP derives it from FLOPs; latprof derives it from the measured table: the
predicted latency that group g saves per channel removed when it drops from its original count
to its smallest option (every other group at its original count), clipped at 0 (CPU tables can
be non-monotonic), divided by the largest such value over groups.

Budget enforcement (AMC-style). A choice is allowed only if the configuration "groups so far as
chosen, this group at option j, every later group at the anchor's option" is within the target.
The anchor is within target, so this always leaves an option and every episode ends within target
whatever the table's NaN cells and non-monotonic steps. Among allowed options the agent gets the
largest index ``<= j`` it asked for, or else the smallest allowed one. The repair rule of
``common`` is applied to the final configuration as a guard (a no-op when it is feasible).

Reward, ``reward="lap"`` (default; LAP: accuracy error combined with latency sensitivity)::

    R = -(1 - f) * prod_t (s_t * (1 - p_t)) ** (1 / T)

``f`` is ``fitness(choice)`` when a fitness is given (expected: accuracy in [0, 1]; other scales
still rank correctly, as R rises with f), else ``problem.total_value(choice)`` divided by the
full configuration's value (1 when that is not positive). ``p_t`` is the realised pruning ratio.
The geometric mean keeps R in [-1, 0] whatever T is, where a plain product would vanish for deep
networks. ``s_t`` is floored at ``SENSITIVITY_FLOOR`` inside R so a group whose latency does not
fall (one option, or a non-monotonic table) cannot zero every reward. The ``s_t`` are fixed per
problem, so in this product they only scale R; sensitivity steers the policy through the state.
``reward="error"`` is AMC's resource-constrained reward ``R = -(1 - f)``. Measured on random
tables (see the tests' problems): under a hard budget the ``(1 - p_t)`` factor also rewards
pruning past what the target needs, and "lap" learned less than "error" (20 groups, 300
episodes: 0.84 vs 0.87 of the optimum); at 100 episodes neither beat random actions by much.

Learning (AMC/LAP settings). Actor: state -> 300 tanh -> 300 tanh -> 1 sigmoid. Critic:
(state, action) -> 300 ReLU -> 300 ReLU -> 1. Adam (actor 1e-4, critic 1e-3), soft target
updates with tau 0.01, a replay buffer of transitions ``(s_t, p_t, R - b, s_{t+1})``, discount 1
(episodic); ``b`` is a moving average of episode rewards (weight ``BASELINE_ALPHA`` on the
newest, started at the first reward), as in AMC. Episode 0 asks for ``a_t = 0`` everywhere (keep
all the budget allows: a front-to-back greedy fill, so that configuration is always a
candidate); the other warm-up episodes take uniform random actions; later ones a truncated-normal
draw (on [0, 1]) around the actor's action, with sigma ``sigma * sigma_decay ** (episode -
warmup)``. After each post-warm-up episode: ``updates`` gradient steps on minibatches of
``batch`` transitions, with torch on one thread (restored around the fitness call): on this
project's 2-core CPU an update took 6.5 ms on one thread and 48 ms on two.

Defaults are sized for a CPU: 100 episodes (25 warm-up), 20 updates of 64 per episode, about
10 s per search on that CPU, nearly all in the 1500 updates. At most ``episodes`` fitness calls;
the cache makes repeated configurations free. The searcher is for accuracy-in-the-loop fitness
as in LAP; for table-only values ``dp`` and ``evo`` are faster and better. Deterministic for a
seed (numpy Generator; torch seeded inside ``torch.random.fork_rng`` so the caller's torch RNG
is left alone). torch is imported on first use, so ``latprof.search`` itself needs only numpy.
"""

from __future__ import annotations

import contextlib
import copy
import time

import numpy as np

from latprof.errors import LatprofError

from .common import Fitness, Repairer, Scorer, SearchResult, check_int
from .problem import Problem

N_FEATURES = 8
BASELINE_ALPHA = 0.5  # weight of the newest episode in the reward baseline
SENSITIVITY_FLOOR = 0.05  # smallest s_t used inside the reward
REWARDS = ("lap", "error")


class _Env:
    """One problem as an episodic environment: static features, state, and the allowed option."""

    def __init__(self, problem: Problem, repairer: Repairer):
        p = self.problem = problem
        self.repairer = repairer
        self.anchor = repairer.anchor
        self.T = p.n_groups
        self.filled = [np.where(np.isnan(t.table), np.nanmax(t.table) if np.isfinite(t.table).any()
                                else 0.0, t.table) for t in p.terms]
        self.share = [np.array(o, dtype=np.float64) / o[-1] for o in p.options]
        full = p.full()
        self.l_full = self._lat(full)
        self.need = self.l_full - p.target
        self.span = self.l_full - self._lat(self.anchor)
        per_channel = np.zeros(self.T)
        for g, opts in enumerate(p.options):
            if len(opts) > 1:
                low = list(full)
                low[g] = 0
                per_channel[g] = max(self.l_full - self._lat(low), 0.0) / (opts[-1] - opts[0])
        top = per_channel.max()
        self.sensitivity = per_channel / top if top > 0 else per_channel
        orig = np.array([o[-1] for o in p.options], dtype=np.float64)
        n_opts = np.array([len(o) for o in p.options], dtype=np.float64)
        self.static = np.stack([np.arange(self.T) / max(self.T - 1, 1), np.full(self.T, 1.0 / self.T),
                                orig / orig.max(), n_opts / n_opts.max(), self.sensitivity], axis=1)

    def _lat(self, c) -> float:
        """Latency with forbidden cells filled (for state features only)."""
        total = self.problem.constant
        for t, tab in zip(self.problem.terms, self.filled):
            total += tab[tuple(c[g] for g in t.groups)]
        return float(total)

    def state(self, t: int, c, prev: float) -> np.ndarray:
        """Features of group t; ``c`` holds the choices so far, original counts after t."""
        l_now = self._lat(c)
        left = (l_now - self.problem.target) / self.need if self.need > 0 else 0.0
        cut = (self.l_full - l_now) / self.span if self.span > 0 else 0.0
        st = self.static[t]
        s = np.array([st[0], st[1], st[2], st[3], left, cut, prev, st[4]])
        return np.clip(s, 0.0, 1.0).astype(np.float32)

    def wanted(self, t: int, action: float) -> int:
        """Fewest channels whose kept share is >= 1 - action."""
        return int(np.argmax(self.share[t] >= 1.0 - float(action) - 1e-9))

    def allowed(self, t: int, c, j: int) -> int:
        """Budget enforcement: the option for group t closest below ``j`` that keeps the target
        reachable with every later group at the anchor's option (see the module docstring)."""
        p, rep = self.problem, self.repairer
        x = list(c[:t]) + list(self.anchor[t:])
        prof = rep.profile(x, t)
        base = self._lat_big(x) - prof[x[t]]
        est = base + prof
        slack = 1e-9 * (1.0 + abs(p.target))
        order = list(range(j, -1, -1)) + list(range(j + 1, len(p.options[t])))
        for k in order:
            if est[k] <= p.target + slack:
                x[t] = k
                if p._latency(tuple(x)) <= p.target:
                    return k
        return self.anchor[t]  # always allowed: it leaves the previous, feasible configuration

    def _lat_big(self, x) -> float:
        """Latency with forbidden cells charged the repairer's huge latency."""
        total = self.problem.constant
        for t, tab in zip(self.problem.terms, self.repairer.tables):
            total += tab[tuple(x[g] for g in t.groups)]
        return float(total)


def _truncnorm(rng: np.random.Generator, mu: float, sigma: float) -> float:
    """A normal draw around ``mu`` truncated to [0, 1] (rejection: with sigma <= 0.5 at least ~47% of
    draws are accepted; after 200 misses, ``mu`` clipped)."""
    if sigma > 0:
        for _ in range(200):
            x = float(rng.normal(mu, sigma))
            if 0.0 <= x <= 1.0:
                return x
    return min(max(float(mu), 0.0), 1.0)


def _agent(n_in: int, hidden: int, actor_lr: float, critic_lr: float, tau: float, discount: float):
    """Actor, critic, their targets and optimisers; returns ``(act, update)`` closures."""
    import torch
    from torch import nn

    actor = nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                          nn.Linear(hidden, 1), nn.Sigmoid())
    critic = nn.Sequential(nn.Linear(n_in + 1, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                           nn.ReLU(), nn.Linear(hidden, 1))
    actor_t, critic_t = copy.deepcopy(actor), copy.deepcopy(critic)
    opt_a = torch.optim.Adam(actor.parameters(), lr=actor_lr)
    opt_c = torch.optim.Adam(critic.parameters(), lr=critic_lr)

    def act(s: np.ndarray) -> float:
        with torch.no_grad():
            return float(actor(torch.from_numpy(s)[None])[0, 0])

    def update(s, a, r, s2, done):
        s, a, r, s2, done = (torch.from_numpy(v) for v in (s, a, r, s2, done))
        with torch.no_grad():
            q_next = critic_t(torch.cat([s2, actor_t(s2)], dim=1))
            y = r + discount * (1.0 - done) * q_next
        loss_c = nn.functional.mse_loss(critic(torch.cat([s, a], dim=1)), y)
        opt_c.zero_grad()
        loss_c.backward()
        opt_c.step()
        loss_a = -critic(torch.cat([s, actor(s)], dim=1)).mean()
        opt_a.zero_grad()
        loss_a.backward()
        opt_a.step()
        with torch.no_grad():
            for net, tgt in ((actor, actor_t), (critic, critic_t)):
                for w, wt in zip(net.parameters(), tgt.parameters()):
                    wt.mul_(1.0 - tau).add_(w, alpha=tau)

    return act, update


@contextlib.contextmanager
def _torch_threads(n: int):
    """torch's intra-op thread count set to ``n`` for a block, then restored (it is process-wide)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield old
    finally:
        torch.set_num_threads(old)


def _check_float(name: str, value, low: float, high: float, low_open: bool = False) -> float:
    v = float(value) if isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) else None
    if v is None or not (low < v if low_open else low <= v) or not v <= high:
        bound = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise LatprofError(f"{name} must be a number in {bound}, got {value!r}")
    return v


# One function: the episode loop, the replay buffer and the actor/critic updates share state
# that splitting would only pass around.
def search_ddpg(problem: Problem, *, seed: int = 0, fitness: Fitness | None = None,
                episodes: int = 100, warmup: int = 25, batch: int = 64, updates: int = 20,
                hidden: int = 300, actor_lr: float = 1e-4, critic_lr: float = 1e-3,
                tau: float = 0.01, sigma: float = 0.5, sigma_decay: float = 0.95,
                discount: float = 1.0, memory: int = 20000, reward: str = "lap") -> SearchResult:
    """LAP's DDPG agent within the target; returns the best configuration of all episodes.
    ``history`` has ``episodes`` entries (best fitness so far after each episode)."""
    t0 = time.perf_counter()
    episodes = check_int("episodes", episodes)
    warmup = check_int("warmup", warmup, low=0)
    batch = check_int("batch", batch)
    updates = check_int("updates", updates, low=0)
    hidden = check_int("hidden", hidden)
    memory = check_int("memory", memory)
    actor_lr = _check_float("actor_lr", actor_lr, 0.0, 1.0, low_open=True)
    critic_lr = _check_float("critic_lr", critic_lr, 0.0, 1.0, low_open=True)
    tau = _check_float("tau", tau, 0.0, 1.0)
    sigma = _check_float("sigma", sigma, 0.0, 10.0)
    sigma_decay = _check_float("sigma_decay", sigma_decay, 0.0, 1.0)
    discount = _check_float("discount", discount, 0.0, 1.0)
    if reward not in REWARDS:
        raise LatprofError(f"reward must be one of {', '.join(REWARDS)}, got {reward!r}")
    import torch

    rng = np.random.default_rng(seed)
    repairer = Repairer(problem)  # raises if no configuration meets the target
    env = _Env(problem, repairer)
    score = Scorer(problem, fitness)
    T = env.T
    v_full = problem.total_value(problem.full())
    scale = v_full if fitness is None and v_full > 0 else 1.0
    s_reward = float(np.exp(np.mean(np.log(np.maximum(env.sensitivity, SENSITIVITY_FLOOR)))))

    buf_s = np.zeros((memory, N_FEATURES), np.float32)
    buf_s2 = np.zeros((memory, N_FEATURES), np.float32)
    buf_a, buf_r, buf_d = (np.zeros((memory, 1), np.float32) for _ in range(3))
    stored = 0
    baseline = None
    best, history = None, []

    def scored(c) -> float:  # the caller's fitness (a model evaluation) gets all its threads
        with _torch_threads(caller_threads):
            return score(c)

    # The nets are tiny (batch 64 x 300 units): one thread beats several, which only synchronise.
    with torch.random.fork_rng(devices=[]), _torch_threads(1) as caller_threads:
        torch.manual_seed(seed)
        act, update = _agent(N_FEATURES, hidden, actor_lr, critic_lr, tau, discount)
        for ep in range(episodes):
            c, prev = list(problem.full()), 0.0
            states, ratios = [], []
            noise = sigma * sigma_decay ** (ep - warmup) if ep >= warmup else None
            for t in range(T):
                s = env.state(t, c, prev)
                if ep == 0:
                    a = 0.0  # keep all the budget allows: the front-to-back greedy fill
                else:
                    a = float(rng.random()) if noise is None else _truncnorm(rng, act(s), noise)
                c[t] = env.allowed(t, c, env.wanted(t, a))
                prev = 1.0 - float(env.share[t][c[t]])
                states.append(s)
                ratios.append(prev)
            choice = repairer.repair(c)  # guard: budget enforcement already made it feasible
            f = scored(choice)
            if best is None or f > score(best):
                best = choice
            history.append(score(best))

            r = -(1.0 - f / scale)
            if reward == "lap":
                r *= s_reward * float(np.exp(np.mean(np.log(1.0 - np.array(ratios)))))
            adv = 0.0 if baseline is None else r - baseline
            baseline = r if baseline is None else baseline + BASELINE_ALPHA * (r - baseline)
            for t in range(T):
                i = stored % memory
                buf_s[i], buf_a[i, 0], buf_r[i, 0] = states[t], ratios[t], adv
                buf_s2[i] = states[t + 1] if t + 1 < T else states[t]
                buf_d[i, 0] = 1.0 if t + 1 == T else 0.0
                stored += 1
            if ep >= warmup:
                n = min(stored, memory)
                for _ in range(updates):
                    idx = rng.integers(0, n, size=min(batch, n))
                    update(buf_s[idx], buf_a[idx], buf_r[idx], buf_s2[idx], buf_d[idx])

    return SearchResult(choice=best, value=score(best), latency=problem.latency(best),
                        evaluations=score.evaluations, seconds=time.perf_counter() - t0,
                        name="ddpg", history=history)
