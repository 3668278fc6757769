"""`kd` (Hinton et al. 2015): (1 - alpha) * CE + alpha * T^2 * KL(p_teacher^T || p_student^T).
(The usual direction: the teacher's softened distribution is the target.)"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kd2edge.distill.methods.ce import masked_ce


def standardize_logits(z: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    return (z - z.mean(1, keepdim=True)) / (z.std(1, keepdim=True) + eps)


def kd_term(s, t, T: float) -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over the batch."""
    return F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), reduction="batchmean", log_target=True) * T * T


class KD(nn.Module):
    needs_teacher = True
    needs_features = False
    CONFIG = {"standardize": False}

    def __init__(self, label_smoothing: float = 0.0, standardize: bool = False, **_):
        super().__init__()
        self.label_smoothing, self.standardize = label_smoothing, standardize

    @classmethod
    def from_config(cls, cfg: dict, student=None, teacher=None, device: str = "cpu"):
        return cls(label_smoothing=cfg["label_smoothing"], standardize=cfg["standardize"])

    def distill_term(self, s, t, labels, T):
        if self.standardize:
            s, t = standardize_logits(s), standardize_logits(t)
        return kd_term(s, t, T)

    def forward(self, s, t, labels, labeled, T, alpha, feats=None):
        ce = masked_ce(s, labels, labeled, self.label_smoothing)
        kd = self.distill_term(s.float(), t.float(), labels, T)
        return (1 - alpha) * ce + alpha * kd, {"ce": ce.detach(), "kd": kd.detach()}
