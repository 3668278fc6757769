"""Batches on whole tensors: shuffling, augmentation (random translate with zero padding, horizontal flip,
optional cutout) and normalization, no per-sample PIL and no worker processes (the cifar10-airbench way).

Augmentation views are enumerable: view = (flip, dy, dx) with dy, dx in [-pad, pad], encoded as one
integer (`view_id`), so a teacher's output for a given view can be cached and replayed exactly.
"""
from __future__ import annotations

import numpy as np
import torch


class Normalizer(torch.nn.Module):
    """uint8-valued pixels -> normalized float. Input NHWC (channels_last=True) or NCHW, values in [0, 255]."""

    def __init__(self, mean, std, channels_last: bool = False):
        super().__init__()
        self.channels_last = channels_last
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)))
        self.register_buffer("shift", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) /
                             torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        return x.float() * self.scale - self.shift


def normalize(x_nhwc_uint8: torch.Tensor | np.ndarray, preprocessing: dict) -> torch.Tensor:
    """uint8 NHWC RGB images -> the model input of a checkpoint's preprocessing record / an input contract
    (kd2edge.input_contract): (x / 255 - mean) / std, NCHW unless `layout` is NHWC, BGR if `channel_order` says.
    The same float32 operations as the numpy `input_contract.apply_contract`, so both give the same bits."""
    x = torch.as_tensor(x_nhwc_uint8)
    if preprocessing.get("channel_order", "RGB") == "BGR":
        x = x.flip(-1)
    mean = torch.tensor(preprocessing["mean"], dtype=torch.float32)
    std = torch.tensor(preprocessing["std"], dtype=torch.float32)
    out = (x.float() / 255.0 - mean) / std
    return out if preprocessing.get("layout", "NCHW") == "NHWC" else out.permute(0, 3, 1, 2)


def num_views(pad: int = 4, flip: bool = True) -> int:
    return (2 if flip else 1) * (2 * pad + 1) ** 2


def decode_views(view: torch.Tensor, pad: int = 4):
    """view id -> (flip, dy, dx) tensors; ids are flip * (2p+1)^2 + (dy+p) * (2p+1) + (dx+p)."""
    side = 2 * pad + 1
    return view // (side * side), (view // side) % side - pad, view % side - pad


def apply_views(x: torch.Tensor, view: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Translate each NHWC uint8 image by its (dy, dx) with zero padding, then flip it if asked."""
    if pad == 0 and not bool((view > 0).any()):
        return x
    n, h, w, _ = x.shape
    flip, dy, dx = decode_views(view, pad)
    padded = torch.nn.functional.pad(x, (0, 0, pad, pad, pad, pad))
    rows = (pad + dy)[:, None] + torch.arange(h)
    cols = (pad + dx)[:, None] + torch.arange(w)
    cols = torch.where(flip[:, None].bool(), cols.flip(1), cols)
    return padded[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def low_res(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Progressive resizing: normalized NCHW input scaled by `scale` < 1 (bilinear, antialiased); the student's
    global pooling takes any size, and a smaller image trains faster (fastcnn at 24 px: 1.8x the images/s of 32)."""
    h, w = x.shape[-2:]
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if scale >= 1 or size == (h, w):
        return x
    out = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return out.contiguous(memory_format=torch.channels_last) if x.is_contiguous(memory_format=torch.channels_last) \
        else out


def cutout(x: torch.Tensor, centers: torch.Tensor, side: int) -> torch.Tensor:
    """Cutout (DeVries & Taylor 2017) on normalized NCHW input: a side x side square around each image's
    (row, col) center set to 0, the dataset mean; squares reaching past the border are clipped there."""
    if side <= 0:
        return x
    h, w = x.shape[-2:]
    centers = centers.to(x.device)  # drawn on the CPU; the input may be on a GPU
    top = centers[:, :1, None] - side // 2  # (n, 1, 1)
    left = centers[:, 1:, None] - side // 2
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)  # (n, h, w)
    return x.masked_fill(inside[:, None], 0.0)


def iterate(n: int, batch_size: int, shuffle: bool, generator: torch.Generator | None = None,
            drop_last: bool = False, rank: int = 0, world: int = 1):
    """Yield index tensors of batches over range(n); shuffled with `generator`; sharded over `world` ranks."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if world > 1:
        order = order[: n - n % world][rank::world]
    stop = len(order) - (len(order) % batch_size if drop_last else 0)
    for i in range(0, stop, batch_size):
        yield order[i:i + batch_size]
