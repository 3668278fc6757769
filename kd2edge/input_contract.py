"""The input contract of a model: what it expects to be fed, and the one place it is applied. No torch.

A contract is a plain dict (the same keys as a checkpoint's `preprocessing` record, docs/CONTRACTS.md):

    {"name": "imagenet", "layout": "NCHW", "range": 1, "mean": [...], "std": [...], "channel_order": "RGB",
     "input_size": [3, 32, 32] | None}

The model input is `(pixels / 255 - mean) / std` in `layout` and `channel_order`: mean and std are ALWAYS on
[0, 1] pixels, so `raw255` (0..255 values, normalization inside the model) is mean 0, std 1/255 and `unit`
([0, 1] values) is mean 0, std 1. `range` only says which of the two scales explicit values were given in.

    contract = parse_contract("unit")                           # a preset of PRESETS
    contract = parse_contract("range=255,mean=123.7,116.3,103.5,std=58.4,57.1,57.4,layout=NHWC,order=BGR")
    x = apply_contract(x_uint8_nhwc, contract)                   # float32, what the model takes
    contract, why = resolve_contract(spec, recorded, default)    # the flag, else the file's record, else a guess
"""
from __future__ import annotations

import numpy as np

from kd2edge import Kd2EdgeError
from kd2edge.data import STATS

LAYOUTS = ("NCHW", "NHWC")
ORDERS = ("RGB", "BGR")


def _preset(mean, std, note: str) -> dict:
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std], "note": note}


# Named contracts (NCHW RGB unless a flag says otherwise); mean/std on [0, 1] pixels.
PRESETS = {
    "raw255": _preset((0, 0, 0), (1 / 255,) * 3, "pixels 0..255, normalization inside the model (kd2edge exports)"),
    "unit": _preset((0, 0, 0), (1, 1, 1), "pixels scaled to [0, 1], normalization inside the model"),
    "imagenet": _preset(STATS["imagenet"]["mean"], STATS["imagenet"]["std"],
                        "[0, 1] pixels normalized with ImageNet mean/std (torchvision, timm, the shared teachers)"),
    "cifar10": _preset(STATS["cifar10"]["mean"], STATS["cifar10"]["std"], "[0, 1] pixels, CIFAR-10 mean/std"),
    "cifar100": _preset(STATS["cifar100"]["mean"], STATS["cifar100"]["std"], "[0, 1] pixels, CIFAR-100 mean/std"),
    "symmetric": _preset((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "pixels scaled to [-1, 1] (mean 0.5, std 0.5)"),
}
KEYS = ("preset", "layout", "range", "mean", "std", "order", "size")


def make_contract(mean, std, layout: str = "NCHW", channel_order: str = "RGB", input_size=None,
                  name: str | None = None) -> dict:
    mean, std = [float(v) for v in mean], [float(v) for v in std]
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise Kd2EdgeError(f"an input contract needs 3 means and 3 positive stds, got mean {mean} std {std}")
    if layout not in LAYOUTS or channel_order not in ORDERS:
        raise Kd2EdgeError(f"input layout must be one of {', '.join(LAYOUTS)} and channel order one of "
                           f"{', '.join(ORDERS)}; got {layout}, {channel_order}")
    return {"name": name, "layout": layout, "range": 255 if name == "raw255" else 1, "mean": mean, "std": std,
            "channel_order": channel_order, "input_size": list(input_size) if input_size else None}


def _floats(text, key: str) -> list[float]:
    try:
        vals = [float(v) for v in text] if isinstance(text, (list, tuple)) else \
            [float(v) for v in str(text).replace("/", ",").split(",") if v.strip()]
    except ValueError:
        raise Kd2EdgeError(f"input contract {key}={text!r}: expected numbers") from None
    return vals * 3 if len(vals) == 1 else vals


def parse_contract(spec, input_size=None) -> dict:
    """A contract from a preset name, a `key=value,...` string (keys: preset, layout, range, mean, std, order,
    size), a dict with those keys (YAML), or a checkpoint's preprocessing record."""
    if spec is None:
        raise Kd2EdgeError("no input contract given")
    if isinstance(spec, dict) and ("channel_order" in spec or not {"range", "order", "preset", "size"} & set(spec)):
        # a recorded contract / checkpoint preprocessing (or the old teacher_preprocessing {mean, std}): [0, 1] scale
        return make_contract(spec["mean"], spec["std"], spec.get("layout", "NCHW"), spec.get("channel_order", "RGB"),
                             spec.get("input_size") or input_size, spec.get("name"))
    if isinstance(spec, str) and "=" not in spec:
        if spec not in PRESETS:
            raise Kd2EdgeError(f"unknown input contract {spec!r}; presets: {', '.join(PRESETS)}, or explicit "
                               "values such as 'range=1,mean=0.5,std=0.5,layout=NHWC,order=BGR' (docs/TEACHERS.md)")
        return make_contract(PRESETS[spec]["mean"], PRESETS[spec]["std"], input_size=input_size, name=spec)
    items = dict(spec) if isinstance(spec, dict) else {}
    if isinstance(spec, str):  # key=value pairs; mean/std values may run on after a comma: mean=0.5,0.4,0.3
        key = None
        for part in spec.split(","):
            if "=" in part:
                key, value = (s.strip() for s in part.split("=", 1))
                items[key] = value
            elif key in ("mean", "std"):
                items[key] += "," + part.strip()
            else:
                raise Kd2EdgeError(f"input contract {spec!r}: cannot read {part!r}; write key=value pairs")
    preset = items.pop("preset", None)
    if preset is not None and preset not in PRESETS:
        raise Kd2EdgeError(f"unknown input contract preset {preset!r}; presets: {', '.join(PRESETS)}")
    base = PRESETS[preset] if preset else {"mean": [0.0] * 3, "std": [1.0] * 3}
    unknown = sorted(set(items) - set(KEYS) - {"input_size"})
    if unknown:
        raise Kd2EdgeError(f"unknown input contract key(s) {', '.join(unknown)}; valid: {', '.join(KEYS)}")
    rng = float(items.get("range", 1))
    if rng not in (1.0, 255.0):
        raise Kd2EdgeError(f"input contract range must be 1 (pixels in [0, 1]) or 255 (pixels 0..255), got {rng:g}")
    mean = [v / rng for v in _floats(items["mean"], "mean")] if "mean" in items else base["mean"]
    std = [v / rng for v in _floats(items["std"], "std")] if "std" in items else \
        (base["std"] if preset or rng == 1 else [1 / 255] * 3)
    size = items.get("size") or items.get("input_size") or input_size
    if isinstance(size, str):
        hw = [int(v) for v in size.lower().replace("x", ",").split(",")]
        size = [3, hw[0], hw[-1]]
    c = make_contract(mean, std, str(items.get("layout", "NCHW")).upper(),
                      str(items.get("order", "RGB")).upper(), size, preset)
    c["range"] = int(rng)
    return c


def describe(contract: dict) -> str:
    """One short phrase: 'unit (NCHW RGB, [0,1] pixels, mean 0 std 1)'."""
    named = contract.get("name")
    scale = 255 if contract.get("range") == 255 else 1
    mean = ",".join(f"{m * scale:g}" for m in contract["mean"])
    std = ",".join(f"{s * scale:.4g}" for s in contract["std"])
    size = "x".join(map(str, contract["input_size"][1:])) if contract.get("input_size") else "any size"
    return (f"{named + ' ' if named else ''}({contract['layout']} {contract['channel_order']}, "
            f"{'0..255' if scale == 255 else '[0,1]'} pixels, mean {mean} std {std}, {size})")


def key(contract: dict) -> dict:
    """What of a contract changes a model's outputs (for cache keys)."""
    return {k: contract[k] for k in ("layout", "mean", "std", "channel_order")} | \
        {"input_size": contract.get("input_size")}


def resolve_contract(spec, recorded: dict | None, why_recorded: str, default: str, why_default: str,
                     flag: str, input_size=None, layout: str | None = None) -> tuple[dict, str]:
    """(contract, one line saying which contract is assumed and why): `spec` (the user's flag) wins, then
    what the file records, then the `default` preset. `layout`: what the file's input shape shows, used when
    `spec` names none."""
    if spec is not None:
        c = parse_contract(spec, input_size)
        if layout and "layout" not in (spec if isinstance(spec, (dict, str)) else ""):
            c["layout"] = layout
        why = f"given by {flag}" + (f" (layout {layout} from the file's input shape)" if layout and
                                    c["layout"] == layout and layout != "NCHW" else "")
    elif recorded:
        c = parse_contract(recorded, input_size)
        why = why_recorded
    else:
        c = parse_contract(default, input_size)
        why = f"{why_default}; if wrong, pass {flag} (presets: {', '.join(PRESETS)})"
    if input_size and not c.get("input_size"):
        c["input_size"] = list(input_size)
    return c, f"input contract {describe(c)}: {why}"


def apply_contract(x_nhwc: np.ndarray, contract: dict) -> np.ndarray:
    """uint8 (N, H, W, 3) RGB pixels -> float32 model input as the contract says."""
    x = np.asarray(x_nhwc)
    if contract.get("channel_order") == "BGR":
        x = x[..., ::-1]
    mean = np.asarray(contract["mean"], np.float32)
    std = np.asarray(contract["std"], np.float32)
    out = (x.astype(np.float32) / np.float32(255) - mean) / std
    if contract.get("layout", "NCHW") == "NCHW":
        out = out.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(out)


def _onnx_raw(session):
    """(raw255 contract in the input's layout and size, layout, size [3, H, W] or None) of an ONNX session."""
    shape = list(session.input_shape or [])
    layout = "NHWC" if len(shape) == 4 and shape[-1] == 3 and shape[1] != 3 else "NCHW"
    hw = (shape[1:3] if layout == "NHWC" else shape[2:4]) if len(shape) == 4 else []
    size = [3, *hw] if len(hw) == 2 and all(isinstance(d, int) and d > 0 for d in hw) else None
    return make_contract(PRESETS["raw255"]["mean"], PRESETS["raw255"]["std"], layout, "RGB", size, "raw255"), \
        layout, size


def onnx_record(session) -> tuple[dict | None, str, list | None]:
    """What an ONNX model says about its input: (recorded contract or None, why, input size [3, H, W] or None).
    A kd2edge export (metadata `kd2edge`) or a uint8 input takes raw 0..255 pixels; the layout and the size
    come from the input shape (channels last when the last dimension is 3)."""
    raw, _, size = _onnx_raw(session)
    if "kd2edge" in (session.metadata or {}):
        return raw, "a kd2edge export (ONNX metadata): raw pixels, normalization inside the graph", size
    if session.input_dtype.kind != "f":
        return raw, f"the ONNX input is {session.input_dtype}: raw pixels", size
    return None, "", size


ONNX_GUESS = ("an ONNX file without kd2edge metadata: assumed raw 0..255 pixels with normalization inside "
              "(the kd2edge artifact convention), layout from its input shape")


def onnx_default(session) -> dict:
    """The guess for an ONNX file without a record: raw255 in the layout its input shape shows."""
    return _onnx_raw(session)[0]


def onnx_layout(session) -> str:
    return _onnx_raw(session)[1]


def run_session(session, x_nhwc: np.ndarray, contract: dict, batch: int = 100) -> np.ndarray:
    """float32 logits of a runtime Session (kd2edge.runtimes) fed as `contract` says. A model with integer
    input takes raw pixels through the session's own `predict` (and only the raw255 contract fits it)."""
    if session.input_dtype.kind != "f":
        if contract.get("name") != "raw255" and contract["std"] != PRESETS["raw255"]["std"]:
            raise Kd2EdgeError(f"{session.name or 'the ONNX model'} takes {session.input_dtype} raw pixels; "
                               "only the raw255 input contract fits it")
        return session.predict(x_nhwc)
    n, batch = len(x_nhwc), session.fixed_batch or batch
    outs = []
    for i in range(0, n, batch):
        chunk = apply_contract(x_nhwc[i:i + batch], contract).astype(session.input_dtype)
        size = len(chunk)
        if session.fixed_batch and size < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - size, axis=0)])
        session.resize(len(chunk))
        outs.append(session.logits(session.run(chunk)).reshape(len(chunk), -1)[:size])
    return np.concatenate(outs)
