"""Where data, weights and caches live.

Each location resolves in this order: the command-line flag, the environment variable, the default
folder under the current directory.

| what    | flag        | environment variable | default      |
|---------|-------------|----------------------|--------------|
| data    | --data-dir  | KD2EDGE_DATA         | ./data       |
| weights | (a path)    | KD2EDGE_WEIGHTS      | ./models     |
| cache   |             | KD2EDGE_CACHE        | ./.cache     |
| runs    | --out       | KD2EDGE_RUNS         | ./runs       |

Every command writes under `<runs>/<command>/` (`run_folder`) unless --out names a folder: never into the
project's tracked files.
"""
from __future__ import annotations

import os
from pathlib import Path

from kd2edge import Kd2EdgeError

ENV = {"data": "KD2EDGE_DATA", "weights": "KD2EDGE_WEIGHTS", "cache": "KD2EDGE_CACHE", "runs": "KD2EDGE_RUNS"}
DEFAULT = {"data": "data", "weights": "models", "cache": ".cache", "runs": "runs"}


def location(kind: str, flag: str | os.PathLike | None = None) -> Path:
    """Resolve a location: flag, then environment variable, then the default folder."""
    if flag:
        return Path(flag).expanduser()
    env = os.environ.get(ENV[kind])
    return Path(env).expanduser() if env else Path(DEFAULT[kind])


def run_folder(command: str, name: str | None = None) -> Path:
    """The default output folder of a command: `<runs>/<command>[/<name>]`."""
    p = location("runs") / command
    return p / name if name else p


def resolve_file(path: str | os.PathLike, kind: str = "weights") -> Path:
    """A file given as a path, or relative to the weights location (e.g. `cifar10/resnet56-4bfd9763.th`)."""
    p = Path(path).expanduser()
    if p.exists():
        return p
    if p.is_absolute():
        raise Kd2EdgeError(f"file not found: {path}")
    q = location(kind) / p
    if q.exists():
        return q
    raise Kd2EdgeError(f"file not found: {path} (also looked in {q}; set {ENV[kind]} or pass a full path)")
