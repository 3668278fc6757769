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

SATURATION_NOTE = ("int8 weights span 8 bits and this x86 CPU {lacks} VNNI: onnxruntime's u8 x s8 kernels sum pairs "
                   "in 16 bits here and can saturate, so drift and accuracy may be worse than where it was exported; "
                   "for this CPU, export on it (`kd2edge export -t onnx --int8` takes 7-bit weights where needed)")


def installed() -> tuple[str, str]:  # runtimes.check_min_runtime (onnxruntime-gpu etc. import as onnxruntime too)
    return "onnxruntime", _ort().__version__


def cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            return {w for line in f if line.startswith(("flags", "Features")) for w in line.split(":", 1)[1].split()}
    except OSError:
        return set()


def saturation_free() -> bool:
    """onnxruntime's u8 x s8 kernels accumulate exactly here: x86 with VNNI, or ARM (not x86). Without VNNI, x86
    sums u8 x s8 product pairs in 16 bits (VPMADDUBSW): 8-bit weights can saturate, 7-bit ones cannot."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "avx_vnni_int8", "amx_int8"})


def meta_notes(meta: dict) -> list[str]:
    """What an artifact's meta.json means for running it on this CPU (runtimes.load_session adds it to the notes)."""
    q = meta.get("quantization") or {}
    if meta.get("precision") == "int8" and not q.get("reduce_range") and not saturation_free():
        return [SATURATION_NOTE.format(lacks="lacks" if cpu_flags() else "may lack (its flags are unreadable)")]
    return []


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
