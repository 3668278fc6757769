"""The distillation training loop: whole-tensor batches from in-memory uint8 images (kd2edge.batches),
teacher logits from the cache or the live teacher, one optimizer step per batch.

Determinism: the batch order and the per-image view choice of epoch e come from generators seeded with
(seed, e), so a run resumed at an epoch boundary replays exactly what an uninterrupted run does.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from kd2edge import Kd2EdgeError
from kd2edge.batches import Normalizer, apply_views, cutout, iterate, low_res, num_views
from kd2edge.distill.schedules import LR_SCHEDULES, lr_multiplier, value_at
from kd2edge.metrics import topk_accuracy


def _sgd(params, cfg: dict):
    return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], nesterov=cfg["nesterov"],
                           weight_decay=cfg["weight_decay"])


def _adamw(params, cfg: dict):
    return torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


# name -> (factory(params, cfg), default lr)
OPTIMIZERS = {"sgd": (_sgd, 0.1), "adamw": (_adamw, 2e-3)}


def make_optimizer(params, cfg: dict):
    return OPTIMIZERS[cfg["optimizer"]][0](params, cfg)


@dataclass
class Env:
    """Where a run trains: device, DDP world and rank, mixed precision."""
    device: str = "cpu"
    world: int = 1
    rank: int = 0
    amp: bool = False

    def __post_init__(self):
        self.scaler = torch.amp.GradScaler("cuda") if self.amp and self.device == "cuda" else None


class TrainSet(NamedTuple):
    """The training images (uint8 NHWC), labels and the labeled mask (label budget / unlabeled images)."""
    x: torch.Tensor
    y: torch.Tensor
    labeled: torch.Tensor


def epoch_generators(seed: int, epoch: int):
    return (torch.Generator().manual_seed(seed * 1_000_003 + 2 * epoch),
            torch.Generator().manual_seed(seed * 1_000_003 + 2 * epoch + 1))


def make_ema(model, decay: float):
    """Exponential moving average of the weights and BN buffers (torch.optim.swa_utils)."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(float(decay)), use_buffers=True)


@torch.no_grad()
def refresh_bn(model, normalizer: Normalizer, x: torch.Tensor, cfg: dict, device: str = "cpu", amp: bool = False,
               batch_size: int = 500) -> None:
    """Recompute every BatchNorm's running statistics as the plain average over `x` (uint8 NHWC) shown as
    training shows it (one random view per image when cfg augments). An exponential moving average of the
    weights needs this: the average of the BN buffers is not the statistics of the averaged weights (fastcnn,
    60 min: 89.99% with averaged buffers, 90.56% recomputed; benchmarks/distill.md)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    was_training = model.training
    model.train()
    gen = torch.Generator().manual_seed(cfg["seed"] * 1_000_003 - 1)
    for idx in iterate(len(x), batch_size, False):
        xb = x[idx]
        if cfg["augment"]:
            xb = apply_views(xb, torch.randint(0, num_views(cfg["pad"], cfg["flip"]), (len(idx),), generator=gen),
                             cfg["pad"])
        with autocast(device, amp):
            model(normalizer(xb.to(device)))
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    model.train(was_training)


def autocast(device: str, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=torch.bfloat16 if device == "cpu" else torch.float16)


def local_batch(cfg: dict, env: Env) -> int:
    return max(1, cfg["batch_size"] // env.world)


def steps_per_epoch(n: int, batch_size: int, world: int = 1) -> int:
    per_rank = n // world
    return max(1, per_rank // batch_size) if per_rank >= batch_size else 1


def train_epoch(epoch: int, cfg: dict, env: Env, student, normalizer: Normalizer, method, source, optimizer,
                data: TrainSet, progress=None, clock=None, tuner=None, ema=None) -> dict:
    """One epoch. `student` may be DDP-wrapped; `source` gives teacher logits (TeacherCache, LiveTeacher or
    None for ce); `progress(n)` is called after each batch of n local images. A time-budgeted run passes its
    `clock` (kd2edge.distill.budget.Clock): the LR, T and alpha then follow the elapsed fraction of the training
    time and the epoch ends early when the time is up. `tuner` (ThreadTuner) gets every step's wall time;
    `ema` (make_ema) is updated after every step."""
    n, bs, device = len(data.y), local_batch(cfg, env), env.device
    steps = steps_per_epoch(n, bs, env.world)
    order_gen, view_gen = epoch_generators(cfg["seed"], epoch)
    num_slots = source.p if source is not None else num_views(cfg["pad"], cfg["flip"])
    slots = torch.randint(0, num_slots, (n,), generator=view_gen)
    fresh = None
    if cfg.get("fresh_views") and getattr(source, "cache_only", False):
        # a budgeted kd run caches 1-2 teacher views per image, which a fast student would see many times over: a
        # fraction of the samples is shown as a new random view instead, taught with the logits of the image's
        # cached view (nearly consistent; beats labels-only for them: benchmarks/distill.md, "Equal wall time")
        fresh = (torch.rand(n, generator=view_gen) < float(cfg["fresh_views"]),
                 torch.randint(0, num_views(cfg["pad"], cfg["flip"]), (n,), generator=view_gen))
    # cutout squares on the student's input only (drawn last, so the draws above do not change with it): the
    # teacher's logits stay those of the whole view, cached or live
    side = int(cfg.get("cutout") or 0) if cfg["augment"] else 0
    centers = torch.randint(0, 1 << 30, (n, 2), generator=view_gen) % torch.tensor(data.x.shape[1:3]) if side else None
    progress0 = clock.progress() if clock is not None else None
    T = value_at(cfg["T"], epoch, cfg["epochs"], progress0)
    alpha = value_at(cfg["alpha"], epoch, cfg["epochs"], progress0)
    total_steps = cfg["epochs"] * steps
    student.train()
    method.train()
    sums, count, correct, teacher_s = {"loss": 0.0}, 0, 0, 0.0
    t0 = time.perf_counter()
    drop_last = n // env.world >= bs
    for step, idx in enumerate(iterate(n, bs, True, order_gen, drop_last, env.rank, env.world)):
        if clock is not None:
            if clock.training_done():
                break
            done = clock.progress()
            mult = LR_SCHEDULES[cfg["schedule"]](done)
        else:
            done = (epoch * steps + step) / total_steps
            mult = lr_multiplier(cfg["schedule"], epoch * steps + step, total_steps)
        # progressive resizing: the first low_res_until of training on images scaled by low_res_scale (the
        # teacher's logits are those of the full-size view)
        scale = cfg["low_res_scale"] if done < cfg["low_res_until"] else 1.0
        ts = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = cfg["lr"] * mult
        slot = slots[idx]
        views = source.views(idx, slot) if source is not None else slot
        if fresh is not None:
            views = torch.where(fresh[0][idx], fresh[1][idx], views)
        xb = apply_views(data.x[idx], views, cfg["pad"]) if cfg["augment"] else data.x[idx]
        t_logits = None
        tt = time.perf_counter()
        if method.needs_teacher:  # the live teacher of a feature method also fills the method's hooks
            t_logits = source.logits(idx, slot, xb)
        teacher_s += time.perf_counter() - tt
        with autocast(device, env.amp):
            inp = normalizer(xb.to(device, non_blocking=True))
            s_logits = student(low_res(cutout(inp, centers[idx], side) if side else inp, scale))
        feats = method.features(device) if method.needs_features else None
        yb, lb = data.y[idx].to(device), data.labeled[idx].to(device)
        loss, parts = method(s_logits.float(), None if t_logits is None else t_logits.to(device), yb, lb, T, alpha,
                             feats)
        if not torch.isfinite(loss.detach()):  # stop before the step: the last saved epoch stays good
            raise Kd2EdgeError(f"training diverged: the loss is {float(loss.detach())} at epoch {epoch + 1}, step "
                               f"{step + 1}; likely causes: lr {cfg['lr']:g} too high, T/alpha extreme, or non-finite "
                               "teacher logits (delete the teacher cache); the state of the last finished epoch is "
                               "kept in <out>.partial")
        optimizer.zero_grad(set_to_none=True)
        if env.scaler is not None:
            env.scaler.scale(loss).backward()
            env.scaler.step(optimizer)
            env.scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if ema is not None:
            ema.update_parameters(student)
        b = len(idx)
        count += b
        sums["loss"] += float(loss.detach()) * b
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v) * b
        correct += int((s_logits.detach().argmax(1) == yb).sum())
        if tuner is not None or clock is not None:
            dt = time.perf_counter() - ts
            if tuner is not None:
                tuner.step_time(dt, clock is None or clock.training_left() > max(15.0, 20 * dt))
            if clock is not None:
                clock.observe(b, dt)
        if progress:
            progress(b)
    source is not None and source.flush()
    elapsed = time.perf_counter() - t0
    out = {"epoch": epoch + 1, "T": T, "alpha": alpha, "lr_end": optimizer.param_groups[0]["lr"],
           "train_images": count * env.world, "train_seconds": elapsed,
           "train_ips": count * env.world / elapsed if elapsed else 0.0,
           "teacher_seconds": teacher_s, "train_top1": 100.0 * correct / max(count, 1),
           "threads": torch.get_num_threads()}
    out.update({f"train_{k}": v / max(count, 1) for k, v in sums.items()})
    return out


@torch.no_grad()
def predict_logits(model, normalizer: Normalizer, x: torch.Tensor, device: str = "cpu",
                   batch_size: int = 1000, amp: bool = False) -> torch.Tensor:
    """Logits in eval mode; `amp` runs the forward under bf16 autocast (CPU) / fp16 (CUDA)."""
    model.eval()
    with autocast(device, amp):
        outs = [model(normalizer(x[i:i + batch_size].to(device))).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(outs)


def validate(student, normalizer, x_val: torch.Tensor, y_val: torch.Tensor, device: str = "cpu",
             amp: bool = False) -> tuple[dict, np.ndarray]:
    logits = predict_logits(student, normalizer, x_val, device, amp=amp)
    loss = float(F.cross_entropy(logits, y_val))
    top1 = topk_accuracy(logits.numpy(), y_val.numpy())
    return {"val_loss": loss, "val_top1": top1}, logits.numpy()
