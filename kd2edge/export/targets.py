"""Export targets: a dict from target name to the module that converts and annotates that format.

Every target module has the same small surface (all heavy imports happen inside its functions):

    RUNTIME, MODEL_FILE, LAYOUT      runtime (kd2edge.runtimes) that runs it, model file/folder name, input layout
    PRECISIONS                       every precision it can produce; INT8 = the ones `--int8` adds
    convert(model, preprocessing, path, precision, calib) -> {input, output, quantization, tool_versions}
    embed_metadata(path, meta)       write the metadata into the model file where the format allows
    reference_session(path)          optional: a Session to verify with where its runtime cannot exist here

Verification runs the artifact through the same `kd2edge.runtimes` Session that `kd2edge bench` uses.
"""
from __future__ import annotations

import importlib

from kd2edge import Kd2EdgeError

TARGETS = {
    "onnx": "kd2edge.export.onnx",
    "tflite": "kd2edge.export.tflite",
    "coreml": "kd2edge.export.coreml",
}
ALL = "all"


def get_target(name: str):
    """The module of a target, e.g. get_target('onnx').convert(...)."""
    if name not in TARGETS:
        raise Kd2EdgeError(f"unknown target {name!r}; valid: {', '.join([*TARGETS, ALL])}")
    return importlib.import_module(TARGETS[name])


def expand(targets) -> list[str]:
    """'all' -> every registered target; validates names; keeps order, drops repeats."""
    if isinstance(targets, str):
        targets = [targets]
    names = []
    for t in targets:
        for n in (TARGETS if t == ALL else [t]):
            if n not in TARGETS:
                raise Kd2EdgeError(f"unknown target {n!r}; valid: {', '.join([*TARGETS, ALL])}")
            if n not in names:
                names.append(n)
    if not names:
        raise Kd2EdgeError(f"no target given; valid: {', '.join([*TARGETS, ALL])}")
    return names


def precisions_for(target: str, int8: bool, precisions=None) -> list[str]:
    """fp32 (+ the target's int8 variants with int8=True), or exactly `precisions` when given."""
    mod = get_target(target)
    wanted = list(precisions) if precisions else ["fp32", *(mod.INT8 if int8 else ())]
    bad = [p for p in wanted if p not in mod.PRECISIONS]
    if bad:
        raise Kd2EdgeError(f"target {target} has no precision {', '.join(bad)}; valid: {', '.join(mod.PRECISIONS)}")
    return wanted


def plan(targets="all", int8: bool = False, precisions=None) -> list[tuple[str, str]]:
    """Every (target, precision) to export."""
    return [(t, p) for t in expand(targets) for p in precisions_for(t, int8, precisions)]
