"""Is an artifact right? It is run by the same `kd2edge.runtimes` Session the device uses (or, where that
runtime cannot exist here, the target's reference session: CoreML off macOS -> numpy evaluation of the saved
ML program) on real test images, and its logits are compared with the PyTorch student's."""
from __future__ import annotations

import numpy as np

from kd2edge.metrics import agreement, sqnr_db, tied_top1, topk_accuracy
from kd2edge.runtimes import RuntimeUnavailable, load_session

FP32_MIN_AGREEMENT = 99.9  # percent
FP32_MAX_LOGIT_DIFF = 1e-3


def session_for(mod, path, meta: dict):
    """(Session, check) for a freshly converted model file: check is `runtime` or the reference's name."""
    try:
        return load_session(mod.RUNTIME, path, meta=meta), "runtime"
    except RuntimeUnavailable:
        if not hasattr(mod, "reference_session"):
            raise
        session = mod.reference_session(path)
        return session, session.runtime


def parity(logits: np.ndarray, reference: np.ndarray, y: np.ndarray, precision: str, check: str,
           max_drop: float) -> dict:
    """Compare an artifact's logits with the PyTorch student's on the same labelled images."""
    top1, top1_ref = topk_accuracy(logits, y), topk_accuracy(reference, y)
    r = {"check": check, "n": int(len(y)), "top1": top1, "top1_pytorch": top1_ref, "drop": top1_ref - top1,
         "agreement": agreement(logits, reference),
         "max_abs_logit_diff": float(np.abs(logits.astype(np.float64) - reference).max()),
         "sqnr_db": sqnr_db(reference, logits),
         "tied_top1": tied_top1(logits), "tied_top1_pytorch": tied_top1(reference)}  # decided by the tie rule
    if not np.isfinite(logits).all():
        r["passed"], r["reason"] = False, "non-finite logits"
    elif precision == "fp32":
        r["passed"] = r["agreement"] >= FP32_MIN_AGREEMENT and r["max_abs_logit_diff"] <= FP32_MAX_LOGIT_DIFF
        r["reason"] = None if r["passed"] else (
            f"fp32 parity failed: agreement {r['agreement']:.2f}% (need >= {FP32_MIN_AGREEMENT}), "
            f"max |logit diff| {r['max_abs_logit_diff']:.2e} (need <= {FP32_MAX_LOGIT_DIFF:g})")
    else:
        r["passed"] = r["drop"] <= max_drop
        r["reason"] = None if r["passed"] else f"top-1 drop {r['drop']:.2f} points exceeds --max-drop {max_drop:g}"
    return r
