"""The zoo test: the smallest member of every torchvision classification family, pruned end to end.

Per model: a synthetic table from the latency oracle (`tests/oracle.py`: the lines a sweep
measures, every 8th count, plus every shape the search space looks up), `pipeline.load` on it,
a search at 0.5 (dp) and 0.8 (evo) of the full predicted latency, and the surgery (also of
the smallest configuration, every group at its smallest option). Checked: the
pick is within the target, the pruned model runs and gives one row of 1000 logits per image,
every conv has the channel counts the search chose, and the pruned model computes exactly what
the original computes with the removed channels zeroed (`masked_original`). Small inputs keep
it fast: the groups and the surgery do not depend on the image size, only each conv's spatial
extent does. A family latprof cannot prune today is an xfail with the error observed."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

from latprof import models
from latprof.errors import LatprofError
from latprof.prune import graph as graphs
from latprof.prune import pipeline
from latprof.prune import surgery
from latprof.spec import Context, ConvSpec
from oracle import oracle_table

SMALL = (3, 32, 32)
#: The smallest member of each family, with the input it is tested at (AlexNet's pooling needs
#: 63x63 at least, Inception-v3's 75x75; at 32x32 the oracle's 2 us per conv makes half of
#: MobileNetV3-small's latency fixed, and 0.5 of it out of reach).
FAMILIES = {
    "alexnet": (3, 64, 64), "vgg11": SMALL, "resnet18": SMALL, "resnext50_32x4d": SMALL, "wide_resnet50_2": SMALL,
    "densenet121": SMALL, "googlenet": SMALL, "inception_v3": (3, 75, 75), "mobilenet_v2": SMALL,
    "mobilenet_v3_small": (3, 64, 64), "mnasnet0_5": SMALL, "shufflenet_v2_x0_5": SMALL, "squeezenet1_0": SMALL,
    "efficientnet_b0": SMALL, "efficientnet_v2_s": SMALL, "regnet_x_400mf": SMALL, "regnet_y_400mf": SMALL,
    "convnext_tiny": SMALL,
}
#: Families latprof cannot prune today, with the error they end in (a LatprofError unless
#: `XFAIL_RAISES` says otherwise: any other failure is a real one).
XFAIL: dict[str, str] = {}
XFAIL_RAISES: dict = {}
#: The least ratio of a family's latency the search is asked for, where 0.5 is out of reach:
#: ShuffleNet keeps the channels that reach or leave its shuffles whole (`Graph.frozen`), and its
#: smallest configuration is 0.55 of the full latency on the oracle table.
REACH = {"shufflenet_v2_x0_5": 0.6}
#: (target ratio, searcher): dp is exact (it falls back to evo on too wide a graph), evo handles any graph.
#: "smallest": no search, every group at its smallest option (the most any search can remove).
TARGETS = [(0.5, "dp"), (0.8, "evo"), (None, "smallest")]
#: Every coupled group is pruned (residual adds and SE blocks too): the hardest case for surgery,
#: and the one where 0.5 of the latency is within reach for every family. With the default
#: (residual groups kept whole) an SE block counts as residual, and the smallest configuration
#: is 0.85 of the full latency on mobilenet_v3_small, 0.94 on efficientnet_b0 (oracle table).
KEEP_RESIDUAL = False
EVO = dict(population=12, cycles=4, mutations=6, crossovers=6, parents=4)


def _params():
    for name in FAMILIES:
        marks = [pytest.mark.slow]
        if name in XFAIL:
            marks.append(pytest.mark.xfail(reason=XFAIL[name], raises=XFAIL_RAISES.get(name, LatprofError),
                                           strict=False))
        for ratio, algo in TARGETS:
            yield pytest.param(name, ratio, algo, marks=marks, id=f"{name}-{ratio or ''}-{algo}".replace("--", "-"))


@pytest.fixture(scope="module")
def oracles(tmp_path_factory):
    """model -> its oracle (table and the pipeline's Setup), built once per model."""
    cache: dict[str, object] = {}

    def get(name: str):
        if name not in cache:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)   # torchvision's init notes
                cache[name] = oracle_table(tmp_path_factory.mktemp(name) / "t.parquet", name, Context(),
                                           input_size=FAMILIES[name], every=8, keep_residual=KEEP_RESIDUAL)
        return cache[name]
    return get


def _randomise_norms(net: nn.Module, size: tuple[int, int, int]) -> None:
    """Non-trivial BatchNorm statistics and affine terms, so that masking is tested for real: the
    running statistics of random images (through BatchNorms of unit scale and zero shift) and a
    random scale and shift. The shift is mostly positive so that few channels die in the ReLUs,
    where a swapped channel would go unnoticed. Deterministic: the same values on every call."""
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    momentum = [m.momentum for m in norms]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in norms:
            m.reset_parameters()   # running mean 0, var 1, weight 1, bias 0
            m.momentum = None      # cumulative average over the calibration batch
            m.train()
        net(torch.randn(8, *size, generator=gen))
        for m, mom in zip(norms, momentum):
            m.eval()
            m.momentum = mom
            m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.copy_(0.5 * torch.rand(m.num_features, generator=gen) - 0.1)


def _layer_norm_without(removed: list[int]):
    """A forward hook for a LayerNorm over channels: normalise over the channels not in `removed`
    (what the pruned LayerNorm computes) and write zeros in the removed ones. torchvision's
    LayerNorm2d normalises dim 1 of NCHW; ConvNeXt's blocks normalise the last dim of NHWC."""
    def hook(m, args, out):
        x = args[0]
        dim = 1 if type(m).__name__ == "LayerNorm2d" else x.dim() - 1
        xc = x.movedim(dim, -1)
        keep = torch.ones(xc.shape[-1], dtype=torch.bool)
        keep[removed] = False
        y = torch.zeros_like(xc)
        y[..., keep] = F.layer_norm(xc[..., keep], (int(keep.sum()),), m.weight[keep], m.bias[keep], m.eps)
        return y.movedim(-1, dim)
    return hook


def masked_original(graph: graphs.Graph, removal: dict[int, list[int]], model: nn.Module) -> nn.Module:
    """`model` (an unpruned copy of `graph`'s model) computing as if the channels in `removal` were
    gone, without removing any: every layer that writes a removed channel (the group's convs, and
    the Linear layers and BatchNorms torch-pruning couples to it, at the channel positions it maps
    the group to, e.g. offset inside a concatenation) writes zeros there, and a LayerNorm over
    channels leaves them out of its statistics."""
    names = {m: n for n, m in graph.model.named_modules()}
    layers = dict(model.named_modules())
    norms: dict[str, list[int]] = {}
    with torch.no_grad():
        for g in graph.groups:
            idxs = removal.get(g.index)
            if not idxs:
                continue
            writes = [(n, idxs) for n in g.out_convs]
            group = graph.dg.get_pruning_group(graph.conv(g.root), graph.out_handler(g.root), idxs=idxs)
            for dep, at in group:
                m = dep.target.module
                if "out_channels" not in getattr(dep.handler, "__name__", ""):
                    continue
                if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
                    writes.append((names[m], list(at)))
                elif isinstance(m, nn.LayerNorm):
                    norms.setdefault(names[m], []).extend(at)
            for name, at in writes:
                m = layers[name]
                m.weight[at] = 0
                if m.bias is not None:
                    m.bias[at] = 0
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean[at] = 0
    for name, removed in norms.items():
        layers[name].register_forward_hook(_layer_norm_without(sorted(set(removed))))
    return model


def expected_channels(graph: graphs.Graph, counts: list[int]) -> dict[str, tuple[int, int]]:
    """Each conv's (c_in, c_out) (a Linear's features) after keeping counts[k] channels of group k:
    a producer's c_out is its group's count, a consumer's c_in loses what every group it reads
    lost (a Linear after a flatten: that many channels' features each)."""
    out = {}
    units = {layer.name: layer.unit for layer in models.conv_layers(graph.model, graph.input_size)}
    for name, (c_in, c_out) in surgery.channel_counts(graph.model).items():
        for g in graph.groups:
            lost = g.channels - counts[g.index]
            if name in g.out_convs:
                c_out -= lost
            if name in g.in_convs:   # a depthwise conv is in both lists: c_in = c_out = groups
                c_in -= lost * units.get(name, 1)
        out[name] = (c_in, c_out)
    return out


@pytest.fixture(autouse=True)
def _same_weights_every_run():
    """torchvision builds models with the global RNG: seed it, so a failure reproduces. (Unseeded,
    efficientnet_b0 at 0.8 missed exactness in 2 of 10 runs: some prunings of it are not exact.)"""
    torch.manual_seed(0)


@pytest.mark.parametrize("name,ratio,algo", list(_params()))
def test_zoo_prunes_to_the_target_exactly(oracles, tmp_path, name, ratio, algo):
    oracle = oracles(name)
    assert oracle.requests == [], f"prune asked for shapes beyond what a sweep measures: {oracle.requests}"
    setup = oracle.setup
    assert not setup.lm.estimated, "prune priced pairs a sweep measures from two lines instead"
    lm, size = setup.lm, setup.size
    _randomise_norms(setup.original, size)   # search deep-copies the original: the pruned model gets these too
    if algo == "smallest":   # every group at its smallest option: what a search may reach at most
        counts = [opts[0] for opts in lm.options]
        graph = graphs.analyse(copy.deepcopy(setup.original), size, keep_residual=KEEP_RESIDUAL)
        pruned = surgery.prune(graph, surgery.choose(graph, counts, "l1")).eval()
    else:
        cfg = pipeline.PruneConfig(model=name, table=str(oracle.path), input_size=size, algo=algo, measure=False,
                                   keep_residual=KEEP_RESIDUAL, out=tmp_path,
                                   search_options=EVO if algo == "evo" else {})
        full = lm.predict(lm.full_counts())
        ratio = max(ratio, REACH.get(name, 0.0))
        found = pipeline.search(cfg, setup, None, lambda: ratio * full)
        counts, pruned = found.counts, found.pruned.eval()
        assert lm.predict(counts) <= ratio * full * (1 + 1e-9)
        assert all(c in opts for c, opts in zip(counts, lm.options))
    x = torch.randn(4, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = pruned(x)
    assert got.shape == (4, 1000) and torch.isfinite(got).all()

    # every conv has the channels the search chose (load's graph: its model is never pruned)
    assert surgery.channel_counts(pruned) == expected_channels(lm.graph, counts)
    assert [surgery.channel_counts(pruned)[g.root][1] for g in lm.graph.groups] == counts

    # surgery is exact: the original with the same channels zeroed computes the same
    removal = surgery.choose(lm.graph, counts, "l1")
    masked = masked_original(lm.graph, removal, copy.deepcopy(setup.original)).eval()
    with torch.no_grad():
        want = masked(x)
    # float32 sums in another order differ by ~1e-6 of the largest logit; one removed channel
    # swapped for a kept one moves the logits by ~5e-4 of it or more (seen on 6 families)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


def test_oracle_latency_is_a_staircase_in_both_channel_counts():
    from oracle import oracle_us

    base = Context().apply(models.conv_layers(*models.load("small_cifar10"))[1].spec)
    at = [oracle_us(base.replace(c_out=c)) for c in (9, 16, 17, 32, 33)]
    assert at[0] == at[1] < at[2] == at[3] < at[4]           # steps after every 16th output channel
    at = [oracle_us(base.replace(c_in=c)) for c in (1, 8, 9, 16, 17)]
    assert at[0] == at[1] < at[2] == at[3] < at[4]           # and after every 8th input channel


def test_oracle_table_holds_every_shape_prune_looks_up(tmp_path):
    from latprof.models import lines as plan
    from latprof.tables import io as tbl
    from oracle import oracle_us

    size = (3, 16, 16)
    oracle = oracle_table(tmp_path / "t.parquet", "small_cifar10", input_size=size)
    df = tbl.read(oracle.path).df
    have = {spec.key(): lat for spec, lat in zip(map(ConvSpec.from_row, df.to_dict("records")), df["latency_us_p50"])}
    lines = plan.load_lines("small_cifar10", Context(), input_size=size)[1]
    assert all(s.key() in have for s in plan.line_specs(lines))
    assert all(lat == oracle_us(ConvSpec(*key)) for key, lat in have.items())
    assert oracle.rounds[0] > 0 and oracle.requests == []    # the pairs came from the search space, in one round
    lm = oracle.setup.lm
    lm.term_tables()
    assert not lm.missing and len(have) > len(plan.line_specs(lines))
