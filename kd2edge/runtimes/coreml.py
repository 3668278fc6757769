"""Core ML through coremltools: prediction exists only on macOS (elsewhere `RuntimeUnavailable`)."""
from __future__ import annotations

import sys

import numpy as np

from kd2edge import Kd2EdgeError, require
from kd2edge.runtimes import RuntimeUnavailable, Session

DTYPES = {65568: np.float32, 65552: np.float16, 131104: np.int32}  # ArrayFeatureType values


def installed() -> tuple[str, str] | None:  # runtimes.check_min_runtime: Core ML comes with the OS
    import platform

    return ("macOS", platform.mac_ver()[0]) if sys.platform == "darwin" else None


def load(path, threads: int | None = None) -> Session:
    if sys.platform != "darwin":
        raise RuntimeUnavailable(f"CoreML artifacts run only on macOS (Core ML prediction is not available on "
                                 f"{sys.platform}): copy {path} to a Mac and run `kd2edge bench` there, or bench "
                                 "this folder's onnx/tflite siblings here")
    ct = require("coremltools", "device")
    try:
        model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.ALL)
    except Exception as e:
        raise Kd2EdgeError(f"coremltools cannot load {path}: {e}") from None
    spec = model.get_spec()
    i, o = spec.description.input[0], spec.description.output[0]
    shape = [int(d) for d in i.type.multiArrayType.shape]
    in_name, out_name = i.name, o.name

    def run(x):
        return np.asarray(model.predict({in_name: x})[out_name])

    return Session("coreml", ct.__version__, None, in_name, [None, *shape[1:]],
                   np.dtype(DTYPES.get(i.type.multiArrayType.dataType, np.float32)), out_name, np.dtype(np.float32),
                   run, fixed_batch=shape[0] if shape else None,
                   notes=["Core ML chooses its own threads and compute units (CPU/GPU/ANE); --threads is ignored"])
