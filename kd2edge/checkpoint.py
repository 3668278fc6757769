"""Self-describing checkpoints, plus import of foreign state dicts and TorchScript files.

Native format (a dict saved with torch.save, loaded with weights_only=True):
    format="kd2edge.checkpoint", format_version, arch, arch_kwargs, num_classes, classes,
    preprocessing {mean, std, input_size [C,H,W], channel_order, pixel_scale}, state_dict,
    metrics, config, provenance {parent_sha256, teacher_sha256, dataset, versions, created}.
"""
from __future__ import annotations

import datetime
import json
import platform
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from kd2edge import Kd2EdgeError, __version__
from kd2edge.data import STATS
from kd2edge.files import atomic_write, sha256
from kd2edge.zoo import create_model

FORMAT = "kd2edge.checkpoint"
FORMAT_VERSION = 1
# The shared akamaster teachers (and torchvision models) normalize with ImageNet stats.
FOREIGN_PREPROCESSING = {"mean": list(STATS["imagenet"]["mean"]), "std": list(STATS["imagenet"]["std"])}
TORCHSCRIPT_META = "kd2edge.json"  # extra file inside a TorchScript archive: arch, classes, preprocessing


def plain(obj):
    """Plain Python values (dict/list/str/number/bool/None) so the checkpoint loads with weights_only=True:
    numpy scalars and arrays become numbers and lists, Paths and other objects become strings."""
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def preprocessing(mean, std, input_size=(3, 32, 32)) -> dict:
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std], "input_size": list(input_size),
            "channel_order": "RGB", "layout": "NCHW", "pixel_scale": 1 / 255}


def versions() -> dict:
    import numpy

    return {"kd2edge": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def save_checkpoint(path, model: nn.Module, *, arch: str, arch_kwargs: dict | None = None, classes: list[str],
                    preprocess: dict, metrics: dict | None = None, config: dict | None = None,
                    provenance: dict | None = None, extra: dict | None = None) -> Path:
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    ckpt = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "arch": arch, "arch_kwargs": dict(arch_kwargs or {}), "num_classes": len(classes),
        "classes": list(classes), "preprocessing": preprocess, "state_dict": state,
        "metrics": plain(metrics or {}), "config": plain(config or {}),
        "provenance": plain({"versions": versions(),
                              "created": datetime.datetime.now().isoformat(timespec="seconds"),
                              **(provenance or {})}),
    }
    ckpt.update(extra or {})
    return atomic_write(path, lambda tmp: torch.save(ckpt, tmp))


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.split("/")[1:2] == ["code"] for n in z.namelist())


def load_weights_only(path: Path, what: str = "checkpoint", fix: str = "re-save it as "
                      "torch.save(model.state_dict(), path)"):
    """torch.load(weights_only=True) (tensors and plain containers only), failing with one line. A file holding
    other Python objects is refused without running it, and never with advice to load it unsafely."""
    import re

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        text = str(e)
        found = re.search(r"unsupported (GLOBAL \S+|global: \S+ \S+|operand \S+)", text, re.IGNORECASE)
        detail = f" ({found.group(0)})" if found else ""
        if "global" in detail.lower():
            raise Kd2EdgeError(f"{path} contains code or objects a {what} must not{detail}; it was not loaded "
                               f"(loading it could run that code): {fix}") from None
        if re.search(r"weights.only load failed", text, re.IGNORECASE):  # torch's text suggests the unsafe load
            raise Kd2EdgeError(f"cannot read {what} {path}: not a plain PyTorch file of tensors{detail} (corrupt, "
                               "or pickled data that is not loaded for safety)") from None
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        msg = (lines or [""])[0][:200]
        raise Kd2EdgeError(f"cannot read {what} {path}: {type(e).__name__}: {msg} "
                           "(corrupt or truncated file, or not a PyTorch file)") from None


def _extract_state_dict(obj, path: Path) -> dict:
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise Kd2EdgeError(f"{path} holds no state dict (expected a dict of tensors, or one under "
                           "'state_dict' / 'model_state_dict')")
    prefixes = ("module.", "_orig_mod.")
    out = {}
    for k, v in obj.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def _infer_num_classes(state: dict) -> int | None:
    mats = [v for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
    return int(mats[-1].shape[0]) if mats else None


def load_state_strict(model: nn.Module, state: dict, arch: str, path) -> None:
    """Load a state dict strictly, failing with the keys that do not fit."""
    own = model.state_dict()
    # Old BatchNorm checkpoints lack num_batches_tracked; torch fills it in.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if keys:
                parts.append(f"{label} ({len(keys)}): {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}")
        raise Kd2EdgeError(f"checkpoint {path} does not fit arch {arch!r}: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)


def load_model(path, arch: str | None = None, num_classes: int | None = None,
               arch_kwargs: dict | None = None) -> tuple[nn.Module, dict]:
    """Load a native, foreign (needs `arch`) or TorchScript checkpoint, or a known pretrained one by name
    (`cifar10-resnet56`, see kd2edge.pretrained; never downloaded here). Returns (model in eval mode, info)."""
    from kd2edge.pretrained import arch_of, resolve_checkpoint

    arch = arch or arch_of(path)
    path = resolve_checkpoint(path)
    if not path.is_file():
        raise Kd2EdgeError(f"{path} is a folder, not a checkpoint file (.pt/.pth/.th or TorchScript)")
    digest = sha256(path)
    if _is_torchscript(path):
        extra = {TORCHSCRIPT_META: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                model = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except Exception as e:
            raise Kd2EdgeError(f"cannot load TorchScript file {path}: {(str(e).splitlines() or [''])[0]}") from None
        try:
            meta = json.loads(extra[TORCHSCRIPT_META] or "{}")
        except (ValueError, UnicodeDecodeError):
            meta = {}
        if num_classes and meta.get("num_classes") and num_classes != meta["num_classes"]:
            raise Kd2EdgeError(f"{path} has {meta['num_classes']} classes, not {num_classes}")
        info = {"source": "torchscript", "arch": arch or meta.get("arch") or "torchscript", "arch_kwargs": {},
                "num_classes": meta.get("num_classes") or num_classes, "classes": meta.get("classes"),
                "preprocessing": meta.get("preprocessing"), "metrics": {}, "config": {},
                "provenance": meta.get("provenance", {})}
        return model.eval(), {**info, "sha256": digest, "path": str(path)}
    obj = load_weights_only(path)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if obj.get("format_version", 0) > FORMAT_VERSION:
            raise Kd2EdgeError(f"{path} has checkpoint format {obj['format_version']}; upgrade kd2edge")
        if arch and arch != obj["arch"]:
            raise Kd2EdgeError(f"{path} is a {obj['arch']} checkpoint, not {arch}; drop --arch or fix it")
        if num_classes and num_classes != obj["num_classes"]:
            raise Kd2EdgeError(f"{path} has {obj['num_classes']} classes, not {num_classes}; drop --num-classes")
        model = create_model(obj["arch"], obj["num_classes"], **obj["arch_kwargs"])
        load_state_strict(model, obj["state_dict"], obj["arch"], path)
        info = {k: v for k, v in obj.items() if k != "state_dict"}
        info["source"] = "native"
    else:
        if not arch:
            raise Kd2EdgeError(f"{path} is not a kd2edge checkpoint; name its architecture with --arch "
                               "(see `kd2edge zoo`)")
        state = _extract_state_dict(obj, path)
        found = _infer_num_classes(state)
        if num_classes and found and num_classes != found:
            raise Kd2EdgeError(f"{path} has a {found}-class head but {num_classes} classes were asked for")
        n = num_classes or found or 10
        model = create_model(arch, n, **(arch_kwargs or {}))
        load_state_strict(model, state, arch, path)
        info = {"source": "foreign", "arch": arch, "arch_kwargs": dict(arch_kwargs or {}), "num_classes": n,
                "classes": None, "preprocessing": preprocessing(**FOREIGN_PREPROCESSING), "metrics": {},
                "config": {}, "provenance": {}}
    return model.eval(), {**info, "sha256": digest, "path": str(path)}
