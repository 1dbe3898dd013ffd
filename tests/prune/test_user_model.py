"""The README's own-model example (`examples/user_net.py`: SE block, grouped and depthwise convs,
a concatenation, a channel shuffle, a Linear head) prunes end to end from one sweep's worth of shapes."""

from __future__ import annotations

from pathlib import Path

import torch

from latprof.prune import pipeline, surgery
from oracle import oracle_table

MODEL = str(Path(__file__).resolve().parents[2] / "examples" / "user_net.py") + ":build"


def test_the_user_model_example_prunes_to_its_target(tmp_path):
    oracle = oracle_table(tmp_path / "t.parquet", MODEL)
    assert oracle.requests == []                     # no request round after the sweep's shapes
    setup = oracle.setup
    assert not setup.lm.estimated                    # and no pair it had to estimate
    lm = setup.lm
    by_root = {g.root: g for g in lm.graph.groups}
    assert by_root["stem.0"].step == 4 and by_root["grouped.0"].step == 4     # the grouped conv's 4 groups
    assert by_root["grouped.0"].gates == ("se.expand",)                        # the SE block moves with it
    fuse = next(t for t in lm.terms if t.name == "fuse.0")
    assert fuse.spec.c_in == 80 and set(fuse.g_ins) == {by_root["branch_a.0"].index, by_root["branch_b.0.0"].index}
    assert [g.root for g in lm.graph.frozen] == ["squeeze.0"]   # what the shuffle reads stays whole
    assert by_root["fuse.0"].step == 4 and by_root["mix.0"].step == 4   # grouped 1x1s on both sides

    full = lm.predict(lm.full_counts())
    cfg = pipeline.PruneConfig(model=MODEL, table=str(oracle.path), measure=False, out=tmp_path, algo="dp")
    found = pipeline.search(cfg, setup, None, lambda: 0.6 * full)
    counts = found.counts
    assert lm.predict(counts) <= 0.6 * full * (1 + 1e-9)
    assert all(c % g.step == 0 for c, g in zip(counts, lm.graph.groups))
    got = surgery.channel_counts(found.pruned)
    kept = dict(zip((g.root for g in lm.graph.groups), counts))
    assert got["fuse.0"][0] == kept["branch_a.0"] + kept["branch_b.0.0"]      # c_in is the concatenation
    assert got["squeeze.0"] == (kept["fuse.0"], 64) and got["mix.0"] == (64, kept["mix.0"])
    assert got["head"] == (kept["mix.0"], 10)
    assert found.pruned.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_the_user_models_pruned_file_saves_and_loads(tmp_path):
    """A model from file.py:factory pickles (its module is registered under the name latprof gives
    it), so prune saves it, and a process that loads the same file first (prune's fresh timing
    processes do) can load the pruned file."""
    oracle = oracle_table(tmp_path / "t.parquet", MODEL)
    cfg = pipeline.PruneConfig(model=MODEL, table=str(oracle.path), target_ratio=0.6, measure=False,
                               out=tmp_path / "out")
    report = pipeline.run(cfg)
    loaded = torch.load(report.files["model"], weights_only=False).eval()
    assert surgery.channel_counts(loaded) == report.pruned.counts
    assert loaded(torch.randn(1, 3, 64, 64)).shape == (1, 10)
