"""On-device runtimes in a dict registry: `RUNTIMES[name](model_path, threads) -> Session`.

Each loader builds the session or interpreter ONCE and returns a `Session` whose `run(x)` takes the model's own
input dtype (already quantized for int8 I/O) and returns its raw output. No torch anywhere in this module.

| runtime      | package (extra `device`)                   | notes |
|--------------|--------------------------------------------|-------|
| onnxruntime  | onnxruntime                                | CPU provider, sequential, all graph optimizations |
| litert       | ai-edge-litert, else tflite-runtime        | XNNPACK CPU; tflite-runtime is a limited fallback |
| coreml       | coremltools (macOS only)                   | Core ML prediction exists only on macOS |
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from kd2edge import Kd2EdgeError, require

TFLITE_RUNTIME_NOTE = (
    "tflite-runtime fallback: its last release (2.14) needs numpy<2, cannot load newer op versions "
    "(e.g. FULLY_CONNECTED v12), runs int8 7-11x slower than LiteRT and has returned wrong values for some "
    "quantized outputs; install ai-edge-litert for comparable numbers")


class RuntimeUnavailable(Kd2EdgeError):
    """The runtime cannot exist on this platform (CoreML off macOS): other artifacts can still be benched."""


@dataclass
class Session:
    runtime: str
    version: str
    threads: int | None
    input_name: str
    input_shape: list  # as the runtime reports it; None/-1 = dynamic
    input_dtype: np.dtype
    output_name: str
    output_dtype: np.dtype
    run: Callable[[np.ndarray], np.ndarray]
    resize: Callable[[int], None] = lambda batch: None  # set the batch size (no-op where shapes are dynamic)
    input_quant: tuple | None = None  # (scale, zero_point) reported by the model itself, when it has one
    output_quant: tuple | None = None
    notes: list = field(default_factory=list)
    fixed_batch: int | None = None  # the only batch size a static-shape model accepts


def default_threads(threads: int | None) -> int:
    return int(threads) if threads else (os.cpu_count() or 1)


ORT_TYPES = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8,
             "tensor(float16)": np.float16}


def load_onnxruntime(path, threads: int | None = None) -> Session:
    ort = require("onnxruntime", "device")
    threads = default_threads(threads)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise Kd2EdgeError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0]} "
                           "(re-export it with `kd2edge export`)") from None
    i, o = sess.get_inputs()[0], sess.get_outputs()[0]
    if i.type not in ORT_TYPES:
        raise Kd2EdgeError(f"{path}: unsupported input type {i.type}; expected float32, uint8 or int8")
    in_name, out_name = i.name, o.name

    def run(x):
        return sess.run([out_name], {in_name: x})[0]

    fixed = i.shape[0] if isinstance(i.shape[0], int) else None
    return Session("onnxruntime", ort.__version__, threads, in_name,
                   [d if isinstance(d, int) else None for d in i.shape], np.dtype(ORT_TYPES[i.type]),
                   out_name, np.dtype(ORT_TYPES.get(o.type, np.float32)), run, fixed_batch=fixed)


def _tflite_interpreter():
    """(Interpreter class, package, version, notes): ai-edge-litert first, tflite-runtime as the fallback."""
    from importlib import metadata

    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert", metadata.version("ai-edge-litert"), []
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite-runtime", metadata.version("tflite-runtime"), [TFLITE_RUNTIME_NOTE]
    except ImportError:
        raise Kd2EdgeError("no TFLite interpreter installed: pip install ai-edge-litert (or 'kd2edge[device]'); "
                           "tflite-runtime works as a limited fallback on platforms without ai-edge-litert "
                           "wheels (32-bit Arm)") from None


def _quant(details: dict):
    scale, zero_point = details.get("quantization", (0.0, 0))
    return (float(scale), int(zero_point)) if scale else None


def load_litert(path, threads: int | None = None) -> Session:
    Interpreter, package, version, notes = _tflite_interpreter()
    threads = default_threads(threads)
    try:
        interp = Interpreter(model_path=str(path), num_threads=threads)
        interp.allocate_tensors()
    except Exception as e:
        raise Kd2EdgeError(f"{package} cannot load {path}: {str(e).splitlines()[0] if str(e) else e!r}"
                           + (f" ({notes[0]})" if notes else "")) from None
    i, o = interp.get_input_details()[0], interp.get_output_details()[0]
    i_idx, o_idx = i["index"], o["index"]
    signature = list(i.get("shape_signature", i["shape"]))
    fixed = None if signature[0] == -1 else int(i["shape"][0])
    state = {"batch": int(i["shape"][0])}

    def run(x):
        interp.set_tensor(i_idx, x)
        interp.invoke()
        return interp.get_tensor(o_idx)

    def resize(batch: int):
        if batch == state["batch"]:
            return
        if fixed is not None:  # resizing a static-batch model runs, but can silently return wrong logits
            raise Kd2EdgeError(f"{path} has a fixed batch of {fixed}; bench it with --batch {fixed}, or export it "
                               "with a dynamic batch axis")
        try:
            interp.resize_tensor_input(i_idx, [batch, *i["shape"][1:]], strict=False)
            interp.allocate_tensors()
        except Exception as e:
            raise Kd2EdgeError(f"{path}: cannot resize the input to batch {batch}: {e}") from None
        state["batch"] = batch

    return Session("litert", f"{package} {version}", threads, i["name"],
                   [None if d < 0 else int(d) for d in signature], np.dtype(i["dtype"]), o["name"],
                   np.dtype(o["dtype"]), run, resize, _quant(i), _quant(o), notes, fixed)


def load_coreml(path, threads: int | None = None) -> Session:
    if sys.platform != "darwin":
        raise RuntimeUnavailable(f"CoreML artifacts run only on macOS (Core ML prediction is not available on "
                           f"{sys.platform}): copy {path} to a Mac and run `kd2edge bench` there, or bench this "
                           "folder's onnx/tflite siblings here")
    ct = require("coremltools", "device")
    try:
        model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.ALL)
    except Exception as e:
        raise Kd2EdgeError(f"coremltools cannot load {path}: {e}") from None
    spec = model.get_spec()
    i, o = spec.description.input[0], spec.description.output[0]
    dtypes = {65568: np.float32, 65552: np.float16, 131104: np.int32}
    in_dtype = np.dtype(dtypes.get(i.type.multiArrayType.dataType, np.float32))
    in_name, out_name = i.name, o.name

    def run(x):
        return np.asarray(model.predict({in_name: x})[out_name])

    return Session("coreml", ct.__version__, None, in_name, [None, *list(i.type.multiArrayType.shape)[1:]],
                   in_dtype, out_name, np.dtype(np.float32), run,
                   notes=["Core ML chooses its own threads and compute units (CPU/GPU/ANE); --threads is ignored"])


RUNTIMES = {"onnxruntime": load_onnxruntime, "litert": load_litert, "coreml": load_coreml}
# Artifact targets and the runtime that runs each.
TARGET_RUNTIME = {"onnx": "onnxruntime", "tflite": "litert", "coreml": "coreml"}


def load_session(runtime: str, path, threads: int | None = None) -> Session:
    if runtime not in RUNTIMES:
        raise Kd2EdgeError(f"unknown runtime {runtime!r} in the artifact metadata; valid: {', '.join(RUNTIMES)}")
    return RUNTIMES[runtime](path, threads)
