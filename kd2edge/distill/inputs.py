"""What one distillation trains with, from its resolved config: where (Env), on which images (label budget,
unlabeled images), from which teacher (adapted by a linear probe when its classes differ) and which
student (fresh, or warm-started from a checkpoint)."""
from __future__ import annotations

import os

import numpy as np
import torch

from kd2edge import Kd2EdgeError
from kd2edge.data import load_dataset, stats_for
from kd2edge.distill.loop import Env
from kd2edge.distill.methods import METHODS


def setup_device(cfg: dict) -> Env:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = cfg["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device == "cuda" else "gloo")
    if cfg["threads"] and cfg["threads"] != "auto":
        torch.set_num_threads(int(cfg["threads"]))
    if cfg["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    amp = cfg["amp"]
    if amp == "auto":  # bf16 autocast on CPUs with native bf16 (AVX-512 BF16 / AMX), fp16 AMP on CUDA
        from kd2edge.distill.config import bf16_supported

        amp = device == "cuda" or bf16_supported()
    return Env(device, world, rank, bool(amp))


def load_data(cfg: dict):
    train = load_dataset(str(cfg["dataset"]), "train", cfg["data_dir"])
    val = load_dataset(str(cfg["dataset"]), "test", cfg["data_dir"], limit=cfg["limit_val"])
    x_full = train.x
    n = min(cfg["limit_train"] or len(train), len(train))
    x, y = train.x[:n], train.y[:n]
    lab = labeled_mask(y, float(cfg["labeled_fraction"]), cfg["seed"])
    if cfg["unlabeled"]:
        extra = load_dataset(str(cfg["unlabeled"]), "train", cfg["data_dir"])
        if extra.x.shape[1:] != x.shape[1:]:
            raise Kd2EdgeError(f"unlabeled images {extra.x.shape[1:]} differ in size from {x.shape[1:]}")
        x_full = x = np.concatenate([x, extra.x])
        y = np.concatenate([y, np.zeros(len(extra), dtype=np.int64)])
        lab = np.concatenate([lab, np.zeros(len(extra), dtype=bool)])
    if not METHODS[cfg["method"]].needs_teacher:  # the baseline trains on the labeled images only
        x, y, lab = x[lab], y[lab], lab[lab]
    return train, val, x_full, x, y, lab


def build_teacher(cfg: dict, train, x_train: np.ndarray, y_train: np.ndarray, lab: np.ndarray, val, log,
                  say=None):
    """Load the teacher (`say` gets the one line naming its input contract and why); check it (the sanity
    gate), or adapt it with a linear probe when its classes differ (and adapt=probe)."""
    from kd2edge.distill.config import bf16_supported
    from kd2edge.distill.teacher import load_teacher
    from kd2edge.distill.teacher_int8 import to_int8, unsupported

    precision = cfg["teacher_precision"]
    bf16 = precision == "bf16" or (precision == "auto" and bf16_supported())
    teacher = load_teacher(cfg["teacher"], cfg["teacher_arch"], bf16, cfg["teacher_input"])
    if say:
        say(f"teacher {teacher.contract_line}")
    if precision == "auto":  # int8 (onnxruntime) where it can serve: a cached logit method and a PyTorch teacher.
        # On x86 without VNNI its weights take 7 bits (no saturation): resnet56 there ran 3.0x the fp32 teacher's
        # forwards/s at 93.34% top-1 (fp32 93.39%; benchmarks/distill.md, "On a real AVX2-only CPU")
        logits_only = cfg["cache"] and not METHODS[cfg["method"]].needs_features and not cfg["adapt"]
        int8 = logits_only and unsupported(teacher) is None
        precision = "int8" if int8 else "bf16" if bf16 else "fp32"
    if precision == "int8":
        teacher = to_int8(teacher, train.x, cfg["cache_dir"],
                          cfg["threads"] if isinstance(cfg["threads"], int) else None, log)
    cfg["teacher_precision"] = precision
    probe = None
    if teacher.num_classes == train.num_classes:
        check_teacher(teacher, val, cfg, log)  # a probe reports its own accuracy instead
    else:
        if cfg["adapt"] != "probe":
            raise Kd2EdgeError(
                f"teacher has {teacher.num_classes} classes but {train.name} has {train.num_classes}; pass "
                "--set adapt=probe to fit a linear probe on the teacher's frozen penultimate features first, "
                "or use a teacher trained on this dataset")
        from kd2edge.distill.probe import fit_probe

        probe = fit_probe(teacher, x_train[lab], y_train[lab], val.x, val.y, train.num_classes, cfg, log)
        teacher.set_head(probe.pop("head"))
    return teacher, probe


def check_teacher(teacher, val, cfg: dict, log) -> float | None:
    """The sanity gate: the teacher's top-1 on the first `teacher_check_images` labeled validation images must
    reach `teacher_min_top1` (default 3x chance), else one error naming the likely cause and the fix.
    Returns the measured top-1 (None when skipped)."""
    from kd2edge.metrics import topk_accuracy

    if not cfg["teacher_check"] or not len(val):
        log("teacher check skipped (--no-teacher-check)" if not cfg["teacher_check"] else
            "teacher check skipped: no labeled validation images")
        return None
    n = min(int(cfg["teacher_check_images"]), len(val))
    x = torch.from_numpy(val.x[:n])
    logits = torch.cat([teacher.logits(x[i:i + 250]) for i in range(0, n, 250)]).numpy()
    top1 = topk_accuracy(logits, val.y[:n])
    chance = 100.0 / val.num_classes
    gate = float(cfg["teacher_min_top1"]) if cfg["teacher_min_top1"] is not None else min(3 * chance, 100.0)
    if top1 < gate:
        raise Kd2EdgeError(
            f"teacher top-1 is {top1:.1f}% on {n} labeled {val.name} {val.split} images (chance {chance:.1f}%, "
            f"gate {gate:.1f}%): its input is probably fed wrong ({teacher.contract_line}) or its classes differ; "
            "pass --teacher-input with the contract it was trained with (raw255, unit, imagenet, cifar10, ... see "
            "docs/TEACHERS.md), or --no-teacher-check (config teacher_check: false) to train anyway")
    log(f"teacher check: top-1 {top1:.1f}% on {n} {val.name} {val.split} images (gate {gate:.1f}%)")
    return top1


def make_student(cfg: dict, num_classes: int, dataset: str, device: str):
    """The student and its normalization: fresh from the zoo (dataset stats), or warm-started from
    `student_init`, a checkpoint (native, or foreign of arch `student_init_arch`) whose preprocessing is kept.
    Same arch: loaded strictly. A deeper net of the same family (resnet20 -> resnet14): every student tensor
    is copied from the tensor of the same name, i.e. the first blocks of each stage (DistilBERT-style
    initialization from the teacher's layers); any student tensor without a match is an error."""
    from kd2edge.checkpoint import load_model
    from kd2edge.zoo import create_model

    torch.manual_seed(cfg["seed"])
    student = create_model(cfg["student"], num_classes, **cfg["student_kwargs"])
    stats, init = stats_for(dataset), None
    if cfg["student_init"]:
        from kd2edge.pretrained import arch_of

        arch = cfg["student_init_arch"] or arch_of(cfg["student_init"]) or cfg["student"]  # e.g. cifar10-resnet20
        model, info = load_model(cfg["student_init"], arch, num_classes,
                                 cfg["student_kwargs"] if arch == cfg["student"] else None)
        if info["source"] == "torchscript":
            raise Kd2EdgeError(f"student_init {cfg['student_init']} is TorchScript; give a state-dict checkpoint")
        src, own = model.state_dict(), student.state_dict()
        bad = [k for k, v in own.items() if k not in src or src[k].shape != v.shape]
        if bad:
            raise Kd2EdgeError(f"student_init {cfg['student_init']} ({info['arch']}) does not cover student "
                               f"{cfg['student']}: no tensor of the same name and shape for {len(bad)} of "
                               f"{len(own)} ({', '.join(bad[:3])}); use a checkpoint of the student's family")
        student.load_state_dict({k: src[k] for k in own})
        pre = info.get("preprocessing") or {}
        stats = {"mean": pre.get("mean", stats["mean"]), "std": pre.get("std", stats["std"])}
        init = {"path": info["path"], "sha256": info["sha256"], "arch": info["arch"],
                "tensors_copied": len(own), "tensors_in_init": len(src)}
    student = student.to(device)
    if cfg["channels_last"]:
        student = student.to(memory_format=torch.channels_last)
    return student, stats, init


def labeled_mask(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A class-stratified random subset of `fraction` of the samples, fixed by `seed`."""
    mask = np.zeros(len(y), dtype=bool)
    if fraction >= 1.0:
        mask[:] = True
        return mask
    rng = np.random.default_rng(seed + 7919)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        mask[rng.permutation(idx)[: int(round(fraction * len(idx)))]] = True
    return mask


def teacher_source(cfg: dict, teacher, env: Env, x_full: np.ndarray, dataset_name: str):
    """Where teacher logits come from: the on-disk cache, or the live teacher (no cache, or a feature
    method, which needs the teacher's activations of every batch)."""
    from kd2edge.distill.teacher_cache import LiveTeacher, TeacherCache

    if not cfg["cache"] or METHODS[cfg["method"]].needs_features:
        return LiveTeacher(teacher, cfg["pad"], cfg["flip"])
    if env.world > 1 and env.rank != 0:
        torch.distributed.barrier()  # rank 0 creates the cache folder first
    name = dataset_name if not cfg["unlabeled"] else f"{dataset_name}+{cfg['unlabeled']}"
    source = TeacherCache(teacher, x_full, name, cfg["views_per_image"], cfg["pad"], cfg["flip"], cfg["cache_dir"])
    if env.world > 1 and env.rank == 0:
        torch.distributed.barrier()
    return source
