"""The artifact folder (docs/CONTRACTS.md): the one module that reads and writes it. No torch.

    exports/<name>-<target>[-<precision>]/
        model.onnx | model.tflite | model.mlpackage/     the model file, named in meta.json
        meta.json                                         what it is, how it was made and checked
        eval.npz                                          x, y, student_logits[, teacher_logits], classes

`kd2edge export` writes a folder with `write_folder` (built beside its destination, renamed into place);
`kd2edge bench` reads it with `read_folder` and runs it with `open_session`.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from kd2edge import Kd2EdgeError
from kd2edge.files import jsonable

FORMAT = "kd2edge.artifact"
FORMAT_VERSION = 1
META_KEYS = ("format", "target", "runtime", "model_file", "precision", "input", "output")
# Every target and the runtime that runs it.
TARGET_RUNTIME = {"onnx": "onnxruntime", "tflite": "litert", "coreml": "coreml"}


def folder_name(name: str, target: str, precision: str) -> str:
    """`<name>-<target>`, with `-<precision>` for anything but fp32."""
    return f"{name}-{target}" + ("" if precision == "fp32" else f"-{precision}")


def model_size(path) -> int:
    """Bytes of a model file, or of every file in a model folder (.mlpackage)."""
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def read_folder(folder) -> dict:
    """Read and check an artifact folder: {dir, name, meta, model_path, eval_path (None if absent)}."""
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
    model_path = d / meta["model_file"]
    if not model_path.exists():
        raise Kd2EdgeError(f"{d}: meta.json names model file {meta['model_file']} but it is missing; "
                           "copy the whole folder, or re-export it")
    eval_path = d / "eval.npz"
    return {"dir": d, "name": meta.get("name") or d.name, "meta": meta, "model_path": model_path,
            "eval_path": eval_path if eval_path.is_file() else None}


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


def write_folder(dest: Path, build) -> bool:
    """Build an artifact folder in a private temporary folder beside `dest` (`build(tmp)` writes the model
    file and calls `write_files`), then rename it into place. `build` returning False or raising leaves
    nothing behind; returns whether the folder was installed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
    try:
        if build(tmp) is False:
            return False
        os.chmod(tmp, 0o755)
        old = None
        if dest.exists():
            old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old-"))
            os.replace(dest, old / dest.name)
        os.replace(tmp, dest)
        if old:
            shutil.rmtree(old, ignore_errors=True)
        return True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_files(folder: Path, meta: dict, bundle: dict) -> None:
    """meta.json and eval.npz into a (still private) artifact folder: plain writes, the rename publishes them."""
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, default=jsonable) + "\n")
    np.savez(folder / "eval.npz", **bundle)


def read_meta(folder) -> dict | None:
    """meta.json of a folder, or None when there is none (e.g. not exported yet)."""
    path = Path(folder) / "meta.json"
    return json.loads(path.read_text()) if path.exists() else None
