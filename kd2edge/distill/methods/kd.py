"""`kd` (Hinton et al. 2015): (1 - alpha) * CE + alpha * T^2 * KL(p_teacher^T || p_student^T).
(The usual direction: the teacher's softened distribution is the target.)"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kd2edge.distill.methods.ce import masked_ce


def teacher_rows(t: torch.Tensor):
    """Rows with teacher logits: a budgeted run whose cache build was cut short marks the rest with NaN.
    Returns (mask or None when all rows have them, fraction with them)."""
    has = torch.isfinite(t).all(1)
    if bool(has.all()):
        return None, 1.0
    return has, float(has.float().mean())


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
        has, frac = teacher_rows(t)
        if has is None:
            kd = self.distill_term(s.float(), t.float(), labels, T)
        else:  # rows without teacher logits learn from their labels only: weight 1 on their CE, 1 - alpha on others
            kd = self.distill_term(s[has].float(), t[has].float(), labels[has], T) * frac if frac else s.sum() * 0
            ce_rows = F.cross_entropy(s, labels, label_smoothing=self.label_smoothing, reduction="none")
            if labeled is not None:
                ce_rows = ce_rows * labeled
            loss = (torch.where(has, 1 - alpha, 1.0) * ce_rows).mean() + alpha * kd
            return loss, {"ce": ce.detach(), "kd": kd.detach()}
        return (1 - alpha) * ce + alpha * kd, {"ce": ce.detach(), "kd": kd.detach()}
