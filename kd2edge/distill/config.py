"""The distill config: every key with its default (DEFAULTS), resolved and validated once.

    cfg = resolve_config(load_config_file("x.yaml"), method="kd", epochs=5)

A method's own keys (beta for dkd, feature_weight for hybrid, ...) and their defaults come from its CONFIG
(kd2edge.distill.methods); the names of methods, LR schedules and optimizers from their registries.
"""
from __future__ import annotations

import os
from pathlib import Path

from kd2edge import Kd2EdgeError
from kd2edge.distill.loop import OPTIMIZERS
from kd2edge.distill.methods import METHODS, method_defaults
from kd2edge.distill.schedules import LR_SCHEDULES, check_value_schedule
from kd2edge.files import parse_assignment
from kd2edge.numbers import number

DEFAULTS = {
    "teacher": None, "teacher_arch": None, "teacher_input": None, "teacher_preprocessing": None,
    "teacher_precision": "fp32", "teacher_bf16": None,
    "teacher_check": True, "teacher_min_top1": None, "teacher_check_images": 500,
    "student": "resnet8", "student_kwargs": {}, "student_init": None, "student_init_arch": None,
    "method": "kd",
    "epochs": 10, "batch_size": 256, "lr": None, "optimizer": "sgd", "momentum": 0.9, "nesterov": True,
    "weight_decay": 5e-4, "schedule": "onecycle", "label_smoothing": 0.0,
    "T": 4.0, "alpha": 0.9, **method_defaults(),
    "dataset": "cifar10", "data_dir": None, "limit_train": None, "limit_val": None,
    "labeled_fraction": 1.0, "unlabeled": None, "adapt": None,
    "seed": 0, "deterministic": False, "out": None, "resume": False, "overwrite": False,
    "cache": True, "cache_dir": None, "views_per_image": 8, "augment": True, "pad": 4, "flip": True, "cutout": 0,
    "channels_last": True, "amp": "auto", "device": "auto", "threads": None, "progress": True,
    "latency": True, "val_every": 1,
    "time_budget": None, "cache_fraction": 0.25, "fresh_views": 0.0, "ema": None,
    "low_res_scale": 1.0, "low_res_until": 0.5,
}
# What a budgeted run (time_budget set) uses unless the config or a flag says otherwise (benchmarks/distill.md,
# "Equal wall time"). Keys the user sets win.
BUDGET_RECIPE = {"limit_train": None, "batch_size": 256, "lr": 0.2, "schedule": "onecycle", "label_smoothing": 0.0,
                 "views_per_image": 8, "threads": "auto", "latency": False, "teacher_precision": "auto",
                 "cache_fraction": 0.14, "fresh_views": 0.75, "low_res_scale": 0.75}
# teacher_precision -> what it is; "auto" is decided where the teacher is loaded (distill.inputs.build_teacher)
TEACHER_PRECISIONS = {"auto": "int8 / bf16 / fp32, whichever is fastest here for this method and teacher",
                      "fp32": "PyTorch, float32", "bf16": "PyTorch under bf16 autocast (CPUs with AVX-512 BF16 / AMX)",
                      "int8": "onnxruntime static int8 (kd2edge.distill.teacher_int8)"}
# Keys that may differ between a run and its resumption.
RESUME_FREE = {"epochs", "out", "resume", "overwrite", "progress", "threads", "latency", "data_dir", "cache_dir",
               "val_every"}


# key -> number() bounds; a method's own numeric keys (beta, feature_weight, ...) must be finite and >= 0
NUMBERS = {
    "epochs": {"integer": True, "low": 1}, "batch_size": {"integer": True, "low": 1},
    "val_every": {"integer": True, "low": 1}, "lr": {"low": 0, "low_open": True, "none": True},
    "momentum": {"low": 0, "high": 1, "high_open": True}, "weight_decay": {"low": 0},
    "label_smoothing": {"low": 0, "high": 1, "high_open": True}, "labeled_fraction": {"low": 0, "high": 1},
    "limit_train": {"integer": True, "low": 1, "none": True}, "limit_val": {"integer": True, "low": 1, "none": True},
    "seed": {"integer": True, "low": 0}, "views_per_image": {"integer": True, "low": 1},
    "pad": {"integer": True, "low": 0}, "cutout": {"integer": True, "low": 0},
    "fresh_views": {"low": 0, "high": 1, "high_open": True},
    "low_res_scale": {"low": 0, "low_open": True, "high": 1}, "low_res_until": {"low": 0, "high": 1},
    # threads: a positive integer or "auto", checked below
}


def check_numbers(cfg: dict) -> None:
    """Every numeric key within its range (one error naming key, value and range), in place."""
    bounds = dict(NUMBERS)
    for key, default in method_defaults().items():
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            bounds.setdefault(key, {"low": 0})
    for key, b in bounds.items():
        cfg[key] = number(key, cfg[key], **b)


def bf16_supported() -> bool:
    """Native bf16 on this CPU (AVX-512 BF16 / AMX); oneDNN's ISA limit (ONEDNN_MAX_CPU_ISA) is respected."""
    import torch

    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if isa and ("AVX2" in isa or isa in ("SSE41", "AVX", "AVX512_CORE", "AVX512_CORE_VNNI")):
        return False
    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())


def _choice(cfg: dict, key: str, registry) -> None:
    if cfg[key] not in registry:
        raise Kd2EdgeError(f"unknown {key} {cfg[key]!r}; valid: {', '.join(registry)}")


def resolve_config(config: dict | None = None, **overrides) -> dict:
    """DEFAULTS <- config <- overrides (None values in overrides are ignored); validated."""
    from kd2edge.distill.budget import parse_time_budget

    cfg = dict(DEFAULTS)
    given = {k: v for k, v in overrides.items() if v is not None}
    if given.get("time_budget", (config or {}).get("time_budget")) is not None:
        cfg.update(BUDGET_RECIPE)
    for src in (config or {}, given):
        unknown = sorted(set(src) - set(DEFAULTS))
        if unknown:
            raise Kd2EdgeError(f"unknown distill config key(s): {', '.join(unknown)}; valid: {', '.join(DEFAULTS)}")
        cfg.update(src)
    if cfg["teacher_preprocessing"] is not None:  # the old name of teacher_input
        if cfg["teacher_input"] is not None and cfg["teacher_input"] != cfg["teacher_preprocessing"]:
            raise Kd2EdgeError("teacher_preprocessing is the old name of teacher_input; give only one of them")
        cfg["teacher_input"], cfg["teacher_preprocessing"] = cfg["teacher_preprocessing"], None
    if cfg["teacher_input"] is not None:
        from kd2edge.input_contract import parse_contract

        parse_contract(cfg["teacher_input"])  # fail before any work
    _choice(cfg, "method", METHODS)
    _choice(cfg, "optimizer", OPTIMIZERS)
    _choice(cfg, "schedule", LR_SCHEDULES)
    needs_teacher = METHODS[cfg["method"]].needs_teacher
    if needs_teacher and not cfg["teacher"]:
        raise Kd2EdgeError(f"method {cfg['method']!r} needs a teacher: pass --teacher CKPT|NAME|FILE.onnx "
                           "(or use --method ce for the hard-label baseline)")
    check_numbers(cfg)
    if not needs_teacher and float(cfg["labeled_fraction"]) == 0.0:
        raise Kd2EdgeError(f"method {cfg['method']} with labeled_fraction 0 has nothing to learn from; use a KD method")
    if cfg["adapt"] not in (None, "probe"):
        raise Kd2EdgeError(f"unknown adapt {cfg['adapt']!r}; valid: probe")
    cfg["time_budget"] = parse_time_budget(cfg["time_budget"])
    if cfg["time_budget"] is not None:
        if cfg["resume"]:
            raise Kd2EdgeError("--resume cannot continue a --time-budget run (its schedule follows the clock); "
                               "start a new run")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise Kd2EdgeError("--time-budget runs on one process; drop torchrun or the budget")
        if not 0.0 < float(cfg["cache_fraction"]) < 1.0:
            raise Kd2EdgeError(f"cache_fraction must be in (0, 1), got {cfg['cache_fraction']}")
    if cfg["threads"] not in (None, "auto") and not (isinstance(cfg["threads"], int) and cfg["threads"] >= 1):
        raise Kd2EdgeError(f"threads must be a positive integer or auto, got {cfg['threads']!r}")
    if cfg["teacher_bf16"] is not None:  # the old switch: true/false/auto -> teacher_precision bf16/fp32/auto
        old = cfg["teacher_bf16"]
        cfg["teacher_precision"] = {True: "bf16", False: "fp32", "auto": "auto"}.get(old, old)
        cfg["teacher_bf16"] = None
    _choice(cfg, "teacher_precision", TEACHER_PRECISIONS)
    if cfg["teacher_precision"] == "int8" and (METHODS[cfg["method"]].needs_features or cfg["adapt"]):
        raise Kd2EdgeError("teacher_precision int8 gives logits only; a feature method or adapt=probe needs the "
                           "PyTorch teacher: use teacher_precision bf16, fp32 or auto")
    if cfg["ema"] is not None and not 0.0 < float(cfg["ema"]) < 1.0:
        raise Kd2EdgeError(f"ema must be a decay in (0, 1) such as 0.999, got {cfg['ema']}")
    if cfg["amp"] not in ("auto", True, False):
        raise Kd2EdgeError(f"amp must be auto, true or false, got {cfg['amp']!r}")
    cfg = {k: str(v) if isinstance(v, os.PathLike) else v for k, v in cfg.items()}
    cfg["T"] = check_value_schedule(cfg["T"], "T", low=0, low_open=True)
    cfg["alpha"] = check_value_schedule(cfg["alpha"], "alpha", low=0, high=1)
    cfg["lr"] = float(cfg["lr"] if cfg["lr"] is not None else OPTIMIZERS[cfg["optimizer"]][1])
    cfg["student_kwargs"] = dict(cfg["student_kwargs"] or {})
    if cfg["out"] is None:
        cfg["out"] = str(Path("runs") / "distill" / f"{cfg['student']}-{cfg['method']}-{Path(str(cfg['dataset'])).stem}"
                         f"-s{cfg['seed']}")
    return cfg


def load_config_file(path) -> dict:
    """The distill keys of a YAML file: its mapping, or its `distill:` section."""
    from kd2edge.files import read_yaml_mapping

    data = {k.replace("-", "_"): v for k, v in read_yaml_mapping(path).items()}
    return data.get("distill", data) if isinstance(data.get("distill"), dict) else data


def apply_sets(config: dict, assignments) -> dict:
    """`config` with each `key=value` of `--set` applied (the value parsed as YAML)."""
    out = dict(config)
    for a in assignments:
        key, value = parse_assignment(a)
        out[key.replace("-", "_")] = value
    return out
