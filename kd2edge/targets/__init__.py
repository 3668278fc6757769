"""Export targets: a dict from target name to the module that converts, runs and annotates that format.

Every target module has the same small surface (all heavy imports happen inside its functions):

    RUNTIME, MODEL_FILE, LAYOUT      runtime name, model file/folder name, input layout of the artifact
    PRECISIONS                       every precision it can produce; INT8 = the ones `--int8` adds
    convert(model, preprocessing, path, precision, calib) -> {input, output, quantization, tool_versions}
    run(path, x_uint8_nhwc, meta) -> (logits float32, check)   check: runtime | numpy-mil
    embed_metadata(path, meta)       write the metadata into the model file where the format allows

`model` is the PyTorch student taking normalized NCHW input; `deployable()` wraps it so the exported
graph takes raw pixels (0..255) and normalizes them itself.
"""
from __future__ import annotations

import importlib
import re

from kd2edge import Kd2EdgeError

TARGETS = {
    "onnx": "kd2edge.targets.onnx",
    "tflite": "kd2edge.targets.tflite",
    "coreml": "kd2edge.targets.coreml",
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


def deployable(model, preprocessing: dict, channels_last: bool = True):
    """The student behind its own normalization: raw pixels (float 0..255, NHWC or NCHW) -> logits."""
    import torch

    mean = torch.tensor(preprocessing["mean"], dtype=torch.float32)
    std = torch.tensor(preprocessing["std"], dtype=torch.float32)

    class RawPixels(torch.nn.Module):
        # (x / 255 - mean) / std as a fixed 1x1 depthwise convolution: litert-torch cannot lower an
        # elementwise multiply by a constant on a dynamic batch axis, and every converter folds a conv.
        def __init__(self):
            super().__init__()
            self.normalize = torch.nn.Conv2d(len(mean), len(mean), 1, groups=len(mean))
            with torch.no_grad():
                self.normalize.weight.copy_((1.0 / (255.0 * std)).view(-1, 1, 1, 1))
                self.normalize.bias.copy_(-mean / std)
            self.normalize.requires_grad_(False)
            self.net = model

        def forward(self, x):
            return self.net(self.normalize(x.permute(0, 3, 1, 2) if channels_last else x))

    return RawPixels().eval()


def sample_input(calib, channels_last: bool = True, n: int = 2):
    """A float tensor of raw pixels from calibration images (uint8 NHWC) in the artifact's layout."""
    import torch

    x = torch.as_tensor(calib[:n]).float()
    return x if channels_last else x.permute(0, 3, 1, 2).contiguous()


OP_PATTERNS = (r"aten[.:]+([A-Za-z0-9_]+)", r"Unsupported fx node ([A-Za-z0-9_]+)",
               r"operator ['\"]?([A-Za-z0-9_.:]+)['\"]? (?:is )?not supported", r"failed to legalize operation '([^']+)'")


def op_error(target: str, exc: Exception, exported=None) -> Kd2EdgeError:
    """A converter failure as one line naming the operator and, when found, the student's layer using it."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", f"{exc}")
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    op = next((m.group(1) for pat in OP_PATTERNS for m in [re.search(pat, text)] if m), None)
    layer = _layer_of(op, exported) if op and exported is not None else None
    if op:
        where = f" in layer {layer}" if layer else ""
        return Kd2EdgeError(f"{target} converter cannot handle operator {op}{where} ({type(exc).__name__}); "
                            "replace that op in the model, or export another target")
    return Kd2EdgeError(f"{target} export failed: {type(exc).__name__}: {first[:300]}")


def _layer_of(op: str, exported) -> str | None:
    """The module path (inside the student) and class of the first graph node calling `op`."""
    base = op.split(".")[-1].lstrip("_")
    for node in exported.graph.nodes:
        if node.op != "call_function":
            continue
        name = getattr(node.target, "__name__", str(node.target)).split(".")[0].lstrip("_")
        if base in (name, node.name.lstrip("_")) or name.endswith(base) or base.endswith(name):
            stack = node.meta.get("nn_module_stack") or {}
            if not stack:
                return None
            path, cls = list(stack.values())[-1]
            path = re.sub(r"^L\['self'\]\.?", "", str(path))
            path = path[4:] if path.startswith("net.") else ("<root>" if path in ("", "net") else path)
            return f"{path} ({getattr(cls, '__name__', str(cls).split('.')[-1])})"
    return None
