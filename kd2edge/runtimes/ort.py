"""onnxruntime: CPU provider, sequential execution, all graph optimizations."""
from __future__ import annotations

import numpy as np

from kd2edge import Kd2EdgeError, require
from kd2edge.runtimes import Session, default_threads

ORT_TYPES = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8,
             "tensor(float16)": np.float16}


def load(path, threads: int | None = None) -> Session:
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
