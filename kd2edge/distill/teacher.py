"""Teachers for distillation: a frozen model that maps uint8 NHWC image batches to logits.

Sources (`load_teacher(spec, arch)`):
- a known name (`cifar10-resnet56`, see kd2edge.pretrained), a native kd2edge checkpoint, or a foreign state
  dict with `arch` -> `TorchTeacher` (logits, features through forward hooks, penultimate features);
- a TorchScript file -> `TorchTeacher` (logits; features only if the named submodule exists);
- an `.onnx` file run with onnxruntime -> `OnnxTeacher` (logits only). Its input is RAW pixels 0..255
  (docs/CONTRACTS.md: normalization is inside the graph), NHWC or NCHW as its input shape says.

Every teacher is in eval mode with gradients off. `head` replaces the teacher's classifier with a probe
(cross-dataset adaptation, kd2edge.distill.probe); its checksum then enters `cache_id`.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from kd2edge import Kd2EdgeError
from kd2edge.batches import Normalizer
from kd2edge.data import STATS
from kd2edge.files import sha256


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise Kd2EdgeError("the teacher has no nn.Linear classifier to read penultimate features from")
    return found[-1]


class TorchTeacher:
    def __init__(self, model: nn.Module, info: dict, preprocessing: dict, bf16: bool = False):
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.info, self.bf16, self.head = info, bf16, None
        self.normalizer = Normalizer(preprocessing["mean"], preprocessing["std"], channels_last=True)
        self.num_classes = info["num_classes"]
        self.source = info["source"]
        self.sha256 = info["sha256"]

    @property
    def cache_id(self) -> str:
        parts = [self.sha256, "bf16" if self.bf16 else "fp32"]
        if self.head is not None:
            w = torch.cat([self.head.weight.flatten(), self.head.bias.flatten()]).numpy().tobytes()
            parts.append(hashlib.sha256(w).hexdigest()[:16])
        return "-".join(parts)

    def _autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)

    @torch.no_grad()
    def logits(self, x_uint8: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            with self._autocast():
                return self.model(self.normalizer(x_uint8)).float()
        return self.head(self.penultimate(x_uint8))

    @torch.no_grad()
    def penultimate(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """The input of the last nn.Linear (pooled features), float32."""
        _, linear = last_linear(self.model)
        got = {}
        h = linear.register_forward_pre_hook(lambda m, a: got.__setitem__("x", a[0]))
        try:
            with self._autocast():
                self.model(self.normalizer(x_uint8))
        finally:
            h.remove()
        return got["x"].float()

    def set_head(self, head: nn.Linear):
        self.head = head.eval()
        self.num_classes = head.out_features


class OnnxTeacher:
    """An .onnx teacher run by the same onnxruntime Session as the device path (kd2edge.runtimes)."""

    def __init__(self, path: Path, threads: int | None = None):
        from kd2edge.runtimes import load_session

        self.session = load_session("onnxruntime", path, threads or torch.get_num_threads())
        self.session.layout = "NHWC" if self.session.input_shape[-1] == 3 else "NCHW"
        self.source, self.sha256, self.head, self.bf16 = "onnx", sha256(path), None, False
        self.num_classes = self.logits(torch.zeros(1, 32, 32, 3, dtype=torch.uint8)).shape[1]
        self.info = {"path": str(path), "sha256": self.sha256, "arch": "onnx", "source": "onnx",
                     "num_classes": self.num_classes}

    @property
    def cache_id(self) -> str:
        return f"{self.sha256}-onnx"

    def logits(self, x_uint8: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.predict(x_uint8.numpy()))

    def penultimate(self, x_uint8):
        raise Kd2EdgeError("an ONNX teacher gives logits only; cross-dataset adaptation and feature methods "
                           "need a PyTorch teacher (checkpoint or TorchScript)")


def teacher_preprocessing(spec) -> dict:
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec not in STATS:
            raise Kd2EdgeError(f"unknown teacher_preprocessing {spec!r}; valid: {', '.join(STATS)} or {{mean, std}}")
        return {"mean": list(STATS[spec]["mean"]), "std": list(STATS[spec]["std"])}
    return {"mean": list(spec["mean"]), "std": list(spec["std"])}


def load_teacher(spec: str, arch: str | None = None, bf16: bool = False, preprocessing=None):
    """A frozen teacher from a name, checkpoint, TorchScript file or ONNX file."""
    from kd2edge.checkpoint import FOREIGN_PREPROCESSING, load_model
    from kd2edge.pretrained import PRETRAINED, resolve_checkpoint

    if str(spec) not in PRETRAINED and str(spec).endswith(".onnx"):
        return OnnxTeacher(resolve_checkpoint(spec))
    model, info = load_model(spec, arch)
    prep = teacher_preprocessing(preprocessing) or info.get("preprocessing")
    if prep is None:  # TorchScript records no preprocessing: the shared foreign teachers use ImageNet stats
        prep = dict(FOREIGN_PREPROCESSING)
    if info.get("num_classes") is None:
        with torch.no_grad():
            info["num_classes"] = int(model(torch.zeros(1, 3, 32, 32)).shape[1])
    return TorchTeacher(model, info, prep, bf16)
