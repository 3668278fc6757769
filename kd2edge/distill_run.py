"""Set up and run one distillation from a resolved config (kd2edge.distill.resolve_config)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from kd2edge import Kd2EdgeError
from kd2edge.batches import Normalizer
from kd2edge.data import load_dataset, stats_for


def setup_device(cfg: dict) -> dict:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = cfg["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device == "cuda" else "gloo")
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    if cfg["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    amp = cfg["amp"]
    if amp == "auto":  # bf16 autocast on CPUs with native bf16 (AVX-512 BF16 / AMX), fp16 AMP on CUDA
        amp = device == "cuda" or bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())
    return {"device": device, "world": world, "rank": rank, "amp": bool(amp)}


def load_data(cfg: dict):
    train = load_dataset(str(cfg["dataset"]), "train", cfg["data_dir"])
    val = load_dataset(str(cfg["dataset"]), "test", cfg["data_dir"], limit=cfg["limit_val"])
    x_full = train.x
    n = min(cfg["limit_train"] or len(train), len(train))
    x, y = train.x[:n], train.y[:n]
    from kd2edge.distill import labeled_mask

    lab = labeled_mask(y, float(cfg["labeled_fraction"]), cfg["seed"])
    if cfg["unlabeled"]:
        extra = load_dataset(str(cfg["unlabeled"]), "train", cfg["data_dir"])
        if extra.x.shape[1:] != x.shape[1:]:
            raise Kd2EdgeError(f"unlabeled images {extra.x.shape[1:]} differ in size from {x.shape[1:]}")
        x_full = x = np.concatenate([x, extra.x])
        y = np.concatenate([y, np.zeros(len(extra), dtype=np.int64)])
        lab = np.concatenate([lab, np.zeros(len(extra), dtype=bool)])
    if cfg["method"] == "ce":  # the baseline trains on the labeled images only
        x, y, lab = x[lab], y[lab], lab[lab]
    return train, val, x_full, x, y, lab


def build_teacher(cfg: dict, train, x_train: np.ndarray, y_train: np.ndarray, lab: np.ndarray, val, log):
    """Load the teacher; adapt it with a linear probe when its classes differ (and adapt=probe)."""
    from kd2edge.teacher_sources import load_teacher

    teacher = load_teacher(cfg["teacher"], cfg["teacher_arch"], cfg["teacher_bf16"], cfg["teacher_preprocessing"])
    probe = None
    if teacher.num_classes != train.num_classes:
        if cfg["adapt"] != "probe":
            raise Kd2EdgeError(
                f"teacher has {teacher.num_classes} classes but {train.name} has {train.num_classes}; pass "
                "--adapt probe to fit a linear probe on the teacher's frozen penultimate features first, "
                "or use a teacher trained on this dataset")
        from kd2edge.probe import fit_probe

        probe = fit_probe(teacher, x_train[lab], y_train[lab], val.x, val.y, train.num_classes, cfg, log)
        teacher.set_head(probe.pop("head"))
    return teacher, probe


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
        from kd2edge.teachers import TEACHERS

        known = TEACHERS.get(str(cfg["student_init"]))  # e.g. cifar10-resnet20
        arch = cfg["student_init_arch"] or (known[0] if known else cfg["student"])
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


def make_method(cfg: dict, student, teacher, hook_store: dict, device: str):
    from kd2edge.methods import create_method
    from kd2edge.teacher_sources import TorchTeacher, default_feature_layer, feature_hook

    kw = {"label_smoothing": cfg["label_smoothing"]}
    if cfg["method"] in ("kd", "dkd", "hybrid"):
        kw["standardize"] = cfg["standardize"]
    if cfg["method"] == "dkd":
        kw.update(beta=cfg["beta"], tckd_weight=cfg["tckd_weight"])
    if cfg["method"] == "hybrid":
        if not isinstance(teacher, TorchTeacher):
            raise Kd2EdgeError("method hybrid needs teacher features; an ONNX teacher gives logits only "
                               "(use kd/dkd, or a PyTorch/TorchScript teacher)")
        layers = cfg["feature_layers"] or {}
        s_layer = layers.get("student") or default_feature_layer(student)
        t_layer = layers.get("teacher") or default_feature_layer(teacher.model)
        feature_hook(student, s_layer, hook_store, "student")
        feature_hook(teacher.model, t_layer, hook_store, "teacher")
        student.eval()
        with torch.no_grad():
            student(torch.zeros(2, 3, 32, 32, device=device))
            teacher.logits(torch.zeros(2, 32, 32, 3, dtype=torch.uint8))
        student.train()
        kw.update(student_channels=hook_store["student"].shape[1], teacher_channels=hook_store["teacher"].shape[1],
                  feature_weight=cfg["feature_weight"])
    return create_method(cfg["method"], **kw).to(device)


def run(cfg: dict) -> dict:
    from kd2edge.distill import finish_run_dir, load_state, save_state
    from kd2edge.distill_report import progress_bar, teacher_eval_logits, write_outputs
    from kd2edge.teacher_cache import LiveTeacher, TeacherCache
    from kd2edge.training import make_optimizer, steps_per_epoch, train_epoch, validate

    env = setup_device(cfg)
    rank0 = env["rank"] == 0
    log = (lambda m: print(m, flush=True)) if rank0 and cfg["progress"] else (lambda m: None)
    out = Path(cfg["out"])
    partial = out.with_name(out.name + ".partial")
    train, val, x_full, x_np, y_np, lab_np = load_data(cfg)
    teacher, probe, source = None, None, None
    if cfg["method"] != "ce":
        teacher, probe = build_teacher(cfg, train, x_np, y_np, lab_np, val, log)
        if not cfg["cache"] or cfg["method"] == "hybrid":
            source = LiveTeacher(teacher, cfg["pad"], cfg["flip"])
        else:
            if env["world"] > 1 and not rank0:
                torch.distributed.barrier()  # rank 0 creates the cache folder first
            source = TeacherCache(teacher, x_full, train.name if not cfg["unlabeled"] else
                                  f"{train.name}+{cfg['unlabeled']}", cfg["views_per_image"], cfg["pad"],
                                  cfg["flip"], cfg["cache_dir"])
            if env["world"] > 1 and rank0:
                torch.distributed.barrier()
    device = env["device"]
    student, stats, init = make_student(cfg, train.num_classes, train.name, device)
    hook_store: dict = {}
    method = make_method(cfg, student, teacher, hook_store, device)
    normalizer = Normalizer(stats["mean"], stats["std"], channels_last=True).to(device)
    model = student
    if env["world"] > 1:
        model = torch.nn.parallel.DistributedDataParallel(student)
    params = list(student.parameters()) + list(method.parameters())
    optimizer = make_optimizer(params, cfg)
    local_batch = max(1, cfg["batch_size"] // env["world"])
    num_slots = source.p if source is not None else (2 if cfg["flip"] else 1) * (2 * cfg["pad"] + 1) ** 2
    ctx = {"cfg": cfg, "student": model, "method": method, "source": source, "teacher": teacher,
           "x": torch.from_numpy(x_np), "y": torch.from_numpy(y_np), "labeled": torch.from_numpy(lab_np),
           "normalizer": normalizer, "optimizer": optimizer, "device": device, "amp": env["amp"],
           "world": env["world"], "rank": env["rank"], "local_batch": local_batch, "num_slots": num_slots,
           "hook_store": hook_store, "steps_per_epoch": steps_per_epoch(len(y_np), local_batch, env["world"]),
           "scaler": torch.amp.GradScaler("cuda") if env["amp"] and device == "cuda" else None}
    history, start, best = [], 0, None
    state = load_state(partial / "state.pt", cfg) if cfg["resume"] else None
    if state is not None:
        student.load_state_dict(state["student"])
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        history, start, best = state["history"], state["epoch"], state["best"]
        log(f"resuming {partial} after epoch {start}")
    elif rank0:
        if partial.exists():
            import shutil

            shutil.rmtree(partial)
        partial.mkdir(parents=True)
    x_val, y_val = torch.from_numpy(val.x), torch.from_numpy(val.y)
    val_logits = None
    with progress_bar(rank0 and cfg["progress"]) as bar:
        for epoch in range(start, cfg["epochs"]):
            advance = bar(f"epoch {epoch + 1}/{cfg['epochs']}", ctx["steps_per_epoch"] * local_batch * env["world"])
            row = train_epoch(ctx, epoch, lambda b: advance(b * env["world"]))
            if (epoch + 1) % cfg["val_every"] == 0 or epoch + 1 == cfg["epochs"]:
                row.update(validate(student, normalizer, x_val, y_val, device)[0])
            if source is not None:
                row.update({"cache_hits": source.hits, "cache_misses": source.misses})
            history.append(row)
            if "val_top1" in row and (best is None or row["val_top1"] > best["val_top1"]):
                best = dict(row)
            if rank0:
                save_state(partial / "state.pt", {"student": student.state_dict(), "method": method.state_dict(),
                                                  "optimizer": optimizer.state_dict(), "history": history,
                                                  "epoch": epoch + 1, "best": best, "config": cfg})
                shown = f" val top-1 {row['val_top1']:.2f}%" if "val_top1" in row else ""
                log(f"epoch {epoch + 1}: train loss {row['train_loss']:.4f}{shown} ({row['train_ips']:.0f} img/s)")
    if env["world"] > 1:
        torch.distributed.barrier()
    if not rank0:
        return {"checkpoint": str(out / "student.pt"), "run_dir": str(out), "metrics": {}}
    _, val_logits = validate(student, normalizer, x_val, y_val, device)
    t_val = teacher_eval_logits(teacher, val.x, cfg) if teacher is not None else None
    metrics = write_outputs(partial, cfg, student.cpu(), train, val, history, best, val_logits, teacher, t_val,
                            probe, source, stats, init)
    finish_run_dir(partial, out)
    return {"checkpoint": str(out / "student.pt"), "run_dir": str(out), "metrics": metrics}
