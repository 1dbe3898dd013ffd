"""Linear layers count: they are priced by their own GEMM lines, their outputs are groups the
search prunes, and a Linear that reads a flattened feature map loses whole channels of features."""

from __future__ import annotations

import copy

import torch

from latprof.prune import graph as graphs
from latprof.prune import surgery
from oracle import oracle_table, oracle_us

NET = ("import torch.nn as nn\n"
       "def build():\n"
       "    m = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),\n"
       "                      nn.Linear(64 * 16, 64), nn.ReLU(), nn.Linear(64, 10))\n"
       "    m.latprof_input_size = (3, 8, 8)\n"
       "    return m\n")


def test_a_flattened_linear_is_priced_at_the_channels_it_keeps_and_its_hidden_layer_is_pruned(tmp_path):
    (tmp_path / "net.py").write_text(NET)
    oracle = oracle_table(tmp_path / "t.parquet", str(tmp_path / "net.py") + ":build")
    assert oracle.requests == []                      # the sweep's lines and search space were enough
    lm = oracle.setup.lm
    assert [(g.root, g.channels) for g in lm.graph.groups] == [("0", 64), ("4", 64)]   # the hidden Linear is one
    fc1, fc2 = (t for t in lm.terms if t.spec.op == "linear")
    assert (fc1.name, fc1.spec.c_in, fc1.unit, fc1.g_ins, fc1.g_out) == ("4", 1024, 16, (0,), 1)
    assert (fc2.name, fc2.g_ins, fc2.g_out) == ("6", (1,), None)

    # keeping 32 of the conv's 64 channels leaves the first Linear 32 x 16 features; its 64 outputs at 48
    counts = [32, 48]
    assert all(c in opts for c, opts in zip(counts, lm.options))    # pairs the sweep measured
    assert lm.c_in(fc1, counts) == 512
    by_hand = (oracle_us(lm.terms[0].spec.replace(c_out=32)) + oracle_us(fc1.spec.replace(c_in=512, c_out=48))
               + oracle_us(fc2.spec.replace(c_in=48)))
    assert lm.conv_sum(counts) == by_hand
    assert lm.conv_sum(counts) < lm.conv_sum(lm.full_counts())

    # the surgery does what the model priced
    graph = graphs.analyse(copy.deepcopy(oracle.setup.original), lm.graph.input_size)
    pruned = surgery.prune(graph, surgery.choose(graph, counts, "l1"))
    assert surgery.channel_counts(pruned) == {"0": (3, 32), "4": (512, 48), "6": (48, 10)}
    assert pruned(torch.randn(2, 3, 8, 8)).shape == (2, 10)
