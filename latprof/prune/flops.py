"""FLOPs and parameters, behind one small adapter over `thop` (which edits the model it
counts, so it is given a copy)."""

from __future__ import annotations

import contextlib
import copy
import io

import torch
import torch.nn as nn


def count(model: nn.Module, input_size: tuple[int, int, int], batch: int = 1) -> tuple[int, int]:
    """(MACs, parameters) of one forward pass at `batch`. thop counts multiply-accumulates."""
    from thop import profile

    probe = copy.deepcopy(model).eval()
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        macs, params = profile(probe, inputs=(torch.zeros(batch, *input_size),), verbose=False)
    return int(macs), int(params)
