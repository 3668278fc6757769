"""The distillation training loop: whole-tensor batches from in-memory uint8 images (kd2edge.batches),
teacher logits from the cache or the live teacher, one optimizer step per batch.

Determinism: the batch order and the per-image view choice of epoch e come from generators seeded with
(seed, e), so a run resumed at an epoch boundary replays exactly what an uninterrupted run does.
"""
from __future__ import annotations

import contextlib
import time

import numpy as np
import torch
import torch.nn.functional as F

from kd2edge.batches import Normalizer, apply_views, iterate
from kd2edge.schedules import lr_multiplier, value_at


def epoch_generators(seed: int, epoch: int):
    return (torch.Generator().manual_seed(seed * 1_000_003 + 2 * epoch),
            torch.Generator().manual_seed(seed * 1_000_003 + 2 * epoch + 1))


def make_optimizer(params, cfg: dict):
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], nesterov=cfg["nesterov"],
                               weight_decay=cfg["weight_decay"])
    return torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


OPTIMIZERS = ("sgd", "adamw")


def autocast(device: str, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=torch.bfloat16 if device == "cpu" else torch.float16)


def steps_per_epoch(n: int, batch_size: int, world: int = 1) -> int:
    per_rank = n // world
    return max(1, per_rank // batch_size) if per_rank >= batch_size else 1


def train_epoch(ctx: dict, epoch: int, progress=None) -> dict:
    """One epoch. ctx holds student, normalizer, method, source (cache or live), teacher, data, cfg, ..."""
    cfg, student, method, source = ctx["cfg"], ctx["student"], ctx["method"], ctx["source"]
    x, y, labeled = ctx["x"], ctx["y"], ctx["labeled"]
    n, bs, world, rank = len(y), ctx["local_batch"], ctx["world"], ctx["rank"]
    order_gen, view_gen = epoch_generators(cfg["seed"], epoch)
    slots = torch.randint(0, ctx["num_slots"], (n,), generator=view_gen)
    T = value_at(cfg["T"], epoch, cfg["epochs"])
    alpha = value_at(cfg["alpha"], epoch, cfg["epochs"])
    total_steps = cfg["epochs"] * ctx["steps_per_epoch"]
    student.train()
    method.train()
    sums, count, correct, teacher_s = {"loss": 0.0}, 0, 0, 0.0
    t0 = time.perf_counter()
    drop_last = n // world >= bs
    for step, idx in enumerate(iterate(n, bs, True, order_gen, drop_last, rank, world)):
        gstep = epoch * ctx["steps_per_epoch"] + step
        for group in ctx["optimizer"].param_groups:
            group["lr"] = cfg["lr"] * lr_multiplier(cfg["schedule"], gstep, total_steps)
        slot = slots[idx]
        views = source.views(idx, slot) if source is not None else slot
        xb = apply_views(x[idx], views, cfg["pad"]) if cfg["augment"] else x[idx]
        t_logits, feats = None, None
        tt = time.perf_counter()
        if method.needs_features:
            with torch.no_grad():
                t_logits = ctx["teacher"].logits(xb)  # hooks fill store["teacher"]
            feats_t = ctx["hook_store"]["teacher"].float()
        elif method.needs_teacher:
            t_logits = source.logits(idx, slot, xb)
        teacher_s += time.perf_counter() - tt
        with autocast(ctx["device"], ctx["amp"]):
            s_logits = student(ctx["normalizer"](xb.to(ctx["device"], non_blocking=True)))
        if method.needs_features:
            feats = (ctx["hook_store"]["student"], feats_t.to(ctx["device"]))
        yb, lb = y[idx].to(ctx["device"]), labeled[idx].to(ctx["device"])
        loss, parts = method(s_logits.float(), None if t_logits is None else t_logits.to(ctx["device"]),
                             yb, lb, T, alpha, feats)
        ctx["optimizer"].zero_grad(set_to_none=True)
        if ctx.get("scaler") is not None:
            ctx["scaler"].scale(loss).backward()
            ctx["scaler"].step(ctx["optimizer"])
            ctx["scaler"].update()
        else:
            loss.backward()
            ctx["optimizer"].step()
        b = len(idx)
        count += b
        sums["loss"] += float(loss.detach()) * b
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v) * b
        correct += int((s_logits.detach().argmax(1) == yb).sum())
        if progress:
            progress(b)
    source is not None and source.flush()
    elapsed = time.perf_counter() - t0
    out = {"epoch": epoch + 1, "T": T, "alpha": alpha, "lr_end": ctx["optimizer"].param_groups[0]["lr"],
           "train_images": count * world, "train_seconds": elapsed,
           "train_ips": count * world / elapsed if elapsed else 0.0,
           "teacher_seconds": teacher_s, "train_top1": 100.0 * correct / max(count, 1)}
    out.update({f"train_{k}": v / max(count, 1) for k, v in sums.items()})
    return out


@torch.no_grad()
def predict_logits(model, normalizer: Normalizer, x: torch.Tensor, device: str = "cpu",
                   batch_size: int = 1000) -> torch.Tensor:
    model.eval()
    outs = [model(normalizer(x[i:i + batch_size].to(device))).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(outs)


def validate(student, normalizer, x_val: torch.Tensor, y_val: torch.Tensor, device: str = "cpu") -> tuple[dict, np.ndarray]:
    logits = predict_logits(student, normalizer, x_val, device)
    loss = float(F.cross_entropy(logits, y_val))
    top1 = float((logits.argmax(1) == y_val).float().mean() * 100)
    return {"val_loss": loss, "val_top1": top1}, logits.numpy()
