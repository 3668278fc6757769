"""LiteRT (ai-edge-litert; tflite-runtime as a limited fallback): the XNNPACK CPU interpreter."""
from __future__ import annotations

import numpy as np

from kd2edge import Kd2EdgeError
from kd2edge.runtimes import Session, default_threads, not_installed

TFLITE_RUNTIME_NOTE = (
    "tflite-runtime fallback: its last release (2.14) needs numpy<2, cannot load newer op versions "
    "(e.g. FULLY_CONNECTED v12), runs int8 7-11x slower than LiteRT and has returned wrong values for some "
    "quantized outputs; install ai-edge-litert for comparable numbers")


def interpreter_class():
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
        raise not_installed("ai-edge-litert") from None  # tflite-runtime: a fallback, never what we suggest


def available() -> None:  # runtimes.check_available
    interpreter_class()


def installed() -> tuple[str, str]:  # runtimes.check_min_runtime: the package that would run the model
    return tuple(interpreter_class()[1:3])


def _quant(details: dict):
    scale, zero_point = details.get("quantization", (0.0, 0))
    return (float(scale), int(zero_point)) if scale else None


def load(path, threads: int | None = None) -> Session:
    Interpreter, package, version, notes = interpreter_class()
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
