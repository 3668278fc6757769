"""The student as an exportable graph: raw pixels in (normalization baked in), and converter failures as one
line naming the operator and the student's layer that uses it. `model` takes normalized NCHW input."""
from __future__ import annotations

import re

from kd2edge import Kd2EdgeError


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
