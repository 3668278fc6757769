"""Datasets as in-memory uint8 arrays (N, H, W, C) with int64 labels and class names. No torch.

Sources (`load_dataset(source, split)`):
- `cifar10`, `cifar100`: the standard python layout (`cifar-10-batches-py/`, `cifar-100-python/`) under
  the data location (see `kd2edge.paths`); downloaded with torchvision's downloader when missing and
  `download=True` (needs internet).
- a folder in ImageFolder layout: `root/train/<class>/*.png|jpg`, `root/test/<class>/...`.
- an `.npz` file with `x` (uint8 N,H,W,C) and `y` (and optional `classes`).
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kd2edge import Kd2EdgeError
from kd2edge.paths import location

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# Per-dataset normalization stats on [0, 1] pixels (train-set channel mean/std).
STATS = {
    "cifar10": {"mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)},
    "cifar100": {"mean": (0.5071, 0.4865, 0.4409), "std": (0.2673, 0.2564, 0.2762)},
    "imagenet": {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
CIFAR_URLS = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
}
CIFAR_LAYOUT = {
    "cifar10": "cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}",
    "cifar100": "cifar-100-python/{train, test, meta}",
}


@dataclass
class Dataset:
    x: np.ndarray  # uint8 (N, H, W, C)
    y: np.ndarray  # int64 (N,)
    classes: list[str]
    name: str
    split: str
    extra: dict = field(default_factory=dict)  # e.g. coarse labels for CIFAR-100

    def __len__(self):
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, n: int | None) -> "Dataset":
        if n is None or n >= len(self):
            return self
        return Dataset(self.x[:n], self.y[:n], self.classes, self.name, self.split,
                       {k: v[:n] for k, v in self.extra.items()})


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
    except FileNotFoundError:
        raise
    except Exception as e:
        raise Kd2EdgeError(f"corrupt dataset file {path}: {type(e).__name__}: {e}; delete it and "
                           "re-create it (materialize.py or download)") from None
    if not isinstance(d, dict):
        raise Kd2EdgeError(f"corrupt dataset file {path}: expected a dict, got {type(d).__name__}")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def _cifar_rows(d: dict, path: Path, label_key: str):
    try:
        data = np.asarray(d["data"], dtype=np.uint8)
        labels = np.asarray(d[label_key], dtype=np.int64)
    except KeyError as e:
        raise Kd2EdgeError(f"corrupt dataset file {path}: missing key {e}") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise Kd2EdgeError(f"corrupt dataset file {path}: data shape {data.shape}, {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _names(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _cifar_dir(name: str, root: Path, download: bool) -> Path:
    sub = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[name]
    for d in (root / sub, root / name / sub):
        if d.is_dir():
            return d
    if download:
        return _download(name, root) / sub
    raise Kd2EdgeError(
        f"{name} not found under {root} (expected {root}/{CIFAR_LAYOUT[name]}); point --data-dir or "
        f"KD2EDGE_DATA at the folder holding it, or pass --download on a machine with internet")


def _download(name: str, root: Path) -> Path:
    """torchvision's downloader (checks the official archive's md5). Needs internet."""
    try:
        from torchvision.datasets.utils import download_and_extract_archive
    except ImportError:
        raise Kd2EdgeError("downloading needs torchvision: pip install 'kd2edge[train]'") from None
    md5 = {"cifar10": "c58f30108f718f92721af3b95e74349a", "cifar100": "eb9058c3a382ffc7106e4002c42a8d85"}[name]
    try:
        download_and_extract_archive(CIFAR_URLS[name], str(root), md5=md5)
    except Exception as e:
        raise Kd2EdgeError(f"could not download {name} from {CIFAR_URLS[name]}: {e}") from None
    return root


def load_cifar10(split: str, root: Path, download: bool = False) -> Dataset:
    d = _cifar_dir("cifar10", root, download)
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    xs, ys = [], []
    for f in files:
        if not (d / f).exists():
            raise Kd2EdgeError(f"missing {d / f} (expected {CIFAR_LAYOUT['cifar10']})")
        x, y = _cifar_rows(_unpickle(d / f), d / f, "labels")
        xs.append(x)
        ys.append(y)
    classes = CIFAR10_CLASSES
    if (d / "batches.meta").exists():
        classes = _names(_unpickle(d / "batches.meta").get("label_names", CIFAR10_CLASSES))
    return Dataset(np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys), classes, "cifar10", split)


def load_cifar100(split: str, root: Path, download: bool = False) -> Dataset:
    d = _cifar_dir("cifar100", root, download)
    f = d / ("train" if split == "train" else "test")
    if not f.exists():
        raise Kd2EdgeError(f"missing {f} (expected {CIFAR_LAYOUT['cifar100']})")
    raw = _unpickle(f)
    x, y = _cifar_rows(raw, f, "fine_labels")
    extra = {"coarse": np.asarray(raw.get("coarse_labels", []), dtype=np.int64)} if "coarse_labels" in raw else {}
    classes = [str(i) for i in range(100)]
    if (d / "meta").exists():
        classes = _names(_unpickle(d / "meta").get("fine_label_names", classes))
    return Dataset(np.ascontiguousarray(x), y, classes, "cifar100", split, extra)


def load_image_folder(root: Path, split: str, size: int | None = None) -> Dataset:
    """ImageFolder tree. Images are converted to RGB and resized to `size` (default: the first image's)."""
    from PIL import Image

    d = root / split
    if not d.is_dir():
        raise Kd2EdgeError(f"{d} not found (expected an image folder {root}/{{train,test}}/<class>/*.png|jpg)")
    classes = sorted(p.name for p in d.iterdir() if p.is_dir())
    if not classes:
        raise Kd2EdgeError(f"{d} has no class folders (expected {d}/<class>/*.png|jpg)")
    xs, ys = [], []
    for i, c in enumerate(classes):
        for p in sorted((d / c).iterdir()):
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                img = Image.open(p).convert("RGB")
            except Exception as e:
                raise Kd2EdgeError(f"cannot read image {p}: {e}") from None
            if size is None:
                size = img.size[1]
            if img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            xs.append(np.asarray(img, dtype=np.uint8))
            ys.append(i)
    if not xs:
        raise Kd2EdgeError(f"no images under {d}")
    return Dataset(np.stack(xs), np.asarray(ys, dtype=np.int64), classes, root.name, split)


def load_npz(path: Path, split: str) -> Dataset:
    try:
        z = np.load(path, allow_pickle=False)
        x, y = z["x"], z["y"]
    except KeyError as e:
        raise Kd2EdgeError(f"{path} lacks array {e} (expected x: uint8 N,H,W,C and y: labels)") from None
    except Exception as e:
        raise Kd2EdgeError(f"cannot read {path}: {e}") from None
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.dtype != np.uint8 or len(x) != len(y):
        raise Kd2EdgeError(f"{path}: x must be uint8 (N,H,W,C) with one label each; got {x.dtype} {x.shape}, "
                           f"{len(y)} labels")
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    y = np.asarray(y, dtype=np.int64)
    classes = [str(c) for c in z["classes"]] if "classes" in z.files else [str(i) for i in range(int(y.max()) + 1)]
    return Dataset(np.ascontiguousarray(x), y, classes, path.stem, split)


DATASETS = {"cifar10": load_cifar10, "cifar100": load_cifar100}


def load_dataset(source: str, split: str = "test", data_dir=None, download: bool = False,
                 limit: int | None = None) -> Dataset:
    """Load `source` (a DATASETS name, an ImageFolder directory or an .npz file) for `split`."""
    if split not in ("train", "test"):
        raise Kd2EdgeError(f"unknown split {split!r}; valid: train, test")
    if source in DATASETS:
        ds = DATASETS[source](split, location("data", data_dir), download)
    else:
        p = Path(source).expanduser()
        if p.suffix == ".npz" and p.is_file():
            ds = load_npz(p, split)
        elif p.is_dir():
            ds = load_image_folder(p, split)
        else:
            raise Kd2EdgeError(f"unknown dataset {source!r}: valid names are {', '.join(DATASETS)}, "
                               "or a path to an image folder (root/train/<class>/...) or an .npz file")
    return ds.subset(limit)


def stats_for(name: str) -> dict:
    """Normalization stats for a dataset name; ImageNet stats for anything else."""
    return STATS.get(name, STATS["imagenet"])
