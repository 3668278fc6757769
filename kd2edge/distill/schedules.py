"""Schedules over training progress, as plain functions and dict registries.

Value schedules (for T and alpha): a number (constant) or a dict
    {"kind": "constant", "value": v}
    {"kind": "linear", "start": a, "end": b}                # a -> b over training
    {"kind": "exp", "start": a, "end": b}                   # a * (b/a)^p, geometric from a to b
    {"kind": "exp", "start": a, "rate": r}                  # a * r^epoch  (exponential decay per epoch)
evaluated at `progress` p in [0, 1] (epoch / (epochs - 1)) or per `epoch` for "rate".

Learning-rate schedules (multipliers of the base lr, evaluated per optimizer step):
    constant, cosine, onecycle (linear warm-up over 25% then linear anneal, airbench style), step
    (x0.1 at 50% and 75% of training).
"""
from __future__ import annotations

import math

from kd2edge import Kd2EdgeError


def _constant(spec, progress, epoch):
    return float(spec["value"])


def _linear(spec, progress, epoch):
    return float(spec["start"]) + (float(spec["end"]) - float(spec["start"])) * progress


def _exp(spec, progress, epoch):
    start = float(spec["start"])
    if "rate" in spec:
        return start * float(spec["rate"]) ** epoch
    end = float(spec["end"])
    if start <= 0 or end <= 0:
        raise Kd2EdgeError(f"exp schedule needs positive start and end, got {spec}")
    return start * (end / start) ** progress


VALUE_SCHEDULES = {"constant": _constant, "linear": _linear, "exp": _exp}


def check_value_schedule(spec, name: str, **bounds):
    """Validate a T/alpha spec (its values within `bounds`, see kd2edge.numbers.number); returns it
    normalized to a dict."""
    from kd2edge.numbers import number

    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return {"kind": "constant", "value": number(name, spec, **bounds)}
    if not isinstance(spec, dict) or spec.get("kind") not in VALUE_SCHEDULES:
        raise Kd2EdgeError(f"{name} must be a number or a dict with kind in {', '.join(VALUE_SCHEDULES)}; "
                           f"got {spec!r} (e.g. {{kind: exp, start: 8, end: 2}})")
    need = {"constant": ["value"], "linear": ["start", "end"], "exp": ["start"]}[spec["kind"]]
    if spec["kind"] == "exp" and "end" not in spec and "rate" not in spec:
        need = need + ["end or rate"]
    missing = [k for k in need if k not in spec]
    if missing:
        raise Kd2EdgeError(f"{name} schedule {spec!r} lacks {', '.join(missing)}")
    spec = dict(spec)
    for key in ("value", "start", "end"):
        if key in spec:
            spec[key] = number(f"{name}.{key}", spec[key], **bounds)
    if "rate" in spec:
        spec["rate"] = number(f"{name}.rate", spec["rate"], low=0, low_open=True)
    return spec


def value_at(spec, epoch: int, epochs: int, progress: float | None = None) -> float:
    """The value at `epoch` of `epochs`, or at a given `progress` in [0, 1] (time-budgeted runs)."""
    spec = check_value_schedule(spec, "schedule")
    if progress is None:
        progress = epoch / (epochs - 1) if epochs > 1 else 0.0
    return VALUE_SCHEDULES[spec["kind"]](spec, progress, epoch)


def _lr_constant(p):
    return 1.0


def _lr_cosine(p):
    return 0.5 * (1 + math.cos(math.pi * p))


def _lr_onecycle(p, warm=0.25):
    return p / warm if p < warm else max(0.0, (1 - p) / (1 - warm))


def _lr_step(p):
    return 1.0 if p < 0.5 else (0.1 if p < 0.75 else 0.01)


LR_SCHEDULES = {"constant": _lr_constant, "cosine": _lr_cosine, "onecycle": _lr_onecycle, "step": _lr_step}


def lr_multiplier(kind: str, step: int, total_steps: int) -> float:
    if kind not in LR_SCHEDULES:
        raise Kd2EdgeError(f"unknown lr schedule {kind!r}; valid: {', '.join(LR_SCHEDULES)}")
    p = min(1.0, (step + 1) / max(1, total_steps))
    return LR_SCHEDULES[kind](p)
