"""Known pretrained teachers by name, found in the weights location or downloaded (needs internet).

    python -m kd2edge.teachers fetch cifar10-resnet56
"""
from __future__ import annotations

import sys
from pathlib import Path

from kd2edge import Kd2EdgeError
from kd2edge.paths import location, sha256

AKAMASTER = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"
# name -> (arch, dataset, file under the weights location, url or None); the part of the file name after
# the last '-' is the sha256 prefix a download must match
TEACHERS = {
    "cifar10-resnet20": ("resnet20", "cifar10", "cifar10/resnet20-12fca82f.th", AKAMASTER + "resnet20-12fca82f.th"),
    "cifar10-resnet32": ("resnet32", "cifar10", "cifar10/resnet32-d509ac18.th", AKAMASTER + "resnet32-d509ac18.th"),
    "cifar10-resnet44": ("resnet44", "cifar10", "cifar10/resnet44-014dd654.th", AKAMASTER + "resnet44-014dd654.th"),
    "cifar10-resnet56": ("resnet56", "cifar10", "cifar10/resnet56-4bfd9763.th", AKAMASTER + "resnet56-4bfd9763.th"),
    "cifar100-resnet56": ("resnet56", "cifar100", "cifar100/resnet56-cifar100.th", None),
}


def fetch(name: str, weights_dir=None) -> Path:
    """Path of a known teacher's checkpoint; downloaded into the weights location when missing."""
    if name not in TEACHERS:
        raise Kd2EdgeError(f"unknown teacher {name!r}; known: {', '.join(TEACHERS)}")
    arch, _, rel, url = TEACHERS[name]
    path = location("weights", weights_dir) / rel
    if path.exists():
        return path
    if url is None:
        raise Kd2EdgeError(f"{path} not found and {name} has no public download; copy it there")
    import urllib.request

    from kd2edge.paths import atomic_write

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
        sys.exit("usage: python -m kd2edge.teachers fetch NAME")
    try:
        print(fetch(sys.argv[2]))
    except Kd2EdgeError as e:
        sys.exit(f"error: {e}")
