"""Layers an int8 export keeps in float (`kd2edge export --int8 --keep-float first|last`).

`first`: the input normalization (kd2edge.export.graph.deployable's `normalize`) and the student's first
convolution; `last`: the student's last weight layer (its classifier). Layers are found in execution order
(one forward pass with hooks), named by their module path in the deployable graph (`normalize`, `net.conv1`,
`net.linear`), and located in each target's graph by that name: ONNX nodes by their weight initializer
(`<path>.weight`), PT2E nodes by the module that called them (node meta nn_module_stack).
"""
from __future__ import annotations

import re

from kd2edge import Kd2EdgeError
from kd2edge.artifact import KEEP_FLOAT

TARGETS = ("onnx", "tflite")  # the int8 converters that can leave layers in float


def check(keep) -> list[str]:
    """The --keep-float names, validated, without repeats, in registry order."""
    keep = [k.value if hasattr(k, "value") else str(k) for k in (keep or ())]
    bad = [k for k in keep if k not in KEEP_FLOAT]
    if bad:
        raise Kd2EdgeError(f"unknown --keep-float {', '.join(bad)}; valid: {', '.join(KEEP_FLOAT)}")
    return [k for k in KEEP_FLOAT if k in keep]


def module_paths(model, keep, input_size=(3, 32, 32)) -> list[str]:
    """Module paths (in the deployable graph) of the layers `keep` names, from one forward pass."""
    import torch

    from kd2edge.export.rounding import layer_order

    if not keep:
        return []
    order = [name for name, _ in layer_order(model.eval(), torch.zeros(1, *input_size))]
    if not order:
        raise Kd2EdgeError("--keep-float: the student has no convolution or linear layer to keep in float")
    paths = (["normalize", f"net.{order[0]}"] if "first" in keep else []) + ([f"net.{order[-1]}"] if "last" in keep else [])
    return list(dict.fromkeys(paths))


def onnx_nodes(proto, paths) -> list[str]:
    """Names of the ONNX nodes whose weight is `<path>.weight`, for every path (one error line if one is missing)."""
    nodes = []
    for path in paths:
        found = [n.name for n in proto.graph.node if f"{path}.weight" in n.input]
        if not found:
            raise Kd2EdgeError(f"--keep-float: layer {path} not found in the ONNX graph (no node uses "
                               f"{path}.weight); export without --keep-float")
        nodes += found
    return nodes


def in_layers(node, paths) -> bool:
    """Whether a torch.export graph node was called by one of the modules `paths` (or inside one)."""
    for path, _ in (node.meta.get("nn_module_stack") or {}).values():
        p = re.sub(r"^L\['self'\]\.?", "", str(path))
        if any(p == q or p.startswith(q + ".") for q in paths):
            return True
    return False
