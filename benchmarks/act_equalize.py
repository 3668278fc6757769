"""Activation equalization of a fastcnn student before int8 export (issue 14; measured, not adopted).

int8 activations are quantized per tensor, so a channel whose range is small next to the tensor's largest gets
few of the 256 levels. fastcnn's ReLU / max-pool / residual-add / mean / linear chain is positively homogeneous
per channel, so each group of channels that is added together (a stage: its conv-BN-ReLU and its residual
conv-BN-ReLU; the stem on its own) can be scaled by s_c > 0 at the producing BatchNorms (gamma, beta) and
unscaled at the consuming convs' / classifier's input columns: the fp32 function is unchanged (checked below),
the activation ranges move towards the largest channel's, and the consumers' per-output-channel weights absorb
the 1/s_c. s_c = (max range / range_c) ** alpha, ranges of each group's output (ReLU, >= 0) on 512 training
images (alpha 0.5 is DFQ's geometric balance, Nagel et al. 2019). Writes a native checkpoint to hand to
`benchmarks/calibration.py --checkpoint` (benchmarks/export.md, "Activation equalization").

    .venv/bin/python benchmarks/act_equalize.py runs/experiments-recipe/1_kd-s0/student.pt /tmp/eq.pt --alpha 0.5
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kd2edge import Kd2EdgeError
from kd2edge.batches import normalize
from kd2edge.checkpoint import load_model, save_checkpoint
from kd2edge.data import load_dataset
from kd2edge.zoo import FastCNN, ResidualConv

ROOT = Path(__file__).resolve().parents[1]


def channel_groups(model: FastCNN) -> list[dict]:
    """Per group: the BNs producing its channels, the conv/linear layers reading them, the module whose output
    the group's ranges are measured on (the last one that writes the group's tensor)."""
    groups, cur = [], None
    for m in model.features:
        if isinstance(m, ResidualConv):
            cur["consumers"].append(m.conv[0])
            cur["producers"].append(m.conv[1])
            cur["tap"] = m
        elif isinstance(m, nn.Sequential):  # conv_bn: reads the current group, starts a new one
            if cur:
                cur["consumers"].append(m[0])
            cur = {"producers": [m[1]], "consumers": [], "tap": m}
            groups.append(cur)
    groups[-1]["consumers"].append(model.fc)
    return groups


@torch.no_grad()
def equalize(model: FastCNN, x: torch.Tensor, alpha: float) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(scale per group, the logits of `x` before scaling) -- `model` is changed in place."""
    groups, ranges = channel_groups(model), []
    hooks = [g["tap"].register_forward_hook(lambda m, i, out: ranges.append(out.transpose(0, 1).flatten(1).amax(1)))
             for g in groups]
    ref = model(x)
    for h in hooks:
        h.remove()
    scales = []
    for g, r in zip(groups, ranges):
        r = r.clamp_min(1e-6)
        s = (r.max() / r) ** alpha
        for bn in g["producers"]:
            bn.weight.mul_(s)
            bn.bias.mul_(s)
        for layer in g["consumers"]:
            layer.weight.div_(s.view((1, -1, 1, 1) if layer.weight.dim() == 4 else (1, -1)))
        scales.append(s)
    return scales, ref


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--data-dir", default=os.environ.get("KD2EDGE_DATA", str(ROOT / "data")))
    a = ap.parse_args()
    try:
        model, info = load_model(a.checkpoint)
    except Kd2EdgeError as e:
        raise SystemExit(f"error: {e}; this script takes a native fastcnn checkpoint") from None
    if not isinstance(model, FastCNN):
        raise SystemExit(f"error: {a.checkpoint} is a {info['arch']}; this script knows fastcnn's channel groups only")
    train = load_dataset("cifar10", "train", a.data_dir)
    x = normalize(train.x[np.random.default_rng(123).choice(len(train.x), 512, replace=False)], info["preprocessing"])
    scales, ref = equalize(model, x, a.alpha)
    with torch.no_grad():
        diff = float((model(x) - ref).abs().max())
    for s in scales:
        print(f"{len(s)} channels: s median {float(s.median()):.2f}, max {float(s.max()):.2f}")
    print(f"max |logit change| on the 512 images: {diff:.2e}")
    if diff > 1e-3:
        raise SystemExit(f"error: equalization changed the fp32 logits by {diff}; a bug")
    save_checkpoint(a.out, model, arch=info["arch"], arch_kwargs=info["arch_kwargs"], classes=info["classes"],
                    preprocess=info["preprocessing"], metrics=info.get("metrics"), config=info.get("config"),
                    provenance={"equalized_from": info["sha256"], "alpha": a.alpha})


if __name__ == "__main__":
    main()
