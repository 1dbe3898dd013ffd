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
    # 13 convs but only 9 distinct shapes (the repeated 3x3 convs at one resolution), two lines each;
    # the classifier (Linear 512 -> 10) its c_in line only: its outputs are never pruned
    assert [layer.spec.op for layer in layers] == ["conv2d"] * 13 + ["linear"]
    assert len(lines) == 2 * 9 + 1
    assert [line.axis for line in lines if line.base.op == "linear"] == ["c_in"]
    first = [line for line in lines if line.base.c_in == 3]
    assert {line.axis for line in first} == {"c_out", "c_in"}
    c_out_line = next(line for line in first if line.axis == "c_out")
    assert c_out_line.values == tuple(range(1, 65))
    assert all(s.c_in == 3 and s.batch == 8 for s in c_out_line.specs())
    shared = next(line for line in lines if len(line.layers) > 1)
    assert len(shared.layers) >= 2


def test_linear_layers_are_gemm_lines_and_a_flattened_input_moves_in_whole_channels():
    net, size = models.load("vgg11", (3, 32, 32))
    layers = {layer.name: layer for layer in models.conv_layers(net, size)}
    fc1, fc2, out = layers["classifier.0"], layers["classifier.3"], layers["classifier.6"]
    assert (fc1.spec.op, fc1.spec.c_in, fc1.spec.c_out, fc1.unit) == ("linear", 512 * 7 * 7, 4096, 49)
    assert (fc2.unit, fc2.output, out.output) == (1, False, True)
    lines = {(line.base, line.axis): line for line in plan.model_lines(list(layers.values()), Context(), every=1)}
    fc1_in = lines[(fc1.spec, "c_in")]
    assert fc1_in.step == 49 and fc1_in.values[:2] == (49, 98) and fc1_in.values[-1] == 25088
    assert (out.spec, "c_out") not in lines and (out.spec, "c_in") in lines
    # ConvNeXt's pointwise layers run on channels-last tokens: one GEMM over H x W rows
    net, size = models.load("convnext_tiny", (3, 64, 64))
    pw = next(layer for layer in models.conv_layers(net, size) if layer.name == "features.1.0.block.3")
    assert (pw.spec.c_in, pw.spec.c_out, pw.spec.h, pw.spec.w) == (96, 384, 16, 16)
    assert pw.spec.macs() == 96 * 384 * 16 * 16


def test_a_linear_spec_runs_as_a_gemm_and_refuses_conv_fields():
    from latprof.errors import LatprofError
    from latprof.measure import backends, device
    from latprof.spec import ConvSpec

    spec = ConvSpec(c_in=24, c_out=40, h=3, w=5, kernel_h=1, kernel_w=1, pad_h=0, pad_w=0, batch=2, op="linear")
    out = backends.make_runner(spec, device.select("cpu"))()
    assert tuple(out.shape) == (2, 3, 5, 40)
    assert spec.label().startswith("linear 24->40")
    with pytest.raises(LatprofError, match="kernel 1"):
        spec.replace(kernel_h=3)


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
