"""Classification and latency metrics on numpy arrays. No torch: the device path uses this too."""
from __future__ import annotations

import numpy as np


def predict_top1(logits: np.ndarray) -> np.ndarray:
    """THE top-1 prediction: argmax over classes; a tie goes to the FIRST (lowest) class index, as
    np.argmax and torch.argmax break it. Every top-1 in kd2edge (accuracy, confusion matrices, agreement,
    export verification, bench, reports) comes from here."""
    return np.asarray(logits).argmax(1)


def predict_topk(logits: np.ndarray, k: int) -> np.ndarray:
    """(N, k) class indices by falling logit; ties in index order, so column 0 is `predict_top1`."""
    return np.argsort(-np.asarray(logits), axis=1, kind="stable")[:, :min(k, np.asarray(logits).shape[1])]


def tied_top1(logits: np.ndarray) -> int:
    """How many rows have their largest logit more than once (their top-1 is decided by the tie rule);
    quantized (int8) outputs tie often."""
    logits = np.asarray(logits)
    return int(((logits == logits.max(1, keepdims=True)).sum(1) > 1).sum())


def topk_accuracy(logits: np.ndarray, y: np.ndarray, k: int = 1) -> float:
    y = np.asarray(y)
    if k == 1:
        return float((predict_top1(logits) == y).mean() * 100)
    return float((predict_topk(logits, k) == y[:, None]).any(axis=1).mean() * 100)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """cm[i, j] = number of samples of true class i predicted as j."""
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def per_class(cm: np.ndarray) -> dict:
    """Per-class precision, recall, F1 (0 where undefined) and their macro averages, in percent."""
    tp = np.diag(cm).astype(float)
    predicted, actual = cm.sum(0), cm.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": (precision * 100).tolist(), "recall": (recall * 100).tolist(), "f1": (f1 * 100).tolist(),
            "support": actual.tolist(), "macro_precision": float(precision.mean() * 100),
            "macro_recall": float(recall.mean() * 100), "macro_f1": float(f1.mean() * 100)}


def classification_report(logits: np.ndarray, y: np.ndarray, classes: list[str] | None = None) -> dict:
    """top-1, top-5, per-class precision/recall/F1 with macro averages and the confusion matrix."""
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    num_classes = logits.shape[1]
    cm = confusion_matrix(y, predict_top1(logits), num_classes)
    return {"n": int(len(y)), "top1": topk_accuracy(logits, y, 1), "top5": topk_accuracy(logits, y, 5),
            "tied_top1": tied_top1(logits),
            **per_class(cm), "classes": list(classes) if classes else [str(i) for i in range(num_classes)],
            "confusion_matrix": cm.tolist()}


def agreement(a_logits: np.ndarray, b_logits: np.ndarray) -> float:
    """Percent of samples on which two models predict the same top-1 class."""
    return float((predict_top1(a_logits) == predict_top1(b_logits)).mean() * 100)


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of `test` against `reference`, in dB."""
    reference = np.asarray(reference, dtype=np.float64)
    noise = np.sum((reference - np.asarray(test, dtype=np.float64)) ** 2)
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(reference ** 2) / noise))


def latency_stats(seconds) -> dict:
    """Latency summary in milliseconds: mean, std, min, max, p50, p90, p99 (linear-interpolated percentiles)."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"runs": int(len(ms)), "mean_ms": float(ms.mean()), "std_ms": float(ms.std()), "min_ms": float(ms.min()),
            "max_ms": float(ms.max()), "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99)}
