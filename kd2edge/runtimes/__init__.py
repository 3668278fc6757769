"""On-device runtimes: one `Session` per runtime, built once from a model file. No torch anywhere here.

    session = load_session("litert", "exports/student-tflite-int8/model.tflite", threads=1, meta=meta)
    logits = session.predict(x_uint8_nhwc)         # raw pixels 0..255 in, float32 logits out

Export verification and `kd2edge bench` both run artifacts through `predict`, so what export checked is
what the device runs. `prepare` (layout, dtype, int8 input quantization) and `logits` (int8 output
dequantization) are the one place artifact I/O is converted; `run` is the bare runtime call that bench times.

| runtime      | module                       | package (extra `device`)              |
|--------------|------------------------------|---------------------------------------|
| onnxruntime  | kd2edge.runtimes.ort         | onnxruntime                           |
| litert       | kd2edge.runtimes.litert      | ai-edge-litert, else tflite-runtime   |
| coreml       | kd2edge.runtimes.coreml      | coremltools (prediction on macOS only) |

A runtime module has one function, `load(path, threads) -> Session`, and optionally `available()` (raise the
not-installed error now) and `installed() -> (package, version) | None` (what `min_runtime` is checked against).
"""
from __future__ import annotations

import importlib
import os
import platform
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from kd2edge import Kd2EdgeError

RUNTIMES = {
    "onnxruntime": "kd2edge.runtimes.ort",
    "litert": "kd2edge.runtimes.litert",
    "coreml": "kd2edge.runtimes.coreml",
}
EVAL_BATCH = 100  # images per predict call where the model takes any batch


class RuntimeUnavailable(Kd2EdgeError):
    """The runtime cannot exist on this platform (CoreML off macOS): other artifacts can still be run."""


ARM32 = {"armv6l", "armv7l", "armv8l", "arm"}  # 32-bit Arm userlands (older Raspberry Pi OS)


def not_installed(package: str, error=None) -> Kd2EdgeError:
    """The one-line error for a runtime package that cannot be imported. On 32-bit Arm PyPI has no wheel of
    onnxruntime or ai-edge-litert (nor tflite-runtime for Python 3.11+), so the fix is a 64-bit OS."""
    machine = platform.machine()
    if machine.lower() in ARM32:
        return RuntimeUnavailable(
            f"{package} cannot be installed on 32-bit Arm ({machine}, Python {platform.python_version()}): PyPI "
            f"has no {package} wheel for it; fix: install a 64-bit OS (e.g. Raspberry Pi OS 64-bit, aarch64), "
            "then pip install 'kd2edge[device]'" + (" (on this Python 3.10, pip install 'kd2edge[device]' also "
            "brings tflite-runtime 2.13, a limited fallback for .tflite)" if package == "ai-edge-litert"
            and platform.python_version_tuple()[:2] == ("3", "10") else ""))
    why = f" ({error})" if error else ""
    return Kd2EdgeError(f"{package} is not installed{why}; install it with: pip install {package} "
                        "(or pip install 'kd2edge[device]')")


@dataclass
class Session:
    runtime: str
    version: str
    threads: int | None
    input_name: str
    input_shape: list  # as the runtime reports it; None = dynamic
    input_dtype: np.dtype
    output_name: str
    output_dtype: np.dtype
    run: Callable[[np.ndarray], np.ndarray]  # model-ready input -> raw output (what bench times)
    resize: Callable[[int], None] = lambda batch: None  # set the batch size (no-op where shapes are dynamic)
    input_quant: tuple | None = None  # (scale, zero_point) of int8 I/O
    output_quant: tuple | None = None
    notes: list = field(default_factory=list)
    fixed_batch: int | None = None  # the only batch size a static-shape model accepts
    layout: str = "NHWC"  # of the model input
    name: str = ""  # for error messages
    metadata: dict = field(default_factory=dict)  # the model file's own key/value metadata (ONNX metadata_props)

    def prepare(self, x_nhwc: np.ndarray) -> np.ndarray:
        """Raw 0..255 NHWC pixels -> the model's layout and dtype (quantized for int8 input)."""
        x = x_nhwc if self.layout == "NHWC" else x_nhwc.transpose(0, 3, 1, 2)
        dtype = self.input_dtype
        if dtype.kind == "f":
            return np.ascontiguousarray(x, dtype=dtype)
        if self.input_quant:
            scale, zero_point = self.input_quant
            info = np.iinfo(dtype)
            q = np.round(x.astype(np.float32) / scale) + zero_point
            return np.ascontiguousarray(np.clip(q, info.min, info.max).astype(dtype))
        if dtype == np.uint8:
            return np.ascontiguousarray(x, dtype=np.uint8)
        raise Kd2EdgeError(f"{self.name}: {dtype} input without quantization parameters in meta.json or model")

    def logits(self, out: np.ndarray) -> np.ndarray:
        """Raw model output -> float32 logits (dequantized for int8 output: real = scale * (q - zero_point))."""
        out = np.asarray(out)
        if out.dtype.kind in "iu" and self.output_quant:
            scale, zero_point = self.output_quant
            return (out.astype(np.float32) - zero_point) * scale
        return out.astype(np.float32)

    def predict(self, x_nhwc: np.ndarray, task=None) -> np.ndarray:
        """Logits for all images, EVAL_BATCH at a time (or the model's fixed batch, padding the last one).
        `task`: a progress task (kd2edge.progress) advanced after each batch."""
        n = len(x_nhwc)
        batch = self.fixed_batch or min(EVAL_BATCH, n)
        outs = []
        for i in range(0, n, batch):
            chunk = self.prepare(x_nhwc[i:i + batch])
            size = len(chunk)
            if self.fixed_batch and size < batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - size, axis=0)])
            self.resize(len(chunk))
            outs.append(self.logits(self.run(chunk)).reshape(len(chunk), -1)[:size])
            if task:
                task.advance(size)
        return np.concatenate(outs)


def check_available(runtime: str, meta: dict | None = None) -> None:
    """Raise the runtime's one-line error now when its package cannot be imported (a module's optional
    `available()`) or, with an artifact's `meta`, is older than its `min_runtime`, so a bench fails before any
    measurement rather than halfway."""
    if runtime in RUNTIMES:
        check = getattr(importlib.import_module(RUNTIMES[runtime]), "available", None)
        if check:
            check()
        check_min_runtime(runtime, meta)


OS_PACKAGES = ("macOS", "iOS")  # min_runtime keys that are operating systems, not pip packages


def version_tuple(version) -> tuple:
    """'1.18.1' -> (1, 18, 1); the leading dotted numbers only ('2.3.0rc1' and '1.18.0+cu118' -> 3 numbers);
    () when there are none."""
    m = re.match(r"\d+(\.\d+)*", str(version).strip())
    return tuple(int(x) for x in m.group().split(".")) if m else ()


def older(version, than) -> bool:
    """Whether `version` is older than `than` (missing parts count as 0: '1.18' == '1.18.0')."""
    a, b = version_tuple(version), version_tuple(than)
    n = max(len(a), len(b))
    return a + (0,) * (n - len(a)) < b + (0,) * (n - len(b))


def check_min_runtime(runtime: str, meta: dict | None, name: str | None = None) -> None:
    """One-line error when this device's package for `runtime` (its module's `installed()`) is older than the
    artifact's meta.json `min_runtime` ({package: oldest version that loads it}). Folders written before the key
    existed, and packages it does not name, are not checked."""
    needed = (meta or {}).get("min_runtime")
    if not needed or runtime not in RUNTIMES:
        return
    name = name or meta.get("name") or "artifact"
    if not isinstance(needed, dict) or not all(version_tuple(v) for v in needed.values()):
        raise Kd2EdgeError(f"{name}: meta.json min_runtime must map packages to versions (e.g. "
                           f'{{"onnxruntime": "1.18"}}), got {needed!r}; re-export the folder')
    installed = getattr(importlib.import_module(RUNTIMES[runtime]), "installed", lambda: None)()
    if not installed or installed[0] not in needed or not older(installed[1], needed[installed[0]]):
        return
    package, version = installed
    want = str(needed[package])
    fix = f"update {package} to {want} or later" if package in OS_PACKAGES else f"pip install '{package}>={want}'"
    raise Kd2EdgeError(f"{name} needs {package} >= {want} (meta.json min_runtime), this device has {package} "
                       f"{version}; fix: {fix}")


def default_threads(threads: int | None) -> int:
    return int(threads) if threads else (os.cpu_count() or 1)


def load_session(runtime: str, path, threads: int | None = None, meta: dict | None = None) -> Session:
    """The model file at `path` loaded by `runtime`. With `meta` (an artifact's meta.json, or the same keys
    from the exporter): its `min_runtime` checked first, then its input layout and int8 parameters, checked
    against the model's own."""
    if runtime not in RUNTIMES:
        raise Kd2EdgeError(f"unknown runtime {runtime!r} in the artifact metadata; valid: {', '.join(RUNTIMES)}")
    if meta:
        check_min_runtime(runtime, meta, meta.get("name") or str(path))
    module = importlib.import_module(RUNTIMES[runtime])
    session = module.load(path, threads)
    if meta:
        session.notes += getattr(module, "meta_notes", lambda meta: [])(meta)
        session.name = meta.get("name") or str(path)
        session.layout = (meta.get("input") or {}).get("layout", "NHWC")
        session.input_quant = _quant(meta, "input", session.input_quant, session.name)
        session.output_quant = _quant(meta, "output", session.output_quant, session.name)
    return session


def _quant(meta: dict, which: str, from_model, name: str):
    """(scale, zero_point) for `which`: the metadata's, checked against the model's own."""
    q = (meta.get("quantization") or {}).get(which)
    from_meta = (float(q["scale"]), int(q["zero_point"])) if q else None
    if from_meta and from_model and not (np.isclose(from_meta[0], from_model[0], rtol=1e-5)
                                         and from_meta[1] == from_model[1]):
        raise Kd2EdgeError(f"{name}: meta.json {which} quantization {from_meta} differs from the "
                           f"model's {from_model}; the folder mixes files of two exports, re-export it")
    return from_meta or from_model
