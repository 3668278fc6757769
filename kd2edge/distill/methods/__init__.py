"""Distillation losses, one small nn.Module per method (one module each), chosen from the METHODS dict.

Every method is called as `method(student_logits, teacher_logits, labels, labeled, T, alpha, feats)` and
returns `(loss, parts)` where parts holds the detached terms for logging. `labeled` is a bool mask: the
hard-label term uses only labeled samples (label budget / unlabeled data), distillation terms use all.
A method builds itself from the distill config with `from_config(cfg, student, teacher, device)`; its own
config keys and their defaults are its `CONFIG` dict (kd2edge.distill.config adds them to DEFAULTS).

- `ce`: cross-entropy on hard labels only (with optional label smoothing); no teacher.
- `kd` (Hinton et al. 2015): (1 - alpha) * CE + alpha * T^2 * KL(p_teacher^T || p_student^T).
- `dkd` (Zhao et al. 2022, decoupled KD): (1 - alpha) * CE + alpha * (tckd_weight * TCKD + beta * NCKD).
- `hybrid`: the `kd` loss + feature_weight * MSE(projector(student feature), teacher feature), features
  read through forward hooks.
- `standardize=True` (logit standardization, Sun et al. 2024) z-scores each sample's logits before the
  temperature in the distillation term of any logit method.
"""
from __future__ import annotations

from torch import nn

from kd2edge import Kd2EdgeError
from kd2edge.distill.methods.ce import CE
from kd2edge.distill.methods.dkd import DKD
from kd2edge.distill.methods.hybrid import Hybrid
from kd2edge.distill.methods.kd import KD

METHODS = {"ce": CE, "kd": KD, "dkd": DKD, "hybrid": Hybrid}


def method_defaults() -> dict:
    """Every method's own config keys with their defaults."""
    out = {}
    for cls in METHODS.values():
        out.update(cls.CONFIG)
    return out


def create_method(name: str, **kwargs) -> nn.Module:
    if name not in METHODS:
        raise Kd2EdgeError(f"unknown method {name!r}; valid: {', '.join(METHODS)}")
    try:
        return METHODS[name](**kwargs)
    except TypeError as e:
        raise Kd2EdgeError(f"bad options for method {name!r}: {e}") from None
