"""`hybrid`: the `kd` loss + feature_weight * MSE(projector(student feature), teacher feature). The features
come from forward hooks on named layers (the nets return logits only); the projector is a learned 1x1 conv
(+BN); spatial sizes are matched by adaptive average pooling of the larger map."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kd2edge import Kd2EdgeError
from kd2edge.distill.methods.kd import KD

DEFAULT_FEATURE_LAYER = {"CifarResNet": "layer3", "PlainCNN": "features", "FastCNN": "features",
                         "MobileNetV2Cifar": "features", "ShuffleNetV2Cifar": "features",
                         "RecursiveScriptModule": "layer3"}


def default_feature_layer(model: nn.Module) -> str:
    name = type(model).__name__
    if name in DEFAULT_FEATURE_LAYER:
        return DEFAULT_FEATURE_LAYER[name]
    raise Kd2EdgeError(f"no default feature layer for {name}; set feature_layers: {{student: NAME, teacher: NAME}}")


def feature_hook(model: nn.Module, layer: str, store: dict, key: str):
    """Register a forward hook storing `layer`'s output in store[key]; returns the handle."""
    modules = dict(model.named_modules())
    if layer not in modules:
        names = [n for n in modules if n and "." not in n]
        raise Kd2EdgeError(f"no layer named {layer!r} in {type(model).__name__}; top-level layers: {', '.join(names)}")
    return modules[layer].register_forward_hook(lambda m, a, out: store.__setitem__(key, out))


class Hybrid(KD):
    needs_features = True
    CONFIG = {**KD.CONFIG, "feature_weight": 0.1, "feature_layers": None}

    def __init__(self, student_channels: int, teacher_channels: int, feature_weight: float = 0.1, **kw):
        super().__init__(**kw)
        self.feature_weight = feature_weight
        self.projector = nn.Sequential(nn.Conv2d(student_channels, teacher_channels, 1, bias=False),
                                       nn.BatchNorm2d(teacher_channels))
        self.store: dict = {}  # filled by the forward hooks: {"student": ..., "teacher": ...}

    @classmethod
    def from_config(cls, cfg: dict, student=None, teacher=None, device: str = "cpu"):
        """Hook the feature layers of the student and the (PyTorch) teacher; one probe pass sizes the projector."""
        if not hasattr(teacher, "model"):
            raise Kd2EdgeError("method hybrid needs teacher features; an ONNX teacher gives logits only "
                               "(use kd/dkd, or a PyTorch/TorchScript teacher)")
        layers = cfg["feature_layers"] or {}
        store: dict = {}
        feature_hook(student, layers.get("student") or default_feature_layer(student), store, "student")
        feature_hook(teacher.model, layers.get("teacher") or default_feature_layer(teacher.model), store, "teacher")
        student.eval()
        with torch.no_grad():
            student(torch.zeros(2, 3, 32, 32, device=device))
            teacher.logits(torch.zeros(2, 32, 32, 3, dtype=torch.uint8))
        student.train()
        method = cls(student_channels=store["student"].shape[1], teacher_channels=store["teacher"].shape[1],
                     feature_weight=cfg["feature_weight"], label_smoothing=cfg["label_smoothing"],
                     standardize=cfg["standardize"])
        method.store = store
        return method

    def features(self, device) -> tuple:
        """(student feature, teacher feature) of the batch just run through both nets."""
        return self.store["student"], self.store["teacher"].float().to(device)

    def forward(self, s, t, labels, labeled, T, alpha, feats=None):
        loss, parts = super().forward(s, t, labels, labeled, T, alpha)
        fs, ft = feats
        fs = self.projector(fs.float())
        ft = ft.float()
        if fs.shape[-1] > ft.shape[-1]:
            fs = F.adaptive_avg_pool2d(fs, ft.shape[-2:])
        elif ft.shape[-1] > fs.shape[-1]:
            ft = F.adaptive_avg_pool2d(ft, fs.shape[-2:])
        feat = F.mse_loss(fs, ft)
        parts["feat"] = feat.detach()
        return loss + self.feature_weight * feat, parts
