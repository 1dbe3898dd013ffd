"""Residual groups are kept whole by default; when the target is out of reach that way, prune
searches again with them pruned too, and says so."""

from __future__ import annotations

import pytest

from latprof.errors import Unreachable
from latprof.prune import pipeline
from oracle import oracle_table

MODEL = "resnet20_cifar10"


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    # every shape either search space looks up: with the residual groups pruned it is the larger
    return oracle_table(tmp_path_factory.mktemp("res") / "t.parquet", MODEL, every=4, keep_residual=False).path


# on the oracle's table the smallest configuration is 0.61 of the full latency with the residual
# groups whole and 0.48 with them pruned: 0.55 is out of reach only the first way
def test_an_out_of_reach_target_prunes_the_residual_groups_too(table, tmp_path):
    cfg = pipeline.PruneConfig(model=MODEL, table=str(table), target_ratio=0.55, measure=False, out=tmp_path)
    kept = pipeline.load(cfg)
    assert kept.lm.graph.kept                                 # by default the residual groups stay whole
    report = pipeline.run(cfg)
    assert report.met
    assert any("residual groups are kept whole by default" in w and "--no-keep-residual" in w
               for w in report.warnings)
    residual_roots = {g.root for g in kept.lm.graph.kept}
    pruned = {g["root"] for g in report.groups if g["kept"] < g["channels"]}
    assert residual_roots & pruned                            # a residual group lost channels


def test_asking_to_keep_them_whole_keeps_the_refusal(table, tmp_path):
    cfg = pipeline.PruneConfig(model=MODEL, table=str(table), target_ratio=0.55, measure=False, out=tmp_path,
                               keep_residual=True)
    with pytest.raises(Unreachable, match="unreachable"):
        pipeline.run(cfg)


def test_a_model_sweep_plans_the_pairs_of_both_search_spaces(tmp_path):
    from latprof.cli.sweep import _search_space
    from latprof.prune import latmodel
    from latprof.spec import Context
    from latprof.tables import io as tbl

    kept_only = tbl.read(oracle_table(tmp_path / "kept.parquet", MODEL, every=4).path)
    ctx = tbl.context(kept_only)
    pruned_too = latmodel.search_space_specs(MODEL, kept_only, ctx, keep_residual=False)
    assert pruned_too                                          # what the fallback would look up, and lacks
    assert set(pruned_too) <= set(_search_space(MODEL, None)(kept_only, Context(ctx.batch)))
