import pytest

from latprof.errors import LatprofError
from latprof.spec import KEY_FIELDS, ConvSpec


def test_output_size_and_macs_by_hand():
    # 64->128, 3x3, stride 2, pad 1 on 32x32: out 16x16; MACs = 2 * 128 * 16 * 16 * 64 * 9
    s = ConvSpec(c_in=64, c_out=128, h=32, w=32, stride_h=2, stride_w=2, batch=2)
    assert (s.h_out, s.w_out) == (16, 16)
    assert s.macs() == 2 * 128 * 16 * 16 * 64 * 9


def test_grouped_and_depthwise_macs():
    dw = ConvSpec(c_in=32, c_out=32, h=7, w=9, groups=32)
    assert dw.depthwise
    assert dw.macs() == 32 * 7 * 9 * 1 * 9
    g = ConvSpec(c_in=8, c_out=12, h=5, w=5, kernel_h=1, kernel_w=1, pad_h=0, pad_w=0, groups=4)
    assert not g.depthwise
    assert g.macs() == 12 * 25 * 2


def test_dilation_output_size():
    s = ConvSpec(c_in=3, c_out=3, h=10, w=11, pad_h=0, pad_w=0, dilation_h=2, dilation_w=2)
    assert (s.h_out, s.w_out) == (6, 7)


@pytest.mark.parametrize("kwargs, words", [
    (dict(c_in=0, c_out=4), "c_in must be >= 1"),
    (dict(c_in=6, c_out=4, groups=4), "divisible by groups"),
    (dict(c_in=4, c_out=4, dtype="float64"), "unknown dtype"),
    (dict(c_in=4, c_out=4, layout="nchw16c"), "unknown layout"),
    (dict(c_in=4, c_out=4, h=1, w=1, kernel_h=5, kernel_w=5, pad_h=0, pad_w=0), "would be empty"),
])
def test_bad_specs_are_user_errors(kwargs, words):
    base = dict(h=8, w=8)
    with pytest.raises(LatprofError, match=words):
        ConvSpec(**{**base, **kwargs})


def test_row_round_trip_covers_the_key():
    s = ConvSpec(c_in=3, c_out=5, h=9, w=7, groups=1, batch=4, dtype="bfloat16", layout="nhwc")
    row = s.to_row()
    assert tuple(row) == KEY_FIELDS
    assert ConvSpec.from_row(row) == s
