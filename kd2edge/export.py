"""`kd2edge export`: a checkpoint -> verified artifact folders `exports/<name>-<target>[-<precision>]/`.

Each folder holds the model file, `meta.json` and `eval.npz` (see docs/CONTRACTS.md). An artifact is
installed only after its own runtime (or, for CoreML off macOS, a numpy evaluation of the saved ML program)
has run it on real test images and matched the PyTorch student; nothing is half-written: a folder is
built beside its destination and renamed into place.
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from kd2edge import Kd2EdgeError, __version__, require
from kd2edge.paths import _jsonable
from kd2edge.targets import expand, get_target

FORMAT = "kd2edge.artifact"
FORMAT_VERSION = 1
FP32_MIN_AGREEMENT = 99.9  # percent
FP32_MAX_LOGIT_DIFF = 1e-3
STATUS_OK, STATUS_FAILED, STATUS_ERROR = "ok", "verification failed", "export failed"


def precisions_for(target: str, int8: bool, precisions=None) -> list[str]:
    """fp32 (+ the target's int8 variants with int8=True), or exactly `precisions` when given."""
    mod = get_target(target)
    wanted = list(precisions) if precisions else ["fp32", *(mod.INT8 if int8 else ())]
    bad = [p for p in wanted if p not in mod.PRECISIONS]
    if bad:
        raise Kd2EdgeError(f"target {target} has no precision {', '.join(bad)}; valid: {', '.join(mod.PRECISIONS)}")
    return wanted


def artifact_name(name: str, target: str, precision: str) -> str:
    return f"{name}-{target}" + ("" if precision == "fp32" else f"-{precision}")


def parity(logits: np.ndarray, reference: np.ndarray, y: np.ndarray, precision: str, check: str,
           max_drop: float) -> dict:
    """Compare an artifact's logits with the PyTorch student's on the same labelled images."""
    from kd2edge.metrics import agreement, sqnr_db, topk_accuracy

    top1, top1_ref = topk_accuracy(logits, y), topk_accuracy(reference, y)
    r = {"check": check, "n": int(len(y)), "top1": top1, "top1_pytorch": top1_ref, "drop": top1_ref - top1,
         "agreement": agreement(logits, reference),
         "max_abs_logit_diff": float(np.abs(logits.astype(np.float64) - reference).max()),
         "sqnr_db": sqnr_db(reference, logits)}
    if not np.isfinite(logits).all():
        r["passed"], r["reason"] = False, "non-finite logits"
    elif precision == "fp32":
        r["passed"] = r["agreement"] >= FP32_MIN_AGREEMENT and r["max_abs_logit_diff"] <= FP32_MAX_LOGIT_DIFF
        r["reason"] = None if r["passed"] else (
            f"fp32 parity failed: agreement {r['agreement']:.2f}% (need >= {FP32_MIN_AGREEMENT}), "
            f"max |logit diff| {r['max_abs_logit_diff']:.2e} (need <= {FP32_MAX_LOGIT_DIFF:g})")
    else:
        r["passed"] = r["drop"] <= max_drop
        r["reason"] = None if r["passed"] else f"top-1 drop {r['drop']:.2f} points exceeds --max-drop {max_drop:g}"
    return r


def _teacher_record(info: dict, teacher) -> dict | None:
    """The teacher for the eval bundle: an override (path or known name, optional 'arch:' prefix in
    `arch=`) or the checkpoint's provenance.teacher; None when neither is known."""
    if teacher:
        if isinstance(teacher, dict):
            return teacher
        arch = None
        if ":" in str(teacher) and not Path(str(teacher)).exists():
            arch, teacher = str(teacher).split(":", 1)
        return {"path": str(teacher), "arch": arch}
    rec = (info.get("provenance") or {}).get("teacher")
    return dict(rec) if rec else None


def _teacher_logits(record: dict, x: np.ndarray):
    from kd2edge.checkpoint import load_model
    from kd2edge.evaluate import predict

    try:
        model, tinfo = load_model(record["path"], record.get("arch"))
    except Kd2EdgeError as e:
        raise Kd2EdgeError(f"teacher for the eval bundle: {e} (pass --teacher PATH, or arch:PATH for a "
                           "foreign file)") from None
    prep = tinfo["preprocessing"] or {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    rec = {"path": str(tinfo["path"]), "sha256": tinfo["sha256"], "arch": tinfo["arch"]}
    return predict(model, x, prep), rec


def _install(tmp: Path, dest: Path) -> None:
    """Replace `dest` by the finished folder `tmp` (both on the same filesystem)."""
    old = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old-"))
        os.replace(dest, old / dest.name)
    os.replace(tmp, dest)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _data(info: dict, dataset, data_dir, calib_images: int, eval_images: int):
    from kd2edge.data import load_dataset

    if calib_images < 1 or eval_images < 1:
        raise Kd2EdgeError("--calib-images and --eval-images must be >= 1")
    name = dataset or (info.get("provenance") or {}).get("dataset") or "cifar10"
    train = load_dataset(name, "train", data_dir)
    test = load_dataset(name, "test", data_dir, limit=eval_images)
    # Calibration: a fixed, class-mixed sample of TRAINING images; verification: the first TEST images.
    pick = np.random.default_rng(0).choice(len(train), size=min(calib_images, len(train)), replace=False)
    return train.x[np.sort(pick)], test, name


def export(checkpoint, targets="all", int8: bool = False, arch: str | None = None, out=None,
           calib_images: int = 256, eval_images: int = 1000, max_drop: float = 1.0, teacher=None,
           precisions=None, dataset: str | None = None, data_dir=None, name: str | None = None,
           command: str | None = None, progress: bool = True) -> list[dict]:
    """Export `checkpoint` to every target (and precision), verify each artifact, return one row each:
    target, precision, status, reason, path, size, top1, drop, agreement, max_abs_logit_diff, sqnr."""
    require("torch", "export")
    from kd2edge.checkpoint import load_model
    from kd2edge.evaluate import predict

    names = expand(targets)
    plan = [(t, p) for t in names for p in precisions_for(t, int8, precisions)]
    model, info = load_model(checkpoint, arch)
    prep = info.get("preprocessing")
    if not prep:
        raise Kd2EdgeError(f"{checkpoint} records no preprocessing (TorchScript?); export a native checkpoint")
    calib, test, ds_name = _data(info, dataset, data_dir, calib_images, eval_images)
    classes = info.get("classes") or test.classes
    reference = predict(model, test.x, prep)
    if reference.shape[1] != len(test.classes):
        raise Kd2EdgeError(f"model has {reference.shape[1]} classes but {ds_name} has {len(test.classes)}; "
                           "pass the matching --dataset")
    bundle = {"x": test.x, "y": test.y.astype(np.int64), "student_logits": reference.astype(np.float32),
              "classes": np.array(classes)}
    t_record = _teacher_record(info, teacher)
    if t_record:
        t_logits, t_record = _teacher_logits(t_record, test.x)
        if t_logits.shape[1] == reference.shape[1]:
            bundle["teacher_logits"] = t_logits.astype(np.float32)
        else:  # e.g. a CIFAR-100 teacher of a CIFAR-10 student: no drift to measure on these labels
            t_record["note"] = f"{t_logits.shape[1]}-class teacher: teacher_logits omitted from eval.npz"
    out = Path(out or "exports")
    name = name or Path(str(info["path"])).stem
    command = command or "kd2edge export " + " ".join(sys.argv[1:])
    rows = []
    for target, precision in _progress(plan, progress):
        rows.append(_export_one(model, info, prep, classes, target, precision, calib, test, reference, bundle,
                                t_record, out, name, max_drop, command, ds_name))
    return rows


def _progress(plan, enabled: bool):
    if not enabled:
        yield from plan
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("export {task.fields[what]:<18}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task("export", total=len(plan), what="")
        for target, precision in plan:
            bar.update(task, what=f"{target} {precision}")
            yield target, precision
            bar.advance(task)


def _export_one(model, info, prep, classes, target, precision, calib, test, reference, bundle, t_record,
                out: Path, name: str, max_drop: float, command: str, ds_name: str) -> dict:
    mod = get_target(target)
    dest = out / artifact_name(name, target, precision)
    row = {"target": target, "precision": precision, "status": STATUS_ERROR, "reason": None, "path": str(dest),
           "size": None, "top1": None, "drop": None, "agreement": None, "max_abs_logit_diff": None, "sqnr": None}
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=f".{dest.name}.tmp-"))
    try:
        model_path = tmp / mod.MODEL_FILE
        spec = mod.convert(model, prep, model_path, precision, calib)
        spec["output"]["shape"] = [None, int(reference.shape[1])]
        logits, check = mod.run(model_path, test.x, {"input": spec["input"], "output": spec["output"],
                                                     "quantization": spec["quantization"]})
        par = parity(np.asarray(logits, dtype=np.float32), reference, test.y, precision, check, max_drop)
        meta = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "name": dest.name, "target": target,
            "runtime": mod.RUNTIME, "model_file": mod.MODEL_FILE, "precision": precision,
            "input": spec["input"], "output": spec["output"], "quantization": spec["quantization"],
            "classes": list(classes), "preprocessing": prep,
            "source": {"checkpoint": str(info["path"]), "sha256": info["sha256"], "arch": info["arch"],
                       "num_classes": int(reference.shape[1]), "dataset": ds_name},
            "teacher": t_record, "parity": par,
            "tool_versions": {"kd2edge": __version__, **_torch_versions(), **spec["tool_versions"]},
            "command": command, "created": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        if meta["quantization"] is not None:
            meta["quantization"]["calibration"] = {"images": int(len(calib)), "source": f"{ds_name} train"}
        row.update(top1=par["top1"], drop=par["drop"], agreement=par["agreement"],
                   max_abs_logit_diff=par["max_abs_logit_diff"], sqnr=par["sqnr_db"])
        if not par["passed"]:
            row.update(status=STATUS_FAILED, reason=par["reason"])
            return row
        mod.embed_metadata(model_path, meta)
        again, _ = mod.run(model_path, test.x[:16], spec)  # embedding must not touch the graph
        diff = np.abs(np.asarray(again, np.float64) - np.asarray(logits[:16], np.float64)).max()
        if not diff <= 1e-5 * (1 + np.abs(reference[:16]).max()):  # batch-size rounding only
            raise Kd2EdgeError(f"{target}: writing metadata into {mod.MODEL_FILE} changed its outputs")
        # Plain writes: the whole folder is still private (tmp) and appears only by the rename below.
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=_jsonable) + "\n")
        np.savez(tmp / "eval.npz", **bundle)
        os.chmod(tmp, 0o755)
        row["size"] = _size(model_path)
        _install(tmp, dest)
        row.update(status=STATUS_OK)
        return row
    except Kd2EdgeError as e:
        row["reason"] = str(e)
        return row
    except Exception as e:  # a converter bug: report it in the row, keep exporting the other targets
        first = next((ln for ln in str(e).splitlines() if ln.strip()), "")
        row["reason"] = f"{type(e).__name__}: {first[:300]}"
        return row
    finally:
        row["seconds"] = round(time.perf_counter() - start, 2)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _torch_versions() -> dict:
    import torch

    return {"torch": torch.__version__, "numpy": np.__version__}


def summary_rows(rows: list[dict]) -> list[list]:
    """Rows for the CLI table: target, precision, status, size, top-1, drop, agreement, max diff
    (the reason of a failure is printed below the table, on one line)."""
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    return [[r["target"], r["precision"], r["status"],
             f(r["size"] and r["size"] / 1e6, ".3f") + (" MB" if r["size"] else ""), f(r["top1"], ".2f"),
             f(r["drop"], "+.2f"), f(r["agreement"], ".2f"), f(r["max_abs_logit_diff"], ".2e")] for r in rows]

