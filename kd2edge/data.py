"""Datasets as in-memory uint8 arrays (N, H, W, C) with int64 labels and class names. No torch.

Sources (`load_dataset(source, split)`):
- `cifar10`, `cifar100`: the standard python layout (`cifar-10-batches-py/`, `cifar-100-python/`) under
  the data location (see `kd2edge.locations`); downloaded with torchvision's downloader when missing and
  `download=True` (needs internet).
- a folder in ImageFolder layout: `root/train/<class>/*.png|jpg`, `root/test/<class>/...`.
- an `.npz` file with `x_train`/`y_train` and `x_test`/`y_test`, or only `x` and `y` (then the last 10% of
  each class is the test split, said in one line), and optional `classes`.
"""
from __future__ import annotations

import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kd2edge import Kd2EdgeError
from kd2edge.locations import location

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
    extra: dict = field(default_factory=dict)  # per-sample arrays, e.g. coarse labels for CIFAR-100
    extra_classes: dict = field(default_factory=dict)  # names for the extra labels, e.g. coarse class names

    def __len__(self):
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, n: int | None) -> "Dataset":
        if n is None or n >= len(self):
            return self
        return Dataset(self.x[:n], self.y[:n], self.classes, self.name, self.split,
                       {k: v[:n] for k, v in self.extra.items()}, self.extra_classes)

    def check(self, where) -> "Dataset":
        """Fail on labels outside [0, num_classes) or images that are not uint8 (N, H, W, 3)."""
        if self.x.dtype != np.uint8 or self.x.ndim != 4 or self.x.shape[-1] != 3 or len(self.x) != len(self.y):
            raise Kd2EdgeError(f"{where}: images must be uint8 (N,H,W,3) with one label each; got {self.x.dtype} "
                               f"{self.x.shape}, {len(self.y)} labels")
        if len(self.y) and (self.y.min() < 0 or self.y.max() >= self.num_classes):
            raise Kd2EdgeError(f"{where}: labels must lie in [0, {self.num_classes}) for {self.num_classes} classes; "
                               f"found {int(self.y.min())}..{int(self.y.max())}")
        return self


# The only globals the official CIFAR python batches (and the materialized copies) reference: numpy array
# reconstruction (_frombuffer: pickle protocol 5). Anything else (os.system, builtins.eval, ...) is refused,
# since unpickling a global can run any code.
SAFE_PICKLE_GLOBALS = {(f"numpy.{core}.{mod}", name) for core in ("core", "_core")
                       for mod, name in (("multiarray", "_reconstruct"), ("numeric", "_frombuffer"))}
SAFE_PICKLE_GLOBALS |= {("numpy", "ndarray"), ("numpy", "dtype")}


def _latin1_bytes(text, encoding="utf-8"):
    """Python 3 pickles bytes at protocol 2 as _codecs.encode(text, 'latin1'): allowed with that codec only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refused global _codecs.encode with {encoding!r}")
    return text.encode("latin1")


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes, str, numbers and numpy arrays only."""

    def find_class(self, module, name):
        if (module, name) == ("_codecs", "encode"):
            return _latin1_bytes
        if (module, name) in SAFE_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name}")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            d = _CifarUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as e:
        if str(e).startswith("refused global"):
            raise Kd2EdgeError(f"dataset file {path} contains code or objects a CIFAR batch must not ({e}); it was "
                               "not loaded: delete it and re-create it (materialize.py or --download)") from None
        raise Kd2EdgeError(f"corrupt dataset file {path}: UnpicklingError: {e}; delete it and "
                           "re-create it (materialize.py or download)") from None
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
    extra = {"coarse": np.asarray(raw["coarse_labels"], dtype=np.int64)} if "coarse_labels" in raw else {}
    classes, coarse = [str(i) for i in range(100)], [str(i) for i in range(20)]
    if (d / "meta").exists():
        meta = _unpickle(d / "meta")
        classes = _names(meta.get("fine_label_names", classes))
        coarse = _names(meta.get("coarse_label_names", coarse))
    return Dataset(np.ascontiguousarray(x), y, classes, "cifar100", split, extra,
                   {"coarse": coarse} if extra else {})


def _split_dir(root: Path, split: str) -> Path:
    names = (split, "val") if split == "test" else (split,)  # `val/` stands in for a missing `test/`
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise Kd2EdgeError(f"{root / split} not found (expected an image folder {root}/{{train,test}}/<class>/*.png|jpg)")


def load_image_folder(root: Path, split: str, size: int | tuple[int, int] | None = None) -> Dataset:
    """ImageFolder tree. Images are converted to RGB and resized to `size` (an int for square images or
    (height, width); default: the first image's height, square). Class names and label numbers come from
    the class folders of ALL splits, so train and test agree even when a split lacks a class."""
    from PIL import Image

    d = _split_dir(root, split)
    classes = sorted({p.name for s in ("train", "test", "val") if (root / s).is_dir()
                      for p in (root / s).iterdir() if p.is_dir()})
    if not any(p.is_dir() for p in d.iterdir()):
        raise Kd2EdgeError(f"{d} has no class folders (expected {d}/<class>/*.png|jpg)")
    hw = (size, size) if isinstance(size, int) else (tuple(size) if size else None)
    xs, ys = [], []
    for i, c in enumerate(classes):
        if not (d / c).is_dir():
            continue
        for p in sorted((d / c).iterdir()):
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(p) as im:
                    img = im.convert("RGB")
            except Exception as e:
                raise Kd2EdgeError(f"cannot read image {p}: {e}") from None
            if hw is None:
                hw = (img.size[1], img.size[1])
            if img.size != (hw[1], hw[0]):
                img = img.resize((hw[1], hw[0]), Image.BILINEAR)
            xs.append(np.asarray(img, dtype=np.uint8))
            ys.append(i)
    if not xs:
        raise Kd2EdgeError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {d}/<class>/")
    if len(classes) < 2:
        raise Kd2EdgeError(f"{root} has {len(classes)} class folder ({', '.join(classes)}); a classifier needs at "
                           "least 2 (one folder per class under train/ and test/)")
    found = set(ys)
    empty = [c for i, c in enumerate(classes) if i not in found]
    if split == "train" and empty:
        raise Kd2EdgeError(f"{d}: class folder(s) {', '.join(empty)} hold no images; add images or remove them")
    return Dataset(np.stack(xs), np.asarray(ys, dtype=np.int64), classes, root.name, split)


def load_npz(path: Path, split: str) -> Dataset:
    """`x` (uint8 N,H,W,C or N,H,W) and `y`; or per split `x_train`/`y_train`, `x_test`/`y_test`.
    Optional `classes` (names); else the classes are 0..max label."""
    try:
        z = np.load(path, allow_pickle=False)
        keys = (f"x_{split}", f"y_{split}") if f"x_{split}" in z.files else ("x", "y")
        lacking = [k for k in keys if k not in z.files]
        if lacking:
            raise Kd2EdgeError(f"{path} lacks array {lacking[0]!r} (has {', '.join(z.files) or 'none'}; expected "
                               f"x: uint8 N,H,W,C and y: labels, or x_{split}/y_{split})")
        x, y = z[keys[0]], _int_labels(z[keys[1]], path)
        if keys == ("x", "y") and not any(k.startswith(("x_train", "x_test")) for k in z.files):
            x, y = _holdout(x, np.asarray(y).reshape(-1), split, path)
    except Kd2EdgeError:
        raise
    except Exception as e:
        raise Kd2EdgeError(f"cannot read {path}: {type(e).__name__}: {e} (expected an .npz with x and y)") from None
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.dtype != np.uint8 or len(x) != len(y):
        raise Kd2EdgeError(f"{path}: x must be uint8 (N,H,W,C) with one label each; got {x.dtype} {x.shape}, "
                           f"{len(y)} labels")
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    y = _int_labels(y, path)
    classes = [str(c) for c in z["classes"]] if "classes" in z.files else [str(i) for i in range(int(y.max(initial=0)) + 1)]
    return Dataset(np.ascontiguousarray(x), y, classes, path.stem, split)


def _int_labels(y, path) -> np.ndarray:
    """Labels as int64; float labels only when every value is a whole number (never truncated)."""
    y = np.asarray(y).reshape(-1)
    if y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y))):
        raise Kd2EdgeError(f"{path}: labels y must be integers (class numbers), got {y.dtype} values such as "
                           f"{y[:3].tolist()}")
    return y.astype(np.int64)


HOLDOUT = 0.10  # of each class, the LAST images (in file order) of an .npz without splits form its test split
_told: set = set()


def holdout_mask(y: np.ndarray, fraction: float = HOLDOUT) -> np.ndarray:
    """True for the test images of an unsplit dataset: the last ceil(fraction * n) images of every class with
    at least two images, in file order (no randomness: the same split on every machine)."""
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) > 1:
            test[idx[len(idx) - int(np.ceil(fraction * len(idx))):]] = True
    return test


def _holdout(x: np.ndarray, y: np.ndarray, split: str, path: Path):
    """An .npz with only x/y: split it so that nothing is validated on its own training images; say so once."""
    if len(x) != len(y):
        return x, y  # reported by the shape check
    test = holdout_mask(y)
    if str(path) not in _told:
        _told.add(str(path))
        print(f"note: {path} has no x_train/x_test split: its last {HOLDOUT:.0%} of each class "
              f"({int(test.sum())} images) is the test split, the other {int((~test).sum())} the training split",
              file=sys.stderr, flush=True)
    keep = test if split == "test" else ~test
    return x[keep], y[keep]


DATASETS = {"cifar10": load_cifar10, "cifar100": load_cifar100}


def load_dataset(source: str, split: str = "test", data_dir=None, download: bool = False,
                 limit: int | None = None, size: int | tuple[int, int] | None = None) -> Dataset:
    """Load `source` (a DATASETS name, an ImageFolder directory or an .npz file) for `split`.
    `size` resizes an image folder's images (int or (height, width)); `limit` keeps the first N."""
    if split not in ("train", "test"):
        raise Kd2EdgeError(f"unknown split {split!r}; valid: train, test")
    if limit is not None and limit < 1:
        raise Kd2EdgeError(f"--limit must be at least 1, got {limit}")
    source = str(source)
    if source in DATASETS:
        ds = DATASETS[source](split, location("data", data_dir), download)
    else:
        p = Path(source).expanduser()
        if p.suffix == ".npz" and p.is_file():
            ds = load_npz(p, split)
        elif p.is_dir():
            ds = load_image_folder(p, split, size)
        elif p.suffix == ".npz" or "/" in source or "\\" in source:
            raise Kd2EdgeError(f"dataset {source} not found (expected an image folder root/{{train,test}}/<class>/"
                               "*.png|jpg or an .npz file)")
        else:
            raise Kd2EdgeError(f"unknown dataset {source!r}: valid names are {', '.join(DATASETS)}, "
                               "or a path to an image folder (root/train/<class>/...) or an .npz file")
    return ds.check(f"dataset {source} ({split})").subset(limit)


def stats_for(name: str) -> dict:
    """Normalization stats for a dataset name; ImageNet stats for anything else."""
    return STATS.get(name, STATS["imagenet"])
