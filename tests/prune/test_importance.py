"""Importance criteria on hand-checkable weights, and the value of keeping the top k channels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from latprof.errors import LatprofError
from latprof.prune.importance import IMPORTANCE, acs, bn_scale, fpgm, l1, l2, option_values


def conv_weight(rows) -> torch.Tensor:
    """(C_out, C_in=1, 1, len) conv weight from a list of filters."""
    w = torch.tensor(rows, dtype=torch.float32)
    return w.reshape(w.shape[0], 1, 1, -1)


def test_l1_and_l2_by_hand():
    w = conv_weight([[1.0, -2.0, 2.0], [0.0, 0.0, -1.0]])
    assert l1(w).tolist() == [5.0, 1.0]
    assert l2(w).tolist() == [3.0, 1.0]


def test_bn_scale_is_abs_gamma_and_needs_the_bn():
    w = torch.zeros(3, 2, 3, 3)
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([-0.5, 2.0, 0.1]))
    assert bn_scale(w, bn=bn).tolist() == pytest.approx([0.5, 2.0, 0.1])
    with pytest.raises(LatprofError, match="bn="):
        bn_scale(w)
    with pytest.raises(LatprofError, match="4 channels"):
        bn_scale(w, bn=nn.BatchNorm2d(4))
    with pytest.raises(LatprofError, match="affine"):
        bn_scale(w, bn=nn.BatchNorm2d(3, affine=False))


def test_fpgm_scores_the_filter_at_the_mean_of_the_others_lowest():
    # +-e1, +-e2 and their mean (zero): the mean is the geometric median, i.e. redundant.
    w = conv_weight([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [0.0, 0.0]])
    s = fpgm(w)
    assert int(torch.argmin(s)) == 4
    assert s[4].item() == pytest.approx(4.0)  # distance 1 to each of four filters
    assert s[0].item() == pytest.approx(2.0 + 2 * math.sqrt(2) + 1.0)


def test_acs_keeps_filters_that_still_move_and_prunes_stable_ones():
    torch.manual_seed(0)
    prev = torch.randn(4, 3, 3, 3)
    now = prev.clone()
    now[0] = 2.0 * prev[0] + 0.7  # same direction after centring: stable, ACS 1
    now[1] = -prev[1]  # reversed: ACS -1
    now[2] = prev[2] + 0.1 * torch.randn(3, 3, 3)  # small change
    now[3] = torch.randn(3, 3, 3)  # unrelated: ACS near 0
    s = acs(now, weight_prev=prev)
    assert s[0].item() == pytest.approx(0.0, abs=1e-6)
    assert s[1].item() == pytest.approx(2.0, abs=1e-6)
    assert s[0] < s[2] < s[3] < s[1]
    with pytest.raises(LatprofError, match="weight_prev"):
        acs(now)
    with pytest.raises(LatprofError, match="same shape"):
        acs(now, weight_prev=prev[:2])


def test_acs_of_a_constant_filter_is_defined():
    prev = conv_weight([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]])
    s = acs(prev, weight_prev=prev)
    assert torch.isfinite(s).all() and s[0].item() == 1.0 and s[1].item() == pytest.approx(0.0, abs=1e-6)


def test_all_criteria_share_one_signature_and_output():
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    bn = nn.BatchNorm2d(6)
    assert set(IMPORTANCE) == {"l1", "l2", "bn_scale", "fpgm", "acs"}
    for name, fn in IMPORTANCE.items():
        s = fn(w, bn=bn, weight_prev=torch.randn(6, 4, 3, 3))
        assert s.shape == (6,) and s.dtype == torch.float32 and s.device.type == "cpu", name
        assert (s >= 0).all(), name
    with pytest.raises(LatprofError, match="C_out"):
        l1(torch.zeros(5))


def test_searchers_do_not_import_the_importance_criteria():
    import latprof.search as search
    assert not hasattr(search, "IMPORTANCE") and set(IMPORTANCE) >= {"l1", "l2", "bn_scale", "fpgm", "acs"}


def test_option_values_by_hand():
    v = option_values(torch.tensor([1.0, 3.0, 2.0, 4.0]), [0, 1, 2, 4])
    assert v.tolist() == pytest.approx([0.0, 0.4, 0.7, 1.0])
    assert option_values(torch.zeros(4), [1, 2, 4]).tolist() == [0.25, 0.5, 1.0]


def test_option_values_monotone_and_full_count_is_one():
    torch.manual_seed(1)
    for fn in (l1, l2, fpgm):
        s = fn(torch.randn(64, 16, 3, 3))
        v = option_values(s, range(1, 65))
        assert isinstance(v, np.ndarray) and v.dtype == np.float64
        assert np.all(np.diff(v) >= 0) and v[-1] == 1.0 and 0.0 < v[0] < 1.0


@pytest.mark.parametrize("scores, options, words", [
    (torch.tensor([1.0, -1.0]), [1, 2], ">= 0"),
    (torch.tensor([1.0, 2.0]), [1, 3], "0..2"),
    (torch.tensor([1.0, 2.0]), [2, 1], "ascending"),
])
def test_option_values_rejects_bad_input(scores, options, words):
    with pytest.raises(LatprofError, match=words):
        option_values(scores, options)
