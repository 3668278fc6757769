"""onnxruntime: CPU provider, sequential execution, all graph optimizations."""
from __future__ import annotations

import numpy as np

from kd2edge import Kd2EdgeError
from kd2edge.runtimes import Session, default_threads, not_installed

ORT_TYPES = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8,
             "tensor(float16)": np.float16}


def _ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise not_installed("onnxruntime", e) from None
    return onnxruntime


available = _ort  # runtimes.check_available


def installed() -> tuple[str, str]:  # runtimes.check_min_runtime (onnxruntime-gpu etc. import as onnxruntime too)
    return "onnxruntime", _ort().__version__


def _session(ort, path, threads: int, profile_prefix: str | None = None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise Kd2EdgeError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0]} "
                           "(re-export it with `kd2edge export`)") from None


def profile_trace(path, threads: int | None, x, runs: int, folder) -> list[dict]:
    """onnxruntime's own session profiling (SessionOptions.enable_profiling) over `runs` calls on `x`, in a
    session of its own (profiling slows every node, so the timed session never profiles): the JSON trace
    events (Chrome trace format; `cat` "Node" events carry `dur` in us and `args.op_name`)."""
    import json
    import os

    ort = _ort()
    sess = _session(ort, path, default_threads(threads), profile_prefix=os.path.join(str(folder), "ort-profile"))
    name = sess.get_inputs()[0].name
    for _ in range(runs):
        sess.run(None, {name: x})
    trace = sess.end_profiling()
    try:
        return json.loads(open(trace).read())
    finally:
        os.remove(trace)


def load(path, threads: int | None = None) -> Session:
    ort = _ort()
    threads = default_threads(threads)
    sess = _session(ort, path, threads)
    i, o = sess.get_inputs()[0], sess.get_outputs()[0]
    if i.type not in ORT_TYPES:
        raise Kd2EdgeError(f"{path}: unsupported input type {i.type}; expected float32, uint8 or int8")
    in_name, out_name = i.name, o.name

    def run(x):
        return sess.run([out_name], {in_name: x})[0]

    fixed = i.shape[0] if isinstance(i.shape[0], int) else None
    try:
        metadata = dict(sess.get_modelmeta().custom_metadata_map)
    except Exception:
        metadata = {}
    return Session("onnxruntime", ort.__version__, threads, in_name,
                   [d if isinstance(d, int) else None for d in i.shape], np.dtype(ORT_TYPES[i.type]),
                   out_name, np.dtype(ORT_TYPES.get(o.type, np.float32)), run, fixed_batch=fixed,
                   metadata=metadata)
