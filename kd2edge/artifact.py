"""The artifact folder (docs/CONTRACTS.md): the one module that reads and writes it. No torch.

    exports/<name>-<target>[-<precision>]/
        model.onnx | model.tflite | model.mlpackage/     the model file, named in meta.json
        meta.json                                         what it is, how it was made and checked
        eval.npz                                          x, y, student_logits[, teacher_logits], classes

`kd2edge export` builds each folder with `build_folder` (beside its destination) and installs them together with
`install_folder` (an atomic exchange with the old folder where the OS has one);
`kd2edge bench` reads it with `read_folder` and runs it with `open_session`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from kd2edge import Kd2EdgeError
from kd2edge.files import jsonable, sha256

FORMAT = "kd2edge.artifact"
FORMAT_VERSION = 1
META_KEYS = ("format", "target", "runtime", "model_file", "precision", "input", "output")
# Every target and the runtime that runs it.
TARGET_RUNTIME = {"onnx": "onnxruntime", "tflite": "litert", "coreml": "coreml"}
# Layers an int8 export can keep in float (`kd2edge export --int8 --keep-float NAME`, meta.json
# quantization.float_layers): the CLI choices.
KEEP_FLOAT = {"first": "the input normalization and the student's first convolution",
              "last": "the student's last weight layer (the classifier)"}
# How int8 PTQ rounds the weights (`kd2edge export --int8 --rounding NAME`, meta.json quantization.rounding):
# the CLI choices; kd2edge.export.rounding implements them.
ROUNDINGS = {"nearest": "round to nearest (the converters' PTQ)",
             "adaround": "learned up/down rounding per weight against the float student's layer outputs"}


def folder_name(name: str, target: str, precision: str) -> str:
    """`<name>-<target>`, with `-<precision>` for anything but fp32."""
    return f"{name}-{target}" + ("" if precision == "fp32" else f"-{precision}")


def model_size(path) -> int:
    """Bytes of a model file, or of every file in a model folder (.mlpackage)."""
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def content_sha256(path) -> str:
    """sha256 of a model file, or of a model folder (.mlpackage: every file's relative path and bytes)."""
    path = Path(path)
    if not path.is_dir():
        return sha256(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode() + b"\0" + sha256(f).encode())
    return h.hexdigest()


def verify_checksums(d: Path, meta: dict, model_path: Path, eval_path: Path) -> str | None:
    """Compare the model file and eval.npz with the sha256 meta.json records; a note for older folders."""
    recorded = meta.get("sha256")
    if not isinstance(recorded, dict):
        return "older artifact format: meta.json records no sha256, files not verified (re-export to add them)"
    for key, path in (("model", model_path), ("eval", eval_path)):
        if key in recorded and path.exists() and content_sha256(path) != recorded[key]:
            raise Kd2EdgeError(f"{path} does not match the sha256 recorded in {d / 'meta.json'} (damaged, edited, "
                               "or from another export); re-export the folder, or pass --no-verify if you changed "
                               "it on purpose")
    return None


def read_folder(folder, verify: bool = True) -> dict:
    """Read and check an artifact folder: {dir, name, meta, model_path, eval_path (None if absent), note}.
    `verify`: compare the files with the sha256 in meta.json (older folders without them get a note)."""
    d = Path(folder).expanduser()
    if not d.is_dir():
        raise Kd2EdgeError(f"artifact folder not found: {d} (make one with `kd2edge export`)")
    meta_path = d / "meta.json"
    if not meta_path.is_file():
        raise Kd2EdgeError(f"{d} has no meta.json: an artifact folder needs meta.json, the model file and eval.npz "
                           "(see docs/CONTRACTS.md); re-create it with `kd2edge export`")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise Kd2EdgeError(f"{meta_path} is not valid JSON ({e}); re-create it with `kd2edge export`") from None
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise Kd2EdgeError(f"{meta_path} lacks {', '.join(missing)} (see docs/CONTRACTS.md); re-export the folder")
    if meta["format"] != FORMAT:
        raise Kd2EdgeError(f"{meta_path}: format is {meta['format']!r}, expected {FORMAT!r}")
    if meta["runtime"] != TARGET_RUNTIME.get(meta["target"], meta["runtime"]):
        raise Kd2EdgeError(f"{meta_path}: target {meta['target']} does not run on runtime {meta['runtime']}")
    model_path = d / str(meta["model_file"])
    if d.resolve() not in model_path.resolve().parents:
        raise Kd2EdgeError(f"{meta_path}: model_file {meta['model_file']!r} leaves the artifact folder; the model "
                           "file must lie inside it (re-export the folder)")
    if not model_path.exists():
        raise Kd2EdgeError(f"{d}: meta.json names model file {meta['model_file']} but it is missing; "
                           "copy the whole folder, or re-export it")
    eval_path = d / "eval.npz"
    note = verify_checksums(d, meta, model_path, eval_path) if verify else None
    return {"dir": d, "name": meta.get("name") or d.name, "meta": meta, "model_path": model_path,
            "eval_path": eval_path if eval_path.is_file() else None, "note": note}


def read_eval(path) -> dict:
    """The eval bundle as {name: array}; x and y are required."""
    try:
        z = np.load(path, allow_pickle=False)
        out = {k: z[k] for k in z.files}
    except Exception as e:
        raise Kd2EdgeError(f"cannot read eval bundle {path}: {e}; re-export the artifact") from None
    for k in ("x", "y"):
        if k not in out:
            raise Kd2EdgeError(f"{path} lacks array {k!r} (expected x, y, student_logits[, teacher_logits])")
    return out


def open_session(artifact: dict, threads: int | None = None):
    """A runtime session of a `read_folder` result, with the folder's layout and int8 parameters."""
    from kd2edge.runtimes import load_session

    return load_session(artifact["meta"]["runtime"], artifact["model_path"], threads, artifact["meta"])


def build_folder(dest: Path, build) -> Path | None:
    """Build an artifact folder in a private temporary folder beside `dest` (`build(tmp)` writes the model
    file and calls `write_files`); returns it for `install_folder`, or None (nothing left behind) when `build`
    returns False. Leftovers of killed exports (their process is gone) are removed first."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(dest.parent)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-{os.getpid()}-"))
    try:
        if build(tmp) is False:
            shutil.rmtree(tmp, ignore_errors=True)
            return None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.chmod(tmp, 0o755)
    return tmp


def install_folder(tmp: Path, dest: Path) -> None:
    """Put the built folder `tmp` at `dest`: one atomic exchange with an old folder where the OS has it
    (Linux renameat2), so `dest` never goes missing; else the old folder stays until the new is beside it."""
    if dest.exists() and exchange(tmp, dest):
        shutil.rmtree(tmp, ignore_errors=True)  # now holds the old folder
        return
    if dest.exists():
        old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old-{os.getpid()}-"))
        os.replace(dest, old / dest.name)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)


def write_folder(dest: Path, build) -> bool:
    """`build_folder` then `install_folder`; returns whether the folder was installed."""
    tmp = build_folder(dest, build)
    if tmp is not None:
        install_folder(tmp, dest)
    return tmp is not None


def remove_stale(parent: Path) -> None:
    """Remove `.<name>.tmp-<pid>-*` / `.<name>.old-<pid>-*` folders of processes that no longer run."""
    for p in parent.glob(".*.[to][ml][pd]-*-*"):
        pid = p.name.rsplit(".", 1)[-1].split("-")[1]
        if p.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def write_files(folder: Path, meta: dict, bundle: dict) -> None:
    """eval.npz and meta.json (with the sha256 of the model file and eval.npz) into a (still private) artifact
    folder: plain writes, the rename publishes them."""
    np.savez(folder / "eval.npz", **bundle)
    meta = {**meta, "sha256": {"model": content_sha256(folder / meta["model_file"]),
                               "eval": sha256(folder / "eval.npz")}}
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, default=jsonable) + "\n")


def read_meta(folder) -> dict | None:
    """meta.json of a folder, or None when there is none (e.g. not exported yet)."""
    path = Path(folder) / "meta.json"
    return json.loads(path.read_text()) if path.exists() else None
