"""The int8 teacher: a PyTorch teacher exported to ONNX and quantized with onnxruntime (static QDQ, uint8
activations per tensor, int8 weights per channel, MinMax on CALIB_IMAGES training images), then run by
onnxruntime. The fastest teacher pass measured on a CPU here: resnet56 on 2 AMD EPYC cores ran 2,038
forwards/s against 1,146 for the bf16 PyTorch teacher and 531 for fp32, at 93.35% top-1 (fp32 93.39%) and
99.34% top-1 agreement with fp32 on the 10,000 CIFAR-10 test images (benchmarks/teacher_pass.py).
uint8 activations, not the int8 of `kd2edge export`: onnxruntime's x86 kernels multiply u8 x s8 (VNNI/AVX2).
An x86 CPU without VNNI sums u8 x s8 pairs in 16 bits, which can saturate: there the weights take 7 bits
(onnxruntime's `reduce_range`, its documented remedy): on an AVX2-only EPYC that cost 0.05 point of top-1 (93.34%)
and ran 3.0x the fp32 teacher, so `teacher_precision auto` picks int8 there too.

The quantized file is built once per (teacher, calibration images, toolchain) under
`<cache>/teacher_int8/<key>/` (model.onnx, meta.json with its sha256, the converters' build.log; written to a
temp folder and renamed) and verified by checksum whenever it is read. Its cache_spec carries the file's sha256,
so teacher logits cached from it never mix with the fp32/bf16 teacher's.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from kd2edge import Kd2EdgeError
from kd2edge.distill.teacher import EnsembleTeacher, Teacher, TorchTeacher
from kd2edge.locations import location
from kd2edge.runtimes.ort import saturation_free  # (tests patch it here)

CALIB_IMAGES = 512
CALIB_SEED = 20240102
SCHEME = "onnxruntime static QDQ: uint8 activations (per tensor, MinMax), int8 weights (per channel)"


def unsupported(teacher) -> str | None:
    """Why `teacher` cannot run as int8 here, or None."""
    import importlib.util

    if not all(importlib.util.find_spec(m) for m in ("onnxruntime", "onnx", "onnxsim")):  # found, not imported
        return "onnxruntime, onnx or onnxsim is not installed (pip install 'kd2edge[export]')"
    members = teacher.members if isinstance(teacher, EnsembleTeacher) else [teacher]
    for m in members:
        if not isinstance(m, TorchTeacher) or hasattr(m.model, "code"):
            return f"the teacher {m.info.get('path')} is not a PyTorch module (TorchScript / ONNX)"
        if m.head is not None:
            return "a teacher adapted by a linear probe runs in PyTorch"
    return None


def to_int8(teacher, x_train: np.ndarray, cache_dir=None, threads: int | None = None, log=print):
    """The int8 version of `teacher` (a TorchTeacher, or an ensemble of them: every member quantized)."""
    why = unsupported(teacher)
    if why:
        raise Kd2EdgeError(f"teacher_precision int8: {why}; use --set teacher_precision=bf16 (or fp32)")
    if isinstance(teacher, EnsembleTeacher):
        return EnsembleTeacher([to_int8(m, x_train, cache_dir, threads, log) for m in teacher.members])
    rng = np.random.default_rng(CALIB_SEED)
    calib = x_train[np.sort(rng.choice(len(x_train), min(CALIB_IMAGES, len(x_train)), replace=False))]
    return Int8Teacher(teacher, *build(teacher, calib, cache_dir, log), threads)


def _toolchain() -> dict:
    from importlib.metadata import version

    import onnxruntime  # (its session runs the teacher anyway)

    return {"torch": torch.__version__, "onnx": version("onnx"), "onnxruntime": onnxruntime.__version__}


def _verified(folder: Path, spec: dict) -> str | None:
    """The sha256 of folder/model.onnx when meta.json records this spec and that checksum, else None."""
    from kd2edge.files import sha256

    try:
        meta = json.loads((folder / "meta.json").read_text())
        digest = sha256(folder / "model.onnx")
    except (OSError, ValueError):
        return None
    return digest if isinstance(meta, dict) and meta.get("spec") == spec and meta.get("sha256") == digest else None


def build(teacher: TorchTeacher, calib: np.ndarray, cache_dir=None, log=print) -> tuple[Path, str]:
    """model.onnx of the quantized teacher and its sha256: built once, found again by its key, checksum verified."""
    from kd2edge.files import sha256

    reduce_range = not saturation_free()
    spec = {"teacher": {**teacher.cache_spec, "precision": "fp32"}, "scheme": SCHEME, "reduce_range": reduce_range,
            "calib_sha256": hashlib.sha256(np.ascontiguousarray(calib).tobytes()).hexdigest(), **_toolchain()}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]
    folder = Path(cache_dir or location("cache")) / "teacher_int8" / key
    if folder.exists():
        digest = _verified(folder, spec)
        if digest:
            return folder / "model.onnx", digest
        log(f"warning: int8 teacher {folder} is damaged or incomplete; rebuilding it")
        shutil.rmtree(folder, ignore_errors=True)
    from kd2edge.capture import captured
    from kd2edge.onnx_graph import export_graph, quantize_graph

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{key}."))
    try:
        with captured(tmp / "build.log"):  # the converters' warnings go to the log, not the terminal
            x = teacher._input(torch.from_numpy(calib[:2])).contiguous()
            export_graph(teacher.model, x, tmp / "fp32.onnx", on_error=lambda e, exported=None: Kd2EdgeError(
                f"the teacher cannot be exported to ONNX for int8 ({str(e).strip().splitlines()[0][:200]}); use "
                "--teacher-precision bf16 (or fp32)"))
            with torch.no_grad():
                xs = np.concatenate([teacher._input(torch.from_numpy(calib[i:i + 64])).contiguous().numpy()
                                     for i in range(0, len(calib), 64)])
            quantize_graph(tmp / "fp32.onnx", tmp / "model.onnx", xs, activations="uint8", reduce_range=reduce_range)
        (tmp / "fp32.onnx").unlink()
        digest = sha256(tmp / "model.onnx")
        (tmp / "meta.json").write_text(json.dumps({"spec": spec, "sha256": digest}, indent=2))
        try:
            os.replace(tmp, folder)
        except OSError:  # another run built it first: use (and verify) theirs
            shutil.rmtree(tmp, ignore_errors=True)
            return build(teacher, calib, cache_dir, log)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"int8 teacher built: {folder}")
    return folder / "model.onnx", digest


class Int8Teacher(Teacher):
    """A TorchTeacher's quantized ONNX graph, fed the same normalized input, run by onnxruntime."""
    torch_threads = False  # the session's thread count is set when it is built

    def __init__(self, base: TorchTeacher, path: Path, onnx_sha256: str, threads: int | None = None):
        from kd2edge.runtimes import load_session

        self.base, self.path = base, Path(path)
        self.session = load_session("onnxruntime", self.path, threads or os.cpu_count() or 1)
        self.model, self.info, self.num_classes = base.model, base.info, base.num_classes  # (MACs, params, report)
        self.sha256, self.source, self.head, self.bf16 = base.sha256, base.source, None, False
        self.contract, self.contract_line = base.contract, base.contract_line
        self.onnx_sha256 = onnx_sha256  # verified by build()

    @property
    def cache_spec(self) -> dict:
        return {**self.base.cache_spec, "precision": "int8", "int8_onnx_sha256": self.onnx_sha256}

    def logits(self, x_uint8: torch.Tensor) -> torch.Tensor:
        x = self.base._input(x_uint8).contiguous().numpy()
        return torch.from_numpy(np.asarray(self.session.run(x), dtype=np.float32))

    def penultimate(self, x_uint8):
        raise Kd2EdgeError("the int8 teacher gives logits only; cross-dataset adaptation and feature methods need "
                           "teacher_precision bf16 or fp32")
