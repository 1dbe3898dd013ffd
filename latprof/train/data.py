"""Data sets for training, fine-tuning and accuracy-in-the-loop search, named by a short spec.

``load(spec)`` returns ``Splits(train, val, test, num_classes, input_size)``:

- ``cifar10:DIR`` / ``cifar100:DIR``: torchvision's CIFAR readers on files already on disk
  (DIR holds ``cifar-10-batches-py/`` or ``cifar-100-python/``, or is that folder).
- ``imagefolder:DIR``: ``DIR/train/<class>/*.jpg`` plus a labelled held-out split, ``DIR/test``
  or ``DIR/val`` with the same class folders; TinyImageNet's ``val/val_annotations.txt`` and
  Food-101's ``images/`` + ``meta/train.txt, meta/test.txt`` are read as they come.
- ``digits``: scikit-learn's bundled 8x8 digits (1797 images, no download), upsampled to 32x32
  (or ``image_size``), replicated to 3 channels, normalised. A small, real task that trains in
  seconds on a CPU: what the tests and demos use.

latprof never downloads data: a missing or malformed folder is a LatprofError naming the files
it expects.

Which split is for what. The validation split is carved from the training set (stratified by
class, seeded): it is what accuracy-in-the-loop search scores candidates on, and what training
reports per epoch. The test split is touched only for the final report. ABCPruner's released
code scores candidates on the test set, which selects on the numbers it then reports; latprof
does not. Training images get light augmentation (random crop with padding, horizontal flip;
none for digits); validation and test images never do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from latprof.errors import LatprofError

SPECS = ("cifar10:DIR", "cifar100:DIR", "imagefolder:DIR", "digits")
DIGITS_TEST_FRACTION = 0.2   # fixed stratified test split of the 1797 digits (same for every seed)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"],
                "CIFAR10", 10),
    "cifar100": ("cifar-100-python", ["train", "test", "meta"], "CIFAR100", 100),
}


@dataclass
class Splits:
    """Train / validation / test datasets of (image tensor C,H,W, class index) pairs."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    input_size: tuple[int, int, int]   # (C, H, W) of one image after transforms
    spec: str = ""

    def summary(self) -> str:
        return (f"{self.spec}: {len(self.train)} train, {len(self.val)} val, {len(self.test)} test images, "
                f"{self.num_classes} classes, input {'x'.join(map(str, self.input_size))}")


class View(Dataset):
    """Some items of a base dataset, with their own transform (train and val share one base)."""

    def __init__(self, base, indices, transform=None, targets=None):
        self.base, self.indices, self.transform = base, [int(i) for i in indices], transform
        self.targets = [int(targets[i]) for i in self.indices] if targets is not None else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        x, y = self.base[self.indices[i]]
        return (self.transform(x) if self.transform is not None else x), int(y)


class _Files(Dataset):
    """(path, class) pairs read as RGB PIL images."""

    def __init__(self, samples: list[tuple[str, int]]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        from PIL import Image

        path, y = self.samples[i]
        with Image.open(path) as img:
            return img.convert("RGB"), y


def load(spec: str, *, val_fraction: float = 0.1, seed: int = 0, image_size: int | None = None) -> Splits:
    """The data set named by `spec`; `val_fraction` of the training set (per class) becomes `val`."""
    if not 0.0 <= val_fraction < 1.0:
        raise LatprofError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if image_size is not None and image_size < 8:
        raise LatprofError(f"image size must be at least 8 pixels, got {image_size}")
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind in _CIFAR:
        if not arg:
            raise LatprofError(f"{spec!r}: give the folder, e.g. {kind}:~/data (latprof never downloads)")
        splits = _cifar(kind, Path(arg).expanduser(), val_fraction, seed, image_size)
    elif kind == "imagefolder":
        if not arg:
            raise LatprofError(f"{spec!r}: give the folder, e.g. imagefolder:~/data/tiny-imagenet-200")
        splits = _imagefolder(Path(arg).expanduser(), val_fraction, seed, image_size)
    elif kind == "digits" and not arg:
        splits = _digits(val_fraction, seed, image_size or 32)
    else:
        raise LatprofError(f"unknown data spec {spec!r}; use one of: {', '.join(SPECS)}")
    splits.spec = spec
    return splits


def carve(targets, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split positions 0..n-1 into (keep, carved): `fraction` of each class carved, seeded."""
    targets = np.asarray(targets)
    rng = np.random.default_rng(seed)
    keep, out = [], []
    for c in np.unique(targets):
        idx = np.flatnonzero(targets == c)
        idx = idx[rng.permutation(len(idx))]
        n = int(round(fraction * len(idx)))
        out += idx[:n].tolist()
        keep += idx[n:].tolist()
    return sorted(keep), sorted(out)


def _split(base, targets, positions, val_fraction, seed, train_tf, eval_tf) -> tuple[View, View]:
    keep, val = carve([targets[p] for p in positions], val_fraction, seed)
    positions = np.asarray(positions)
    return (View(base, positions[keep], train_tf, targets), View(base, positions[val], eval_tf, targets))


def _transforms(size: int, native: int, mean, std):
    """Train: random crop (padding size/8) and flip; eval: resize and center crop only."""
    from torchvision import transforms as T

    resize = [] if size == native else [T.Resize(size), T.CenterCrop(size)]
    tail = [T.ToTensor(), T.Normalize(mean, std)]
    train = T.Compose(resize + [T.RandomCrop(size, padding=max(1, size // 8)), T.RandomHorizontalFlip()] + tail)
    return train, T.Compose(resize + tail)


def _cifar(kind: str, root: Path, val_fraction: float, seed: int, image_size: int | None) -> Splits:
    import torchvision

    folder, files, cls, classes = _CIFAR[kind]
    if root.name == folder:
        root = root.parent
    missing = [f for f in files if not (root / folder / f).is_file()]
    expect = (f"expected {root / folder}/ with {', '.join(files)} (the python version of {kind.upper()}, "
              f"unpacked from its .tar.gz); latprof never downloads data sets")
    if missing:
        raise LatprofError(f"{kind}: missing {', '.join(missing)}; {expect}")
    try:
        train_base = getattr(torchvision.datasets, cls)(str(root), train=True, download=False)
        test_base = getattr(torchvision.datasets, cls)(str(root), train=False, download=False)
    except Exception as exc:  # torchvision's integrity check or unpickling failed: the files are damaged
        raise LatprofError(f"{kind}: the files in {root / folder} are corrupted or not {kind.upper()} "
                           f"({type(exc).__name__}: {exc}); {expect}") from exc
    size = image_size or 32
    train_tf, eval_tf = _transforms(size, 32, CIFAR_MEAN, CIFAR_STD)
    train, val = _split(train_base, train_base.targets, range(len(train_base)), val_fraction, seed, train_tf, eval_tf)
    test = View(test_base, range(len(test_base)), eval_tf, test_base.targets)
    return Splits(train, val, test, classes, (3, size, size))


def _imagefolder(root: Path, val_fraction: float, seed: int, image_size: int | None) -> Splits:
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    layout = ("expected DIR/train/<class>/*.jpg with a labelled held-out split: DIR/test/<class>/ or "
              "DIR/val/<class>/ (or TinyImageNet's DIR/val/val_annotations.txt, or Food-101's "
              "DIR/images/<class>/ with DIR/meta/train.txt and meta/test.txt)")
    if not root.is_dir():
        raise LatprofError(f"imagefolder: {root} is not a folder; {layout}")
    if (root / "meta" / "train.txt").is_file() and (root / "images").is_dir():
        train_s, test_s, classes = _food101(root, layout)
    else:
        train_dir = root / "train"
        classes = sorted(d.name for d in train_dir.iterdir() if d.is_dir()) if train_dir.is_dir() else []
        if not classes:
            raise LatprofError(f"imagefolder: no class folders in {train_dir}; {layout}")
        index = {c: i for i, c in enumerate(classes)}
        train_s = make_dataset(str(train_dir), index, IMG_EXTENSIONS, allow_empty=True)
        test_s = _held_out(root, index, make_dataset, IMG_EXTENSIONS)
        if test_s is None:
            raise LatprofError(f"imagefolder: no labelled held-out split in {root} "
                               f"(an unlabelled test/ folder does not count); {layout}")
    if not train_s or not test_s:
        raise LatprofError(f"imagefolder: no images ({', '.join(e for e in IMG_EXTENSIONS)}) in the "
                           f"{'train' if not train_s else 'held-out'} split of {root}; {layout}")
    native = _first_size(train_s[0][0])
    size = image_size or min(native, 224)
    train_tf, eval_tf = _transforms(size, -1, IMAGENET_MEAN, IMAGENET_STD)
    base, targets = _Files(train_s), [y for _, y in train_s]
    train, val = _split(base, targets, range(len(base)), val_fraction, seed, train_tf, eval_tf)
    test = View(_Files(test_s), range(len(test_s)), eval_tf, [y for _, y in test_s])
    return Splits(train, val, test, len(classes), (3, size, size))


def _held_out(root: Path, index: dict, make_dataset, extensions):
    """The first of test/ and val/ whose class folders are train's (or TinyImageNet's val/)."""
    for name in ("test", "val"):
        d = root / name
        if not d.is_dir():
            continue
        sub = [s.name for s in d.iterdir() if s.is_dir()]
        if sub and all(s in index for s in sub):
            return make_dataset(str(d), {s: index[s] for s in sub}, extensions, allow_empty=True)
        notes = d / "val_annotations.txt"
        if notes.is_file():
            samples = []
            for line in notes.read_text().splitlines():
                parts = line.split("\t")
                if len(parts) >= 2 and parts[1] in index:
                    samples.append((str(d / "images" / parts[0]), index[parts[1]]))
            return samples
    return None


def _food101(root: Path, layout: str):
    def read(name):
        lines = [ln.strip() for ln in (root / "meta" / name).read_text().splitlines() if ln.strip()]
        return [(str(root / "images" / f"{ln}.jpg"), ln.split("/")[0]) for ln in lines]

    if not (root / "meta" / "test.txt").is_file():
        raise LatprofError(f"imagefolder: {root / 'meta' / 'test.txt'} is missing; {layout}")
    train, test = read("train.txt"), read("test.txt")
    classes = sorted({c for _, c in train})
    index = {c: i for i, c in enumerate(classes)}
    return ([(p, index[c]) for p, c in train], [(p, index[c]) for p, c in test if c in index], classes)


def _first_size(path: str) -> int:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return min(img.size)
    except OSError as exc:
        raise LatprofError(f"imagefolder: cannot read {path} as an image ({exc})") from exc


def _digits(val_fraction: float, seed: int, size: int) -> Splits:
    """sklearn's 8x8 digits as a 3x`size`x`size` image task. The test split is fixed (seed 0, 20%
    per class) so every run reports on the same 360 images; `seed` moves only the val split."""
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0    # N,1,8,8 in [0, 1]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    y = torch.tensor(d.target, dtype=torch.long)
    pool, test_idx = carve(d.target, DIGITS_TEST_FRACTION, 0)
    mean, std = x[pool].mean(), x[pool].std()                              # statistics of non-test images
    x = ((x - mean) / std).expand(-1, 3, -1, -1).contiguous()
    base, targets = TensorDataset(x, y), d.target.tolist()
    train, val = _split(base, targets, pool, val_fraction, seed, None, None)
    return Splits(train, val, View(base, test_idx, None, targets), 10, (3, size, size))
