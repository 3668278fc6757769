"""`kd2edge distill`: train a compact student from a teacher (or from hard labels, method "ce").

    from kd2edge.distill import distill
    result = distill({"teacher": "cifar10-resnet56", "student": "resnet8", "method": "kd", "epochs": 5})
    # -> {"checkpoint": ".../student.pt", "run_dir": "...", "metrics": {"best": {...}, "last": {...}}}

The run folder is built in `<out>.partial/` (a resumable state after every epoch, written atomically)
and renamed to `<out>` when training ends. Outputs: student.pt (native checkpoint), config.json, history.csv,
metrics.json, curves.png, confusion.png, summary.md. See DEFAULTS for every config key.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import torch

from kd2edge import Kd2EdgeError
from kd2edge.paths import atomic_write

DEFAULTS = {
    "teacher": None, "teacher_arch": None, "teacher_preprocessing": None, "teacher_bf16": False,
    "student": "resnet8", "student_kwargs": {}, "student_init": None, "student_init_arch": None,
    "method": "kd",
    "epochs": 10, "batch_size": 256, "lr": None, "optimizer": "sgd", "momentum": 0.9, "nesterov": True,
    "weight_decay": 5e-4, "schedule": "onecycle", "label_smoothing": 0.0,
    "T": 4.0, "alpha": 0.9, "beta": 8.0, "tckd_weight": 1.0, "standardize": False,
    "feature_weight": 0.1, "feature_layers": None,
    "dataset": "cifar10", "data_dir": None, "limit_train": None, "limit_val": None,
    "labeled_fraction": 1.0, "unlabeled": None, "adapt": None,
    "seed": 0, "deterministic": False, "out": None, "resume": False, "overwrite": False,
    "cache": True, "cache_dir": None, "views_per_image": 8, "augment": True, "pad": 4, "flip": True,
    "channels_last": True, "amp": "auto", "device": "auto", "threads": None, "progress": True,
    "latency": True, "val_every": 1,
}
DEFAULT_LR = {"sgd": 0.1, "adamw": 2e-3}
# Keys that may differ between a run and its resumption.
RESUME_FREE = {"epochs", "out", "resume", "overwrite", "progress", "threads", "latency", "data_dir", "cache_dir",
               "val_every"}


def resolve_config(config: dict | None = None, **overrides) -> dict:
    """DEFAULTS <- config <- overrides (None values in overrides are ignored); validated."""
    from kd2edge.methods import METHODS
    from kd2edge.schedules import LR_SCHEDULES, check_value_schedule
    from kd2edge.training import OPTIMIZERS

    cfg = dict(DEFAULTS)
    for src in (config or {}, {k: v for k, v in overrides.items() if v is not None}):
        unknown = sorted(set(src) - set(DEFAULTS))
        if unknown:
            raise Kd2EdgeError(f"unknown distill config key(s): {', '.join(unknown)}; valid: {', '.join(DEFAULTS)}")
        cfg.update(src)
    if cfg["method"] not in METHODS:
        raise Kd2EdgeError(f"unknown method {cfg['method']!r}; valid: {', '.join(METHODS)}")
    if cfg["optimizer"] not in OPTIMIZERS:
        raise Kd2EdgeError(f"unknown optimizer {cfg['optimizer']!r}; valid: {', '.join(OPTIMIZERS)}")
    if cfg["schedule"] not in LR_SCHEDULES:
        raise Kd2EdgeError(f"unknown schedule {cfg['schedule']!r}; valid: {', '.join(LR_SCHEDULES)}")
    if cfg["method"] != "ce" and not cfg["teacher"]:
        raise Kd2EdgeError(f"method {cfg['method']!r} needs a teacher: pass --teacher CKPT|NAME|FILE.onnx "
                           "(or use --method ce for the hard-label baseline)")
    for key in ("epochs", "batch_size", "val_every"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise Kd2EdgeError(f"{key} must be a positive integer, got {cfg[key]!r}")
    if not 0.0 <= float(cfg["labeled_fraction"]) <= 1.0:
        raise Kd2EdgeError(f"labeled_fraction must be in [0, 1], got {cfg['labeled_fraction']}")
    if cfg["method"] == "ce" and float(cfg["labeled_fraction"]) == 0.0:
        raise Kd2EdgeError("method ce with labeled_fraction 0 has nothing to learn from; use a KD method")
    if cfg["adapt"] not in (None, "probe"):
        raise Kd2EdgeError(f"unknown adapt {cfg['adapt']!r}; valid: probe")
    if cfg["amp"] not in ("auto", True, False):
        raise Kd2EdgeError(f"amp must be auto, true or false, got {cfg['amp']!r}")
    cfg = {k: str(v) if isinstance(v, os.PathLike) else v for k, v in cfg.items()}
    cfg["T"] = check_value_schedule(cfg["T"], "T")
    cfg["alpha"] = check_value_schedule(cfg["alpha"], "alpha")
    cfg["lr"] = float(cfg["lr"] if cfg["lr"] is not None else DEFAULT_LR[cfg["optimizer"]])
    cfg["student_kwargs"] = dict(cfg["student_kwargs"] or {})
    if cfg["out"] is None:
        cfg["out"] = str(Path("runs") / "distill" / f"{cfg['student']}-{cfg['method']}-{Path(str(cfg['dataset'])).stem}"
                         f"-s{cfg['seed']}")
    return cfg


def load_config_file(path) -> dict:
    from kd2edge.paths import read_yaml_mapping

    data = {k.replace("-", "_"): v for k, v in read_yaml_mapping(path).items()}
    return data.get("distill", data) if isinstance(data.get("distill"), dict) else data


def distill(config: dict | None = None, **overrides) -> dict:
    """Run a distillation; returns {"checkpoint", "run_dir", "metrics"}. See the module docstring."""
    from kd2edge.distill_run import run

    cfg = resolve_config(config, **overrides)
    out = Path(cfg["out"])
    if out.exists():
        if cfg["resume"] and (out / "metrics.json").exists():
            import json

            return {"checkpoint": str(out / "student.pt"), "run_dir": str(out),
                    "metrics": json.loads((out / "metrics.json").read_text()), "resumed_finished": True}
        if not cfg["overwrite"]:
            raise Kd2EdgeError(f"{out} already exists; pass --overwrite to replace it, --resume to reuse it, "
                               "or choose another --out")
    return run(cfg)


def finish_run_dir(partial: Path, out: Path) -> None:
    """Rename the finished partial folder into place (replacing an old run when overwriting)."""
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(partial, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, out)


def save_state(path: Path, state: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path, cfg: dict) -> dict | None:
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    old = {k: v for k, v in state["config"].items() if k not in RESUME_FREE}
    new = {k: v for k, v in cfg.items() if k not in RESUME_FREE}
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        raise Kd2EdgeError(f"cannot resume {path.parent}: its config differs in {', '.join(diff)}; use the same "
                           "settings or another --out")
    return state


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
