"""Files written safely and read with one-line errors: atomic writes, JSON, YAML mappings, checksums."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from kd2edge import Kd2EdgeError


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call write(tmp_path) on a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give them the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def check_out_dir(path, flag: str = "--out") -> Path:
    """`path` usable as an output folder (existing folder, or creatable): else one error naming the fix.
    Checked before any work, so a bad --out never costs a measurement or a training run."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise Kd2EdgeError(f"{flag} {p} is an existing file, not a folder; choose another {flag}")
    parent = p
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise Kd2EdgeError(f"{flag} {p} lies under {parent}, which is a file; choose another {flag}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise Kd2EdgeError(f"{flag} {p}: cannot write in {parent} (permission denied); choose another {flag}")
    return p


def write_text(path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, default=jsonable) + "\n")


def jsonable(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def read_yaml_mapping(path, hint: str = "") -> dict:
    """A YAML file holding a mapping; a missing file, bad YAML or another type is a one-line error."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise Kd2EdgeError(f"config file {p} not found{hint}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise Kd2EdgeError(f"config file {p} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except yaml.YAMLError as e:
        raise Kd2EdgeError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise Kd2EdgeError(f"config file {p} must hold a mapping of keys, got {type(data).__name__}")
    return data


def parse_assignment(assignment: str) -> tuple[str, object]:
    """`key=value` (as `--set` takes it) -> (key, value parsed as YAML)."""
    import yaml

    if "=" not in assignment:
        raise Kd2EdgeError(f"--set expects key=value (e.g. epochs=3), got {assignment!r}")
    key, value = assignment.split("=", 1)
    return key.strip(), yaml.safe_load(value)
