import copy

import pytest
import torch

from latprof import models
from latprof.prune import graph as graphs
from latprof.prune import latmodel as latmodel
from latprof.prune import pipeline as pruning
from latprof.prune import surgery as surgery
from latprof.tables import io as tbl
from latprof.errors import LatprofError
from synthetic import META, model_table

MODELS = {"vgg16_cifar10": 1, "resnet18": 4, "mobilenet_v2": 8}   # model -> every k-th count in the lines


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    root = tmp_path_factory.mktemp("prune")
    return {m: model_table(root / f"{m}.parquet", m, every=k, grid=True) for m, k in MODELS.items()}


def cfg_for(tables, model, tmp_path, **kw):
    base = dict(model=model, table=str(tables[model]), target_ratio=0.6, measure=False, out=tmp_path / "out")
    return pruning.PruneConfig(**{**base, **kw})


@pytest.mark.slow
@pytest.mark.parametrize("model", list(MODELS))
def test_prune_meets_the_predicted_target_and_the_model_runs(tables, tmp_path, model):
    r = pruning.run(cfg_for(tables, model, tmp_path))
    assert r.pruned.predicted_ms <= r.target_ms + 1e-9
    assert r.pruned.predicted_ms < r.original.predicted_ms
    assert r.pruned.macs < r.original.macs
    pruned = torch.load(r.files["model"], weights_only=False)
    _, size = models.load(model)
    out = pruned.eval()(torch.randn(2, *size))
    assert out.shape[0] == 2 and torch.isfinite(out).all()
    convs = surgery.channel_counts(pruned)
    for g in r.groups:  # every group's root conv has the chosen number of outputs
        assert convs[g["root"]][1] == g["kept"]
        assert g["kept"] in g["options"]


@pytest.mark.slow
@pytest.mark.parametrize("model", list(MODELS))
def test_surgery_is_exact_against_the_masked_original(model):
    net, size = models.load(model)
    torch.manual_seed(0)
    for m in net.modules():  # non-trivial BatchNorm statistics, so masking is tested for real
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    a = graphs.analyse(copy.deepcopy(net), size)
    b = graphs.analyse(copy.deepcopy(net), size)
    counts = [max(1, g.channels // 2 + (g.index % 3)) for g in a.groups]
    removal = surgery.choose(a, counts, "l1")
    pruned = surgery.prune(a, removal).eval()
    masked = surgery.mask(b, removal).eval()
    x = torch.randn(2, *size)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), masked(x), rtol=1e-4, atol=1e-4)
    convs = surgery.channel_counts(pruned)
    assert [convs[g.root][1] for g in a.groups] == counts


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["evo", "abc"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evo_and_abc_never_exceed_the_target(tables, tmp_path, algo, seed):
    r = pruning.run(cfg_for(tables, "vgg16_cifar10", tmp_path, algo=algo, seed=seed, target_ratio=0.45))
    assert r.pruned.predicted_ms <= r.target_ms + 1e-9


@pytest.mark.slow
def test_dp_is_at_least_as_good_as_evo_and_abc(tables, tmp_path):
    from latprof.search import run_search
    from latprof.prune.importance import option_values

    net, size = models.load("vgg16_cifar10")
    t = tbl.read(tables["vgg16_cifar10"])
    g = graphs.analyse(net, size)
    lm = latmodel.build(g, t, tbl.context(t))
    values = [option_values(surgery.group_scores(g, grp, "l1"), o) for grp, o in zip(g.groups, lm.options)]
    problem = lm.problem(values, 0.5 * lm.predict(lm.full_counts()))
    best = run_search("dp", problem)
    for algo in ("evo", "abc"):
        other = run_search(algo, problem, seed=0)
        assert other.latency <= problem.target
        assert best.value >= other.value - 1e-6


@pytest.mark.slow
def test_missing_shapes_fail_with_a_request_file(tables, tmp_path):
    from latprof.tables import request as requests

    # whole lines missing (the last three of the sweep's): a pair could be priced from two lines, a
    # line cannot be made up; the request names the groups' c_out lines
    path = model_table(tmp_path / "short.parquet", "vgg16_cifar10", every=4, drop_lines=3)
    with pytest.raises(LatprofError, match="lacks .* shape|whole line") as err:
        pruning.run(cfg_for({"vgg16_cifar10": path}, "vgg16_cifar10", tmp_path))
    request = tmp_path / "out" / "request.json"
    assert str(request) in str(err.value)
    lines = requests.load_request(request).lines
    assert lines and {line.axis for line in lines} == {"c_out"}


@pytest.mark.slow
def test_pairs_the_table_lacks_are_priced_from_the_lines(tables, tmp_path):
    path = model_table(tmp_path / "nogrid.parquet", "vgg16_cifar10", every=1, grid=False)
    r = pruning.run(cfg_for({"vgg16_cifar10": path}, "vgg16_cifar10", tmp_path))
    assert any("separable grid model" in w for w in r.warnings)
    assert (tmp_path / "out" / "pairs.request.json").exists()


@pytest.mark.slow
def test_unreachable_target_says_how_close_it_can_get(tables, tmp_path):
    with pytest.raises(LatprofError, match="unreachable|smallest"):
        pruning.run(cfg_for(tables, "vgg16_cifar10", tmp_path, target_ratio=0.01))


@pytest.mark.slow
def test_table_of_another_device_is_refused_unless_forced(tables, tmp_path):
    with pytest.raises(LatprofError, match="--force"):
        pruning.run(cfg_for(tables, "vgg16_cifar10", tmp_path, device="titan_rtx"))
    r = pruning.run(cfg_for(tables, "vgg16_cifar10", tmp_path, device="titan_rtx", force=True))
    assert r.device == META["device"]["name"]


@pytest.mark.slow
def test_prune_cli_report_json_plot_and_compare(cli, tables, tmp_path):
    import json

    r = cli("prune", "vgg16_cifar10", "--table", tables["vgg16_cifar10"], "--target-ratio", "0.6",
            "--compare", "--json", tmp_path / "r.json", "--plot", tmp_path / "p.png", "--out", tmp_path / "o",
            "--export", "torchscript")
    assert r.exit_code == 0, r.output
    assert "target met: yes" in r.output and "uniform ratio" in r.output and "torch-pruning" in r.output
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["target_met"] and len(rep["baselines"]) == 2
    macs = [b["macs"] for b in rep["baselines"]]
    assert all(abs(m / rep["pruned"]["macs"] - 1) < 0.1 for m in macs)   # baselines at the same MACs
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "o" / "pruned.ts").exists() and (tmp_path / "o" / "structure.json").exists()
    bad = cli("prune", "vgg16_cifar10", "--table", tables["vgg16_cifar10"])
    assert bad.exit_code == 2 and "exactly one of" in bad.output


@pytest.fixture(scope="module")
def trained_digits(tmp_path_factory):
    """small_cifar10 trained on the bundled digits at 16x16, saved, with a synthetic table."""
    from latprof.train import data as data
    from latprof.train.loop import evaluate, eval_loader, train

    root = tmp_path_factory.mktemp("acc")
    splits = data.load("digits", image_size=16)
    torch.manual_seed(0)
    net, _ = models.load("small_cifar10")
    train(net, splits, epochs=4, lr=0.05, lr_step=3, batch_size=64, progress=False, seed=0)
    net.latprof_input_size = (3, 16, 16)
    torch.save(net, root / "trained.pt")
    table = model_table(root / "t.parquet", "small_cifar10", grid=True, input_size=(3, 16, 16))
    return root / "trained.pt", table, splits, evaluate(net, eval_loader(splits.test))


SMALL_BUDGETS = {"evo": dict(population=4, cycles=2, mutations=2, crossovers=2, parents=2),
                 "abc": dict(sources=3, cycles=2), "ddpg": dict(episodes=6, warmup=3, updates=2)}


@pytest.mark.slow
@pytest.mark.parametrize("algo", list(SMALL_BUDGETS))
def test_accuracy_in_the_loop_then_finetune_stays_close(trained_digits, tmp_path, algo):
    """Prune the trained CNN to 60% of its table latency, each candidate scored by validation
    accuracy after brief training, fine-tune briefly: the pruned model stays within 5 points
    of the unpruned one on the test split."""
    from latprof.train.loop import evaluate, eval_loader, train

    model, table, splits, base_acc = trained_digits
    assert base_acc >= 0.9
    cfg = pruning.PruneConfig(model=str(model), table=str(table), target_ratio=0.6, algo=algo,
                              fitness="accuracy", data="digits", fitness_steps=20, measure=False,
                              out=tmp_path / "out", search_options=SMALL_BUDGETS[algo])
    r = pruning.run(cfg)
    assert r.pruned.predicted_ms <= r.target_ms + 1e-9
    assert r.evaluations > 0 and 0.0 < r.fitness_value <= 1.0
    assert r.accuracy["original_test"] == pytest.approx(base_acc)
    pruned = torch.load(r.files["model"], weights_only=False)
    train(pruned, splits, epochs=2, lr=0.01, batch_size=64, progress=False, seed=0)
    assert evaluate(pruned, eval_loader(splits.test)) >= base_acc - 0.05


@pytest.mark.slow
def test_accuracy_fitness_needs_a_searcher_that_takes_one(trained_digits, tmp_path):
    model, table, _, _ = trained_digits
    with pytest.raises(LatprofError, match="evo, abc"):
        pruning.run(pruning.PruneConfig(model=str(model), table=str(table), target_ratio=0.6,
                                        fitness="accuracy", data="digits", measure=False, out=tmp_path / "o2"))


@pytest.mark.slow
def test_acs_importance_selects_with_regrowth_from_two_checkpoints(tables, tmp_path):
    net, _ = models.load("vgg16_cifar10")
    prev = {k: v + 0.01 * torch.randn_like(v) for k, v in net.state_dict().items() if k.endswith("weight")}
    torch.save(prev, tmp_path / "prev.pt")
    r = pruning.run(cfg_for(tables, "vgg16_cifar10", tmp_path, importance="acs", weights_prev=tmp_path / "prev.pt"))
    assert r.pruned.predicted_ms <= r.target_ms + 1e-9
    with pytest.raises(LatprofError, match="--weights-prev"):
        pruning.run(cfg_for(tables, "vgg16_cifar10", tmp_path, importance="acs"))
