"""`dkd` (Zhao et al. 2022, decoupled KD): (1 - alpha) * CE + alpha * (tckd_weight * TCKD + beta * NCKD),
both terms scaled by T^2; TCKD is the binary KL on (target, non-target) mass, NCKD the KL among the
non-target classes."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kd2edge.distill.methods.ce import masked_ce
from kd2edge.distill.methods.kd import KD, standardize_logits


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


class DKD(KD):
    CONFIG = {**KD.CONFIG, "beta": 8.0, "tckd_weight": 1.0}

    def __init__(self, tckd_weight: float = 1.0, beta: float = 8.0, **kw):
        super().__init__(**kw)
        self.tckd_weight, self.beta = tckd_weight, beta

    @classmethod
    def from_config(cls, cfg: dict, student=None, teacher=None, device: str = "cpu"):
        return cls(label_smoothing=cfg["label_smoothing"], standardize=cfg["standardize"], beta=cfg["beta"],
                   tckd_weight=cfg["tckd_weight"])

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
