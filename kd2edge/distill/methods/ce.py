"""`ce`: cross-entropy on hard labels only (the baseline); no teacher."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn


def masked_ce(logits, labels, labeled, label_smoothing: float = 0.0):
    """Mean CE over the labeled samples (0 when none are labeled)."""
    if labeled is None:
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    if not bool(labeled.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[labeled], labels[labeled], label_smoothing=label_smoothing)


class CE(nn.Module):
    needs_teacher = False
    needs_features = False
    CONFIG: dict = {}

    def __init__(self, label_smoothing: float = 0.0, **_):
        super().__init__()
        self.label_smoothing = label_smoothing

    @classmethod
    def from_config(cls, cfg: dict, student=None, teacher=None, device: str = "cpu"):
        return cls(label_smoothing=cfg["label_smoothing"])

    def forward(self, s, t, labels, labeled, T, alpha, feats=None):
        ce = masked_ce(s, labels, labeled, self.label_smoothing)
        return ce, {"ce": ce.detach()}
