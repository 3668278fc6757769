"""Distillation losses, one small nn.Module per method, chosen from the METHODS dict.

Every method is called as `method(student_logits, teacher_logits, labels, labeled, T, alpha, feats)` and
returns `(loss, parts)` where parts holds the detached terms for logging. `labeled` is a bool mask: the
hard-label term uses only labeled samples (label budget / unlabeled data), distillation terms use all.

- `ce`: cross-entropy on hard labels only (with optional label smoothing); no teacher.
- `kd` (Hinton et al. 2015): (1 - alpha) * CE + alpha * T^2 * KL(p_teacher^T || p_student^T).
  (The usual direction: the teacher's softened distribution is the target.)
- `dkd` (Zhao et al. 2022, decoupled KD): (1 - alpha) * CE + alpha * (tckd_weight * TCKD + beta * NCKD),
  both terms scaled by T^2; TCKD is the binary KL on (target, non-target) mass, NCKD the KL among the
  non-target classes.
- `hybrid`: the `kd` loss + feature_weight * MSE(projector(student feature), teacher feature), where the
  features come from forward hooks on named layers and the projector is a learned 1x1 conv (+BN);
  spatial sizes are matched by adaptive average pooling of the larger map.
- `standardize=True` (logit standardization, Sun et al. 2024) z-scores each sample's logits before the
  temperature in the distillation term of any logit method.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kd2edge import Kd2EdgeError


def standardize_logits(z: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    return (z - z.mean(1, keepdim=True)) / (z.std(1, keepdim=True) + eps)


def masked_ce(logits, labels, labeled, label_smoothing: float = 0.0):
    """Mean CE over the labeled samples (0 when none are labeled)."""
    if labeled is None:
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    if not bool(labeled.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[labeled], labels[labeled], label_smoothing=label_smoothing)


def kd_term(s, t, T: float) -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over the batch."""
    return F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), reduction="batchmean", log_target=True) * T * T


def dkd_terms(s, t, labels, T: float):
    """(TCKD, NCKD), each scaled by T^2 and averaged over the batch."""
    gt = F.one_hot(labels, s.shape[1]).bool()
    ps, pt = F.softmax(s / T, 1), F.softmax(t / T, 1)
    bs = torch.stack([(ps * gt).sum(1), (ps * ~gt).sum(1)], 1).clamp_min(1e-12)
    bt = torch.stack([(pt * gt).sum(1), (pt * ~gt).sum(1)], 1).clamp_min(1e-12)
    tckd = (bt * (bt.log() - bs.log())).sum(1).mean() * T * T
    big = 1000.0 * gt  # mask the target class out of the non-target distributions
    log_ns = F.log_softmax(s / T - big, 1)
    log_nt = F.log_softmax(t / T - big, 1)
    nckd = (log_nt.exp() * (log_nt - log_ns)).masked_fill(gt, 0).sum(1).mean() * T * T
    return tckd, nckd


class CE(nn.Module):
    needs_teacher = False
    needs_features = False

    def __init__(self, label_smoothing: float = 0.0, **_):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, s, t, labels, labeled, T, alpha, feats=None):
        ce = masked_ce(s, labels, labeled, self.label_smoothing)
        return ce, {"ce": ce.detach()}


class KD(nn.Module):
    needs_teacher = True
    needs_features = False

    def __init__(self, label_smoothing: float = 0.0, standardize: bool = False, **_):
        super().__init__()
        self.label_smoothing, self.standardize = label_smoothing, standardize

    def distill_term(self, s, t, labels, T):
        if self.standardize:
            s, t = standardize_logits(s), standardize_logits(t)
        return kd_term(s, t, T)

    def forward(self, s, t, labels, labeled, T, alpha, feats=None):
        ce = masked_ce(s, labels, labeled, self.label_smoothing)
        kd = self.distill_term(s.float(), t.float(), labels, T)
        return (1 - alpha) * ce + alpha * kd, {"ce": ce.detach(), "kd": kd.detach()}


class DKD(KD):
    def __init__(self, tckd_weight: float = 1.0, beta: float = 8.0, **kw):
        super().__init__(**kw)
        self.tckd_weight, self.beta = tckd_weight, beta

    def forward(self, s, t, labels, labeled, T, alpha, feats=None):
        ce = masked_ce(s, labels, labeled, self.label_smoothing)
        s32, t32 = s.float(), t.float()
        if self.standardize:
            s32, t32 = standardize_logits(s32), standardize_logits(t32)
        # DKD needs the target class; for unlabeled samples the teacher's top-1 stands in.
        target = labels if labeled is None else torch.where(labeled, labels, t32.argmax(1))
        tckd, nckd = dkd_terms(s32, t32, target, T)
        kd = self.tckd_weight * tckd + self.beta * nckd
        return (1 - alpha) * ce + alpha * kd, {"ce": ce.detach(), "tckd": tckd.detach(), "nckd": nckd.detach()}


class Hybrid(KD):
    needs_features = True

    def __init__(self, student_channels: int, teacher_channels: int, feature_weight: float = 0.1, **kw):
        super().__init__(**kw)
        self.feature_weight = feature_weight
        self.projector = nn.Sequential(nn.Conv2d(student_channels, teacher_channels, 1, bias=False),
                                       nn.BatchNorm2d(teacher_channels))

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


METHODS = {"ce": CE, "kd": KD, "dkd": DKD, "hybrid": Hybrid}


def create_method(name: str, **kwargs) -> nn.Module:
    if name not in METHODS:
        raise Kd2EdgeError(f"unknown method {name!r}; valid: {', '.join(METHODS)}")
    try:
        return METHODS[name](**kwargs)
    except TypeError as e:
        raise Kd2EdgeError(f"bad options for method {name!r}: {e}") from None
