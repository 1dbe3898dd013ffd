import pytest

from latprof import models
from latprof.measure import plan as grids
from latprof.models import lines as plan
from latprof.spec import Context
from latprof.errors import LatprofError


@pytest.mark.parametrize("text, values", [
    ("64", [64]), ("16,32,64", [16, 32, 64]), ("1-4", [1, 2, 3, 4]), ("8-32:8", [8, 16, 24, 32]),
    ("1-3,8,6-10:2", [1, 2, 3, 6, 8, 10]),
])
def test_parse_values(text, values):
    assert grids.parse_values(text, "cin") == values


@pytest.mark.parametrize("text", ["", "a", "4-2", "1-8:0", "1..8"])
def test_parse_values_rejects(text):
    with pytest.raises(LatprofError, match="--cin"):
        grids.parse_values(text, "cin")


def test_channel_values_dense_coarse_and_grouped():
    assert plan.channel_values(5) == (1, 2, 3, 4, 5)
    assert plan.channel_values(10, every=4) == (1, 4, 8, 10)
    assert plan.channel_values(12, step=4) == (4, 8, 12)


def test_vgg_cifar_lines_share_identical_shapes():
    net, size = models.load("vgg16_cifar10")
    layers = models.conv_layers(net, size)
    lines = plan.model_lines(layers, Context(batch=8))
    # 13 convs but only 9 distinct shapes (the repeated 3x3 convs at one resolution), two lines each
    assert len(layers) == 13
    assert len(lines) == 2 * 9
    first = [line for line in lines if line.base.c_in == 3]
    assert {line.axis for line in first} == {"c_out", "c_in"}
    c_out_line = next(line for line in first if line.axis == "c_out")
    assert c_out_line.values == tuple(range(1, 65))
    assert all(s.c_in == 3 and s.batch == 8 for s in c_out_line.specs())
    shared = next(line for line in lines if len(line.layers) > 1)
    assert len(shared.layers) >= 2


def test_depthwise_layers_get_one_line_moving_all_three():
    net, size = models.load("mobilenet_v2")
    layers = models.conv_layers(net, size)
    lines = plan.model_lines(layers, Context(batch=1), every=8)
    dw = [line for line in lines if line.axis == "c"]
    assert dw
    spec = dw[0].spec_at(24)
    assert (spec.c_in, spec.c_out, spec.groups) == (24, 24, 24)


def test_grid_and_shards_partition_it():
    specs = grids.grid_specs(cin=[4, 6], cout=[4, 8], hw=[8], kernel=[1, 3], stride=[1], groups=[1, 2],
                            batch=1, dtype="float32", layout="nchw", backend="cpu")
    assert len(specs) == 2 * 2 * 2 * 2
    parts = [grids.shard(specs, i, 3) for i in (1, 2, 3)]
    assert sorted(s for p in parts for s in p) == sorted(specs)
    assert grids.parse_shard("2/3") == (2, 3)
    with pytest.raises(LatprofError):
        grids.parse_shard("4/3")


def test_empty_grid_is_a_user_error():
    with pytest.raises(LatprofError, match="grid is empty"):
        grids.grid_specs(cin=[3], cout=[5], hw=[8], kernel=[3], stride=[1], groups=[2],
                        batch=1, dtype="float32", layout="nchw", backend="cpu")
