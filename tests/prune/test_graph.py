"""Channel groups (`latprof.prune.graph`) of small CNNs built inline: a plain chain, a chain with a
depthwise conv, and a residual block."""

import copy

import pytest
import torch
import torch.nn as nn

from latprof.errors import LatprofError
from latprof.prune import graph as graphs
from latprof.prune import surgery

SIZE = (3, 8, 8)


def chain() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),               # 0 1 2
        nn.Conv2d(8, 16, 3, padding=1, stride=2, bias=False), nn.BatchNorm2d(16), nn.ReLU(),   # 3 4 5
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))                             # 6 7 8


def with_depthwise() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),              # 0 1 2
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),    # 3 4 5
        nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),                       # 6 7 8
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))                             # 9 10 11


class Residual(nn.Module):
    """stem (3->8) -> [a (8->12) -> b (12->8)] + identity -> head (8->16 1x1) -> fc."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.a, self.bn_a = nn.Conv2d(8, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12)
        self.b, self.bn_b = nn.Conv2d(12, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 16, 1, bias=False)
        self.relu, self.pool, self.fc = nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Linear(16, 10)

    def forward(self, x):
        x = self.relu(self.bn0(self.stem(x)))
        y = self.bn_b(self.b(self.relu(self.bn_a(self.a(x)))))
        x = self.relu(x + y)
        return self.fc(self.pool(self.head(x)).flatten(1))


def summary(groups):
    return [(g.root, g.channels, g.out_convs, g.in_convs, set(g.bns)) for g in groups]


def test_chain_groups():
    g = graphs.analyse(chain(), SIZE)
    assert g.order == ["0", "3", "8"]
    assert summary(g.groups) == [
        ("0", 8, ("0",), ("3",), {"1"}),
        ("3", 16, ("3",), ("8",), {"4"}),  # read by the Linear classifier (whose outputs stay)
    ]
    assert [grp.index for grp in g.groups] == [0, 1]
    assert not any(grp.residual for grp in g.groups)
    assert g.kept == []
    assert g.input_size == SIZE
    assert isinstance(g.conv("3"), nn.Conv2d) and g.conv("3").out_channels == 16


def test_chain_is_the_same_whatever_keep_residual_says():
    groups = [summary(graphs.analyse(chain(), SIZE, keep_residual=k).groups) for k in (None, True, False)]
    assert groups[0] == groups[1] == groups[2]


def test_depthwise_conv_moves_with_its_group():
    g = graphs.analyse(with_depthwise(), SIZE)
    assert g.order == ["0", "3", "6", "11"]
    assert summary(g.groups) == [
        ("0", 8, ("0", "3"), ("3", "6"), {"1", "4"}),
        ("6", 16, ("6",), ("11",), {"7"}),
    ]
    assert not g.groups[0].residual       # the depthwise conv produces and consumes: not a coupling
    assert g.kept == []


def test_residual_group_is_kept_whole_by_default():
    g = graphs.analyse(Residual(), SIZE)
    assert g.order == ["stem", "a", "b", "head", "fc"]
    assert summary(g.groups) == [
        ("a", 12, ("a",), ("b",), {"bn_a"}),
        ("head", 16, ("head",), ("fc",), set()),
    ]
    assert [grp.index for grp in g.groups] == [0, 1]      # renumbered after the kept group left
    assert summary(g.kept) == [("stem", 8, ("stem", "b"), ("a", "head"), {"bn0", "bn_b"})]
    assert g.kept[0].residual


def test_keep_residual_true_matches_the_default_on_a_residual_model():
    default = graphs.analyse(Residual(), SIZE)
    kept = graphs.analyse(Residual(), SIZE, keep_residual=True)
    assert summary(kept.groups) == summary(default.groups)
    assert summary(kept.kept) == summary(default.kept)


def test_keep_residual_false_makes_the_coupled_channels_prunable():
    g = graphs.analyse(Residual(), SIZE, keep_residual=False)
    assert g.kept == []
    assert summary(g.groups) == [
        ("stem", 8, ("stem", "b"), ("a", "head"), {"bn0", "bn_b"}),
        ("a", 12, ("a",), ("b",), {"bn_a"}),
        ("head", 16, ("head",), ("fc",), set()),
    ]
    assert [grp.residual for grp in g.groups] == [True, False, False]
    assert [grp.index for grp in g.groups] == [0, 1, 2]


def test_analyse_leaves_the_model_in_eval_mode_and_unchanged():
    net = Residual().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    graphs.analyse(net, SIZE)
    assert not net.training
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m._forward_pre_hooks for m in net.modules())   # its order hooks are removed


def test_classifier_is_the_last_linear():
    net = chain()
    assert graphs.classifier(net) == [net[8]]
    two = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3))
    found = graphs.classifier(two)
    assert len(found) == 1 and found[0] is two[3]
    lone = nn.Linear(4, 2)
    assert graphs.classifier(lone) == [lone]
    fcn = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 10, 1))
    assert graphs.classifier(fcn) == [fcn[2]]   # a conv classifier (SqueezeNet) is protected too


def test_any_channel_preserving_layer_passes_through():
    """No allow-list: GELU, Hardsigmoid and an SE-style gate are followed by torch-pruning's graph."""
    class Gate(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.fc = nn.Conv2d(c, c, 1)

        def forward(self, x):
            return x * nn.functional.hardsigmoid(self.fc(x.mean((2, 3), keepdim=True)))

    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GELU(), Gate(8), nn.Conv2d(8, 4, 3), nn.Flatten(),
                        nn.Linear(4 * 4 * 4, 2))
    g = graphs.analyse(net, SIZE)
    first = next(grp for grp in g.groups if grp.root == "0")
    assert first.channels == 8 and "2.fc" in first.in_convs and "3" in first.in_convs
    # the gate's 1x1 output scales the block's features: coupled, but not a residual path
    assert first.gates == ("2.fc",) and not first.residual


def test_a_grouped_conv_keeps_its_group_count():
    net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, groups=4), nn.Flatten(), nn.Linear(8 * 6 * 6, 2))
    g = graphs.analyse(net, SIZE)
    assert [grp.step for grp in g.groups] == [4, 4]   # its input, and its output
    pruned = surgery.prune(g, surgery.choose(g, [4, 8], "l1"))
    assert (pruned[1].groups, pruned[1].in_channels, pruned[1].out_channels) == (4, 4, 8)
    assert pruned(torch.zeros(1, *SIZE)).shape == (1, 2)


class Shuffled(nn.Module):
    """a -> shuffle -> b -> ReLU -> c -> classifier: a's channels reach the shuffle."""

    def __init__(self, shuffle):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 6, 1)
        self.shuffle, self.head = shuffle, nn.Linear(6, 2)

    def forward(self, x):
        x = self.c(torch.relu(self.b(self.shuffle(self.a(x)))))
        return self.head(x.mean((2, 3)))


def view_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    b, c, h, w = x.shape   # ShuffleNet's own: view, transpose, view
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous().view(b, -1, h, w)


def test_the_permutation_conv_computes_the_shuffle():
    from latprof.prune import shuffle

    x = torch.randn(2, 12, 3, 3)
    torch.testing.assert_close(shuffle.permutation_conv(12, 3, x)(x), view_shuffle(x, 3), rtol=0, atol=0)
    torch.testing.assert_close(view_shuffle(x, 3), nn.ChannelShuffle(3)(x))


@pytest.mark.parametrize("shuffle", [view_shuffle, nn.ChannelShuffle(2)], ids=["view-transpose", "ChannelShuffle"])
def test_a_channel_shuffle_keeps_the_channels_through_it_whole(shuffle):
    net = Shuffled(shuffle).eval()
    g = graphs.analyse(copy.deepcopy(net), SIZE)
    assert [grp.root for grp in g.groups] == ["b", "c"] and [grp.root for grp in g.frozen] == ["a"]
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.bias is None
                   for m in g.model.modules())              # no permutation conv left in the model
    removal = surgery.choose(g, [4, 6], "l1")
    pruned = surgery.prune(g, removal).eval()
    assert surgery.channel_counts(pruned) == {"a": (3, 8), "b": (8, 4), "c": (4, 6), "head": (6, 2)}
    with torch.no_grad():                                  # the original with b's removed channels zeroed
        net.b.weight[removal[0]] = 0
        net.b.bias[removal[0]] = 0
        x = torch.randn(2, *SIZE)
        torch.testing.assert_close(pruned(x), net(x))


def test_shufflenet_prunes_its_branches_and_keeps_its_shuffled_channels():
    import torchvision.models as tvm

    g = graphs.analyse(tvm.shufflenet_v2_x0_5(weights=None), (3, 32, 32))
    roots = [grp.root for grp in g.groups]
    assert "conv1.0" in roots and "conv5.0" in roots and all(r.endswith("branch2.0") for r in roots[1:-1])
    assert all(grp.root.endswith((".branch2.5", ".branch1.2", ".branch1.0")) for grp in g.frozen)


def test_a_shuffle_whose_group_count_equals_its_group_width_is_found():
    """4 channels in 2 groups of 2: the 5-D view has the same shape before and after the transpose,
    so the shuffle is known by the transpose itself, not by the shape."""
    from latprof.prune import shuffle

    class Square(nn.Module):
        def forward(self, x):
            return view_shuffle(x, 2)

    net = nn.Sequential(nn.Conv2d(3, 4, 1), Square(), nn.Conv2d(4, 4, 1)).eval()
    assert shuffle.count(net, SIZE) == 1
    g = graphs.analyse(net, SIZE)
    assert [grp.root for grp in g.frozen] == ["0"]
