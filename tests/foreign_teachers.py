"""Foreign teachers as users bring them: the shared resnet20 wrapped to take RGB in [0, 1], NCHW, with its
(ImageNet) normalization inside, saved with torch.jit.trace (no kd2edge.json) and torch.onnx.export (no
kd2edge metadata); plus its true logits, computed in eager PyTorch on x / 255."""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from kd2edge.checkpoint import load_model
from kd2edge.data import STATS


class UnitInput(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(STATS["imagenet"]["mean"]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STATS["imagenet"]["std"]).view(1, 3, 1, 1))

    def forward(self, x):  # x: float NCHW RGB in [0, 1]
        return self.net((x - self.mean) / self.std)


def build(folder, resnet20_path) -> dict:
    net, _ = load_model(resnet20_path, "resnet20")
    model = UnitInput(net).eval()
    example = torch.rand(2, 3, 32, 32)
    ts, onnx_path = folder / "resnet20_unit.pt", folder / "resnet20_unit.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(model, example), str(ts))
        torch.onnx.export(model, (example,), str(onnx_path), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return {"model": model, "torchscript": ts, "onnx": onnx_path}


@torch.no_grad()
def true_logits(model, x_uint8: np.ndarray) -> np.ndarray:
    """What the wrapped teacher outputs when fed correctly: x / 255, NCHW."""
    x = torch.from_numpy(x_uint8).float() / 255.0
    return torch.cat([model(x[i:i + 500].permute(0, 3, 1, 2)) for i in range(0, len(x), 500)]).numpy()
