"""TorchScript files with kd2edge's description inside (the `kd2edge.json` extra file that
kd2edge.checkpoint.load_model reads), as other tools write them; used by the checkpoint and eval tests."""
from __future__ import annotations

import json
import warnings

import torch

from kd2edge.checkpoint import TORCHSCRIPT_META, versions


def save_torchscript(path, model, *, arch: str, classes: list[str], preprocess: dict):
    example = torch.zeros(1, *preprocess.get("input_size", (3, 32, 32)))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is deprecated but still what many tools load
        traced = torch.jit.trace(model.eval(), example)
        meta = json.dumps({"arch": arch, "num_classes": len(classes), "classes": list(classes),
                           "preprocessing": preprocess, "provenance": {"versions": versions()}})
        torch.jit.save(traced, str(path), _extra_files={TORCHSCRIPT_META: meta})
    return path
