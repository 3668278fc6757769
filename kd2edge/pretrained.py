"""Known pretrained checkpoints by name (the shared CIFAR teachers), found in the weights location.

`path_of(name)` never downloads; `fetch(name)` does (needs internet), and is reached only explicitly:

    python -m kd2edge.pretrained fetch cifar10-resnet56      (setup.sh)
    kd2edge eval cifar10-resnet56 --download
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from kd2edge import Kd2EdgeError
from kd2edge.files import atomic_write, sha256
from kd2edge.locations import location, resolve_file

AKAMASTER = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"
# name -> (arch, dataset, file under the weights location, url or None); the part of the file name after
# the last '-' is the sha256 prefix a download must match
PRETRAINED = {
    "cifar10-resnet20": ("resnet20", "cifar10", "cifar10/resnet20-12fca82f.th", AKAMASTER + "resnet20-12fca82f.th"),
    "cifar10-resnet32": ("resnet32", "cifar10", "cifar10/resnet32-d509ac18.th", AKAMASTER + "resnet32-d509ac18.th"),
    "cifar10-resnet44": ("resnet44", "cifar10", "cifar10/resnet44-014dd654.th", AKAMASTER + "resnet44-014dd654.th"),
    "cifar10-resnet56": ("resnet56", "cifar10", "cifar10/resnet56-4bfd9763.th", AKAMASTER + "resnet56-4bfd9763.th"),
    "cifar100-resnet56": ("resnet56", "cifar100", "cifar100/resnet56-cifar100.th", None),
}


def arch_of(name) -> str | None:
    """The architecture of a known name, None for anything else (e.g. a path)."""
    return PRETRAINED[str(name)][0] if str(name) in PRETRAINED else None


# Named ensembles: name -> members (known teacher names)
ENSEMBLES = {"cifar10-ensemble": ["cifar10-resnet20", "cifar10-resnet32", "cifar10-resnet44", "cifar10-resnet56"]}


def ensemble_members(spec) -> list | None:
    """The member specs when `spec` names an ensemble: a list, "a,b,c" or a name in ENSEMBLES; else None."""
    if isinstance(spec, (list, tuple)):
        return list(spec)
    text = str(spec)
    if text in ENSEMBLES:
        return list(ENSEMBLES[text])
    if "," in text:
        return [p.strip() for p in text.split(",") if p.strip()]
    return None


def ensemble_record(paths, shas) -> tuple[str, str]:
    """(path, sha256) an ensemble teacher is recorded under: distillation writes it, export rebuilds it."""
    return "ensemble(" + ", ".join(map(str, paths)) + ")", hashlib.sha256("+".join(shas).encode()).hexdigest()


def arch_of_file(path) -> str | None:
    """The architecture of a known checkpoint found by its file name (e.g. .../cifar10/resnet20-12fca82f.th)."""
    return next((arch for arch, _, rel, _ in PRETRAINED.values() if Path(str(path)).as_posix().endswith(rel)), None)


def path_of(name: str, weights_dir=None) -> Path:
    """Path of a known checkpoint in the weights location; a clear error (never a download) when missing."""
    if name not in PRETRAINED:
        raise Kd2EdgeError(f"unknown pretrained name {name!r}; known: {', '.join(PRETRAINED)}")
    path = location("weights", weights_dir) / PRETRAINED[name][2]
    if not path.exists():
        raise Kd2EdgeError(f"{name} not found at {path}; fetch it with `python -m kd2edge.pretrained fetch {name}` "
                           "(needs internet), copy it there, or set KD2EDGE_WEIGHTS")
    return path


def resolve_checkpoint(spec) -> Path:
    """A known name's file, else `spec` as a path (or under the weights location); when neither exists the
    error lists the known names."""
    if str(spec) in PRETRAINED:
        return path_of(str(spec))
    try:
        return resolve_file(spec)
    except Kd2EdgeError as e:
        if Path(str(spec)).suffix or "/" in str(spec):  # a path, not meant as a name
            raise
        raise Kd2EdgeError(f"{e}; it is not a known name either (known: {', '.join(PRETRAINED)})") from None


def fetch(name: str, weights_dir=None) -> Path:
    """Path of a known checkpoint; downloaded into the weights location when missing."""
    if name not in PRETRAINED:
        raise Kd2EdgeError(f"unknown pretrained name {name!r}; known: {', '.join(PRETRAINED)}")
    _, _, rel, url = PRETRAINED[name]
    path = location("weights", weights_dir) / rel
    if path.exists():
        return path
    if url is None:
        raise Kd2EdgeError(f"{path} not found and {name} has no public download; copy it there")
    import urllib.request

    try:
        atomic_write(path, lambda tmp: urllib.request.urlretrieve(url, tmp))
    except Exception as e:
        raise Kd2EdgeError(f"could not download {name} from {url}: {e}; copy the file to {path}") from None
    expected = Path(rel).stem.split("-")[-1]
    if not sha256(path).startswith(expected):
        path.unlink()
        raise Kd2EdgeError(f"downloaded {name} does not match its checksum prefix {expected}")
    return path


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "fetch":
        sys.exit("usage: python -m kd2edge.pretrained fetch NAME")
    try:
        print(fetch(sys.argv[2]))
    except Kd2EdgeError as e:
        sys.exit(f"error: {e}")
