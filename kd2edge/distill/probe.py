"""Cross-dataset teacher adaptation: a linear probe on the teacher's frozen penultimate features.

A teacher trained on other classes (e.g. CIFAR-100) gets a new linear head fitted (multinomial logistic
regression, L-BFGS, small L2) on its pooled penultimate features of the student's labeled training images
(un-augmented). Features are cached on disk per teacher and image checksum, so refitting is cheap.
The probe's test accuracy is reported; the adapted teacher (body + probe head) then guides distillation.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kd2edge.files import atomic_write
from kd2edge.locations import location
from kd2edge.metrics import topk_accuracy


def teacher_features(teacher, x: np.ndarray, cfg: dict, log=print, batch_size: int = 500) -> np.ndarray:
    from kd2edge.distill.teacher_cache import dataset_fingerprint

    path = Path(cfg.get("cache_dir") or location("cache")) / "teacher_features" / \
        f"{teacher.features_id}-{dataset_fingerprint(x)[:16]}.npy"
    if cfg.get("cache", True) and path.exists():
        return np.load(path)
    log(f"computing teacher features for {len(x)} images")
    xt = torch.from_numpy(x)
    feats = torch.cat([teacher.penultimate(xt[i:i + batch_size]) for i in range(0, len(x), batch_size)]).numpy()
    if cfg.get("cache", True):
        atomic_write(path, lambda tmp: np.save(open(tmp, "wb"), feats))
    return feats


def fit_linear(f: np.ndarray, y: np.ndarray, num_classes: int, weight_decay: float = 1e-4,
               iters: int = 300) -> nn.Linear:
    torch.manual_seed(0)
    x, t = torch.from_numpy(f).float(), torch.from_numpy(y).long()
    head = nn.Linear(x.shape[1], num_classes)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=iters, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(head(x), t) + weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head.requires_grad_(False)


def fit_probe(teacher, x_train, y_train, x_val, y_val, num_classes: int, cfg: dict, log=print) -> dict:
    t0 = time.perf_counter()
    f_train = teacher_features(teacher, x_train, cfg, log)
    f_val = teacher_features(teacher, x_val, cfg, log)
    t1 = time.perf_counter()
    head = fit_linear(f_train, y_train, num_classes)
    with torch.no_grad():
        train_top1 = topk_accuracy(head(torch.from_numpy(f_train)).numpy(), y_train)
        val_top1 = topk_accuracy(head(torch.from_numpy(f_val)).numpy(), y_val)
    log(f"linear probe on teacher features: train top-1 {train_top1:.2f}%, test top-1 {val_top1:.2f}%")
    return {"head": head, "probe_top1": val_top1, "probe_train_top1": train_top1, "n_train": int(len(y_train)),
            "feature_dim": int(f_train.shape[1]), "features_seconds": t1 - t0,
            "fit_seconds": time.perf_counter() - t1}
