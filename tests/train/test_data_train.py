"""Data sets, training with checkpoints, accuracy fitness and the train/finetune commands, on the
bundled digits data set (no download): small enough for a 2-core CPU."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from latprof import models
from latprof.train import data as data
from latprof.prune import graph as graphs
from latprof.prune import surgery as surgery
from latprof.prune.accfit import accuracy_fitness
from latprof.errors import LatprofError
from latprof.train.loop import eval_loader, evaluate, train

# small_cifar10 trained 4 epochs on digits at 16x16 (lr 0.05 then 0.005 in the last epoch, batch 64):
# about 5 s on the 2-core CPU (torch 2.14), val 0.979 and test 0.980 there; asserted with a margin.
TRAIN_EPOCHS = 4
MIN_ACCURACY = 0.9


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


@pytest.fixture(scope="module")
def digits16():
    return data.load("digits", image_size=16)   # 4x cheaper to train than 32x32, and learns faster


@pytest.fixture(scope="module")
def trained(digits16):
    torch.manual_seed(0)
    model, _ = models.load("small_cifar10")
    result = train(model, digits16, epochs=TRAIN_EPOCHS, lr=0.05, lr_step=3, batch_size=64, progress=False, seed=0)
    return model, result


def _tiny(splits, n=192):
    """The first n training images only (fast training-mechanics tests)."""
    return data.Splits(data.View(splits.train, range(n)), splits.val, splits.test, splits.num_classes,
                       splits.input_size, "digits[:n]")


# --- data ------------------------------------------------------------------------------------

def test_digits_shapes_and_disjoint_splits(digits):
    assert digits.num_classes == 10 and digits.input_size == (3, 32, 32)
    x, y = digits.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= y < 10
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])  # grey replicated to 3 channels
    sets = [set(s.indices) for s in (digits.train, digits.val, digits.test)]
    assert sum(map(len, sets)) == 1797 and len(set.union(*sets)) == 1797   # disjoint, complete
    assert len(digits.test) == 359 and len(digits.val) == 143               # 20 % per class, then 10 %
    assert sorted(set(digits.val.targets)) == list(range(10))               # stratified
    other = data.load("digits", seed=1, image_size=16)
    assert set(other.test.indices) == sets[2]       # the test split is fixed...
    assert set(other.val.indices) != sets[1]        # ...the validation split follows the seed
    assert other.train[0][0].shape == (3, 16, 16)
    none = data.load("digits", val_fraction=0.0)
    assert len(none.val) == 0 and len(none.train) == 1797 - 359


def test_unknown_spec_lists_the_known_ones():
    with pytest.raises(LatprofError, match="cifar10:DIR.*imagefolder:DIR.*digits"):
        data.load("mnist:/data")


@pytest.mark.parametrize("kind, folder, names", [
    ("cifar10", "cifar-10-batches-py", ["data_batch_1", "data_batch_5", "test_batch"]),
    ("cifar100", "cifar-100-python", ["train", "test"]),
])
def test_missing_or_corrupt_cifar_says_which_files(tmp_path, kind, folder, names):
    with pytest.raises(LatprofError) as err:
        data.load(f"{kind}:{tmp_path}")
    msg = str(err.value)
    assert folder in msg and all(n in msg for n in names) and "never downloads" in msg
    files = data._CIFAR[kind][1]
    (tmp_path / folder).mkdir()
    for f in files:
        (tmp_path / folder / f).write_bytes(b"not a pickle")
    with pytest.raises(LatprofError, match="corrupted"):
        data.load(f"{kind}:{tmp_path / folder}")   # the folder itself is accepted too
    with pytest.raises(LatprofError, match="give the folder"):
        data.load(kind)


def _images(folder, n=3, size=(12, 10)):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", size, (40 * i, 0, 0)).save(folder / f"{i}.png")


def test_imagefolder_layouts_and_errors(tmp_path):
    with pytest.raises(LatprofError, match="is not a folder.*DIR/train/<class>"):
        data.load(f"imagefolder:{tmp_path / 'nope'}")
    with pytest.raises(LatprofError, match="no class folders"):
        data.load(f"imagefolder:{tmp_path}")
    for c in ("ant", "bee"):
        _images(tmp_path / "train" / c / "images", n=5)    # TinyImageNet nests images/ in classes
    _images(tmp_path / "test" / "images")                  # unlabelled, as TinyImageNet's test/
    with pytest.raises(LatprofError, match="no labelled held-out split"):
        data.load(f"imagefolder:{tmp_path}")
    _images(tmp_path / "val" / "images", n=2)
    (tmp_path / "val" / "val_annotations.txt").write_text("0.png\tbee\t0\t0\t1\t1\n1.png\tant\t0\t0\t1\t1\n")
    s = data.load(f"imagefolder:{tmp_path}", val_fraction=0.2)
    assert s.num_classes == 2 and s.input_size == (3, 10, 10)     # shorter side of the first image
    assert (len(s.train), len(s.val), len(s.test)) == (8, 2, 2)
    assert s.test.targets == [1, 0] and s.train[0][0].shape == (3, 10, 10)
    _images(tmp_path / "other" / "train" / "ant")
    _images(tmp_path / "other" / "test" / "ant", n=1)
    s = data.load(f"imagefolder:{tmp_path / 'other'}", image_size=8)
    assert s.num_classes == 1 and s.test[0][0].shape == (3, 8, 8)


# --- training ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_small_cnn_learns_digits(trained, digits16):
    model, result = trained
    assert result.epochs == TRAIN_EPOCHS and result.stopped_by == "epochs"
    assert [h["epoch"] for h in result.history] == list(range(1, TRAIN_EPOCHS + 1))
    assert result.val_accuracy >= MIN_ACCURACY
    assert evaluate(model, eval_loader(digits16.test)) >= MIN_ACCURACY


@pytest.mark.slow
def test_resume_from_checkpoint_matches_an_uninterrupted_run(digits16, tmp_path):
    tiny = _tiny(digits16)
    kw = dict(lr=0.05, batch_size=32, progress=False, seed=3, lr_step=1, lr_gamma=0.5)
    torch.manual_seed(0)
    start, _ = models.load("small_cifar10")
    straight = copy.deepcopy(start)
    r = train(straight, tiny, epochs=2, **kw)
    assert r.epochs == 2 and r.steps == 12

    ck = tmp_path / "ck.pt"
    first = copy.deepcopy(start)
    train(first, tiny, epochs=1, checkpoint=ck, **kw)
    torch.manual_seed(123)  # whatever happens between the runs must not matter
    resumed, _ = models.load("small_cifar10")
    r2 = train(resumed, tiny, epochs=2, checkpoint=ck, resume=True, **kw)
    assert r2.epochs == 2 and r2.steps == 12 and len(r2.history) == 2
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name

    with pytest.raises(LatprofError, match="already exists.*--resume"):
        train(copy.deepcopy(start), tiny, epochs=1, checkpoint=ck, **kw)
    with pytest.raises(LatprofError, match="no checkpoint"):
        train(copy.deepcopy(start), tiny, epochs=1, checkpoint=tmp_path / "none.pt", resume=True, **kw)


@pytest.mark.slow
def test_max_steps_stops_mid_epoch_and_resumes_exactly(digits16, tmp_path):
    tiny = _tiny(digits16)
    kw = dict(lr=0.05, batch_size=32, progress=False, seed=0, validate=False)
    torch.manual_seed(0)
    start, _ = models.load("small_cifar10")
    straight = copy.deepcopy(start)
    train(straight, tiny, epochs=1, **kw)
    ck, part = tmp_path / "ck.pt", copy.deepcopy(start)
    r = train(part, tiny, epochs=1, max_steps=4, checkpoint=ck, **kw)
    assert (r.epochs, r.steps, r.stopped_by) == (0, 4, "max_steps")
    r = train(part, tiny, epochs=1, checkpoint=ck, resume=True, **kw)
    assert (r.epochs, r.steps) == (1, 6)
    for a, b in zip(straight.state_dict().values(), part.state_dict().values()):
        assert torch.equal(a, b)


# --- accuracy fitness -------------------------------------------------------------------------

def _options(model, size):
    return [(g.channels // 4, g.channels // 2, g.channels) for g in graphs.analyse(copy.deepcopy(model), size).groups]


@pytest.mark.slow
def test_accuracy_fitness_scores_a_pruned_trained_copy_on_val(trained, digits16):
    model, _ = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    size = digits16.input_size
    options = _options(model, size)
    fit = accuracy_fitness(model, lambda m: graphs.analyse(m, size), options, digits16,
                           fitness_steps=30, batch_size=64, seed=0)
    rng = torch.get_rng_state()
    choice = (1, 0, 2, 1)
    acc = fit(choice)
    assert torch.equal(torch.get_rng_state(), rng)                       # the caller's RNG is untouched
    for k, v in model.state_dict().items():                              # so is the model
        assert torch.equal(v, before[k]), k

    # the same by hand: prune a copy, train 30 steps, score on the validation split (0.909 measured)
    net = copy.deepcopy(model)
    g = graphs.analyse(net, size)
    net = surgery.prune(g, surgery.choose(g, [o[i] for o, i in zip(options, choice)], "l1"))
    assert [c[1] for c in surgery.channel_counts(net).values()] == [16, 8, 64, 32, 10]   # the classifier's 10 stay
    train(net, digits16, max_steps=30, lr=0.01, batch_size=64, lr_step=10**9, progress=False, validate=False, seed=0)
    assert acc == evaluate(net, eval_loader(digits16.val))
    assert 0.7 < acc <= 1.0
    assert fit(choice) == acc and len(fit.calls) == 2                   # deterministic
    assert fit.calls[0].channels == (16, 8, 64, 32)


@pytest.mark.slow
def test_accuracy_fitness_drives_the_evolutionary_search(trained, digits16):
    from latprof.search import Problem, Term, run_search

    model, _ = trained
    options = _options(model, digits16.input_size)
    terms = [Term((g,), np.array(o, dtype=float)) for g, o in enumerate(options)]
    problem = Problem(options, [np.zeros(len(o)) for o in options], terms, 0.0, target=sum(o[1] for o in options))
    fit = accuracy_fitness(model, None, options, digits16, fitness_steps=5, batch_size=64)
    r = run_search("evo", problem, fitness=fit, population=3, cycles=1, mutations=1, crossovers=1, parents=2)
    assert problem.feasible(r.choice) and r.evaluations == len(fit.calls) <= 5
    assert r.value == max(c.accuracy for c in fit.calls)


@pytest.mark.slow
def test_accuracy_fitness_refuses_an_empty_validation_split(trained):
    with pytest.raises(LatprofError, match="validation split, which is empty"):
        accuracy_fitness(trained[0], None, [(8, 16)], data.load("digits", val_fraction=0.0))


# --- command line -----------------------------------------------------------------------------

@pytest.mark.slow
def test_cli_train_then_finetune_a_pruned_model(cli, tmp_path):
    r = cli("train", "small_cifar10", "--data", "digits", "--out", "m.pt", "--max-steps", "8",
            "--batch-size", "32", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "1295 train, 143 val, 359 test" in r.output and "8 steps" in r.output and "after    val" in r.output
    model = torch.load(tmp_path / "m.pt", weights_only=False)
    g = graphs.analyse(model, (3, 32, 32))
    torch.save(surgery.prune(g, surgery.choose(g, [16, 16, 32, 32], "l1")), tmp_path / "pruned.pt")

    args = ["finetune", "pruned.pt", "--data", "digits", "--batch-size", "32", "--no-progress",
            "--checkpoint", "ck.pt"]
    r = cli(*args, "--max-steps", "3")
    assert r.exit_code == 0, r.output
    assert "before   val" in r.output and "after    val" in r.output and "3 steps" in r.output
    assert (tmp_path / "pruned.finetuned.pt").is_file() and (tmp_path / "ck.pt").is_file()
    r = cli(*args, "--max-steps", "5", "--resume", "--out", "again.pt")
    assert r.exit_code == 0 and "5 steps" in r.output, r.output
    tuned = torch.load(tmp_path / "again.pt", weights_only=False)
    assert surgery.channel_counts(tuned)["features.0"] == (3, 16)


def test_cli_errors_are_one_line(cli, tmp_path):
    r = cli("train", "small_cifar10", "--data", f"cifar10:{tmp_path}", "--out", "m.pt")
    assert r.exit_code == 1 and "data_batch_1" in r.output and "Traceback" not in r.output
    torch.save({"w": torch.zeros(1)}, tmp_path / "sd.pt")
    r = cli("finetune", "sd.pt", "--data", "digits")
    assert r.exit_code == 1 and "not a model" in r.output
    r = cli("train", "resnet20_cifar10", "--data", "digits", "--out", "m.pt", "--resume", "--max-steps", "1")
    assert r.exit_code == 1 and "--checkpoint" in r.output
