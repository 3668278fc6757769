"""`kd2edge export`: a checkpoint -> verified artifact folders `exports/<name>-<target>[-<precision>]/`.

The checkpoint, the calibration images, the test images and the reference (PyTorch student and teacher)
logits are loaded once (`load_source`) for every target and precision. Each folder holds the model file,
`meta.json` and `eval.npz` (kd2edge.artifact, docs/CONTRACTS.md); it is installed only after verification
(kd2edge.export.verify) passed, built beside its destination and renamed into place.
"""
from __future__ import annotations

import datetime
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kd2edge import Kd2EdgeError, __version__, require
from kd2edge.artifact import FORMAT, FORMAT_VERSION, build_folder, folder_name, install_folder, model_size, write_files
from kd2edge.capture import captured
from kd2edge.export.targets import get_target, plan as make_plan
from kd2edge.export.verify import parity, session_for
from kd2edge.files import check_out_dir
from kd2edge.numbers import number
from kd2edge.locations import run_folder

STATUS_OK, STATUS_FAILED, STATUS_ERROR = "ok", "verification failed", "export failed"


@dataclass
class Source:
    """What every artifact of one checkpoint is converted from and checked against."""
    model: object  # the PyTorch student, eval mode
    info: dict  # kd2edge.checkpoint.load_model's info
    preprocessing: dict
    classes: list
    calib: np.ndarray  # uint8 NHWC training images for int8 calibration
    test: object  # kd2edge.data.Dataset: the verification images
    bundle: dict  # eval.npz: x, y, student_logits[, teacher_logits], classes
    teacher: dict | None  # meta.json's teacher record
    dataset: str
    qat: tuple | None = None  # (prepared graph, quantizer, record) of kd2edge.export.qat, for int8
    keep_float: tuple = ()  # --keep-float names (kd2edge.artifact.KEEP_FLOAT) and their module paths, for int8
    float_layers: tuple = ()
    rounded: dict = field(default_factory=dict)  # weight qmax -> (student on that int8 grid, record) for --rounding

    @property
    def reference(self) -> np.ndarray:
        return self.bundle["student_logits"]


def _teacher_record(info: dict, teacher) -> dict | None:
    """The teacher for the eval bundle: an override (path or known name, optional 'arch:' prefix) or the
    checkpoint's provenance.teacher; None when neither is known."""
    if teacher:
        if isinstance(teacher, dict):
            return teacher
        arch = None
        if ":" in str(teacher) and not Path(str(teacher)).exists():
            arch, teacher = str(teacher).split(":", 1)
        return {"path": str(teacher), "arch": arch}
    rec = (info.get("provenance") or {}).get("teacher")
    return dict(rec) if rec else None


def _teacher_logits(record: dict, x: np.ndarray, contract=None):
    """The teacher's logits on the bundle images, fed as `contract` (--teacher-input) says, else as the
    student's provenance recorded it was fed during distillation, else as the teacher file records. An
    ensemble (recorded with its members, or named: `cifar10-ensemble`, "a,b") gives its members' mean logits,
    as distillation saw them."""
    from kd2edge.evaluate import load_predictor
    from kd2edge.pretrained import arch_of_file, ensemble_members, ensemble_record

    path = str(record["path"])
    if path.startswith("ensemble(") and path.endswith(")"):  # how an ensemble's path is recorded
        path = path[len("ensemble("):-1]
    members = record.get("members") or [{"path": m, "arch": arch_of_file(m)} for m in ensemble_members(path) or []]
    if members:
        runs = [_teacher_logits(m, x, contract or record.get("input")) for m in members]
        recs = [r for _, r in runs]
        path, sha = ensemble_record([r["path"] for r in recs], [r["sha256"] for r in recs])
        return np.mean([z for z, _ in runs], axis=0), {
            "path": path, "sha256": sha, "arch": "ensemble", "input": recs[0]["input"], "members": recs}
    try:
        pred = load_predictor(record["path"], record.get("arch"), contract=contract or record.get("input"),
                              flag="--teacher-input")
    except Kd2EdgeError as e:
        raise Kd2EdgeError(f"teacher for the eval bundle: {e} (pass --teacher PATH, or arch:PATH for a "
                           "foreign file)") from None
    tinfo = pred["info"]
    print(f"teacher {pred['line']}", file=sys.stderr, flush=True)
    rec = {"path": str(tinfo["path"]), "sha256": tinfo["sha256"], "arch": tinfo["arch"], "input": pred["contract"]}
    return pred["predict"](x), rec


def load_source(checkpoint, arch: str | None = None, dataset: str | None = None, data_dir=None,
                calib_images: int = 256, eval_images: int = 1000, teacher=None, teacher_input=None) -> Source:
    """Load the checkpoint, a fixed class-mixed sample of TRAINING images (calibration), the first TEST
    images (verification) and the PyTorch logits on them, once."""
    require("torch", "export")
    from kd2edge.checkpoint import load_model
    from kd2edge.data import load_dataset
    from kd2edge.evaluate import predict

    if calib_images < 1 or eval_images < 1:
        raise Kd2EdgeError("--calib-images and --eval-images must be >= 1")
    model, info = load_model(checkpoint, arch)
    prep = info.get("preprocessing")
    if not prep:
        raise Kd2EdgeError(f"{checkpoint} records no preprocessing (TorchScript?); export a native checkpoint")
    name = dataset or (info.get("provenance") or {}).get("dataset") or "cifar10"
    train = load_dataset(name, "train", data_dir)
    test = load_dataset(name, "test", data_dir, limit=eval_images)
    pick = calibration_pick(train.y, calib_images)
    classes = info.get("classes") or test.classes
    reference = predict(model, test.x, prep)
    if reference.shape[1] != len(test.classes):
        raise Kd2EdgeError(f"model has {reference.shape[1]} classes but {name} has {len(test.classes)}; "
                           "pass the matching --dataset")
    bundle = {"x": test.x, "y": test.y.astype(np.int64), "student_logits": reference.astype(np.float32),
              "classes": np.array(classes)}
    t_record = _teacher_record(info, teacher)
    if t_record:
        recorded = None if teacher else t_record.get("sha256")  # the file the student was distilled from
        t_logits, t_record = _teacher_logits(t_record, test.x, teacher_input)
        if recorded and t_record["sha256"] != recorded:
            raise Kd2EdgeError(f"teacher {t_record['path']} is not the file {checkpoint} was distilled from (sha256 "
                               f"{t_record['sha256'][:12]}, recorded {recorded[:12]}): restore that file, or pass "
                               "--teacher PATH to compare against this one")
        if t_logits.shape[1] == reference.shape[1]:
            bundle["teacher_logits"] = t_logits.astype(np.float32)
        else:  # e.g. a CIFAR-100 teacher of a CIFAR-10 student: no drift to measure on these labels
            t_record["note"] = f"{t_logits.shape[1]}-class teacher: teacher_logits omitted from eval.npz"
    return Source(model, info, prep, list(classes), train.x[pick], test, bundle, t_record, name)


SELECTIONS = ("random", "balanced")


def calibration_pick(train_y: np.ndarray, n: int, selection: str = "random", seed: int = 0) -> np.ndarray:
    """Sorted indices of `n` TRAINING images for int8 calibration: a seeded random sample, or `balanced`
    (the same number of images per class, each class's share drawn at random). Never test images: callers
    pass the training labels only."""
    rng = np.random.default_rng(seed)
    n = min(int(n), len(train_y))
    if selection == "random":
        return np.sort(rng.choice(len(train_y), size=n, replace=False))
    if selection != "balanced":
        raise Kd2EdgeError(f"unknown calibration selection {selection!r}; valid: {', '.join(SELECTIONS)}")
    classes = np.unique(train_y)
    per = [n // len(classes) + (i < n % len(classes)) for i in range(len(classes))]
    picks = [rng.choice(np.flatnonzero(train_y == c), size=min(k, int((train_y == c).sum())), replace=False)
             for c, k in zip(classes, per)]
    return np.sort(np.concatenate(picks))


def export(checkpoint, targets="all", int8: bool = False, arch: str | None = None, out=None,
           calib_images: int = 256, eval_images: int = 1000, max_drop: float = 1.0, teacher=None,
           precisions=None, dataset: str | None = None, data_dir=None, name: str | None = None,
           command: str | None = None, progress: bool = True, plan=None, extra_meta=None,
           qat_epochs: float = 0, teacher_input=None, verbose: bool = False, keep_float=None,
           rounding: str = "nearest") -> list[dict]:
    """Export `checkpoint` to every target (and precision) -- or exactly `plan`, a list of (target, precision)
    -- verify each artifact, return one row each: target, precision, status, reason, path, size, top1, drop,
    agreement, max_abs_logit_diff, sqnr, seconds. `extra_meta`: more keys for every meta.json.
    `qat_epochs` > 0: the int8 artifacts come from KD-aware QAT (kd2edge.export.qat) instead of PTQ;
    `keep_float` (names of kd2edge.artifact.KEEP_FLOAT) leaves those layers of the int8 artifacts in float;
    `rounding` (kd2edge.export.rounding.ROUNDINGS) says how PTQ rounds the int8 weights. The
    converters' own output goes to `export.log` in each artifact folder (`<folder>.export.log` beside it when
    the export failed); `verbose` shows it on the terminal instead."""
    from kd2edge.progress import progress_bars

    plan = list(plan) if plan is not None else make_plan(targets, int8, precisions)
    _check_qat(plan, qat_epochs)
    keep_float = _check_keep_float(plan, keep_float, qat_epochs)
    rounding = _check_rounding(plan, rounding, qat_epochs)
    max_drop = number("--max-drop", max_drop, low=0)
    check_out_dir(out or "exports")
    source = load_source(checkpoint, arch, dataset, data_dir, calib_images, eval_images, teacher, teacher_input)
    if qat_epochs:
        source.qat = _qat(source, qat_epochs, data_dir, progress)
    if keep_float:
        from kd2edge.export.float_layers import module_paths

        source.keep_float = tuple(keep_float)
        source.float_layers = tuple(module_paths(source.model, keep_float, source.preprocessing.get("input_size")
                                                 or (3, *source.calib.shape[1:3])))
    out = Path(out or run_folder("export"))
    name = name or Path(str(source.info["path"])).stem
    command = command or "kd2edge export " + " ".join(sys.argv[1:])
    rows, built = [], []
    try:
        with progress_bars(progress) as bars:
            if rounding != "nearest":
                _round(source, plan, data_dir, bars)
            task = bars.task("export", total=len(plan))
            for target, precision in plan:
                task.set(description=f"export {target} {precision}")
                dest = out / folder_name(name, target, precision)
                row, tmp = export_one(source, target, precision, dest, max_drop, command, extra_meta,
                                         verbose)
                rows.append(row)
                built += [(tmp, dest)] if tmp is not None else []
                task.advance()
        # installed together once all are built: a killed export never leaves folders of two checkpoints
        for tmp, dest in built:
            install_folder(tmp, dest)
    finally:
        for tmp, _ in built:
            shutil.rmtree(tmp, ignore_errors=True)
    return rows


def export_one(source: Source, target: str, precision: str, dest: Path, max_drop: float, command: str,
               extra_meta: dict | None = None, verbose: bool = False) -> tuple[dict, Path | None]:
    """Convert and verify one artifact folder, built beside `dest` (install it with install_folder): (row, the
    built folder or None). Failures end up in the row, never half-written. The converters' output goes to
    export.log in the folder (`<dest>.export.log` beside it on failure) unless `verbose`."""
    row = {"target": target, "precision": precision, "status": STATUS_ERROR, "reason": None, "path": str(dest),
           "size": None, "top1": None, "drop": None, "agreement": None, "max_abs_logit_diff": None, "sqnr": None}
    start = time.perf_counter()
    built = None
    log = dest.parent / f".{dest.name}.export.log.tmp"
    log.unlink(missing_ok=True)
    try:
        with captured(log, enabled=not verbose):
            built = build_folder(dest, lambda tmp: _build(source, target, precision, tmp, dest.name, max_drop,
                                                          command, extra_meta, row))
        if built is not None:
            row["status"] = STATUS_OK
    except Kd2EdgeError as e:
        row["reason"] = str(e)
    except Exception as e:  # a converter bug: report it in the row, keep exporting the other targets
        first = next((ln for ln in str(e).splitlines() if ln.strip()), "")
        row["reason"] = f"{type(e).__name__}: {first[:300]}"
    if log.exists():  # into the installed folder, or beside it when nothing was installed
        failed_log = dest.parent / f"{dest.name}.export.log"
        failed_log.unlink(missing_ok=True)
        if built is not None:
            log.replace(Path(built) / "export.log")
        else:
            log.replace(failed_log)
            row["reason"] = f"{row['reason']} (converter output: {failed_log})"
    row["seconds"] = round(time.perf_counter() - start, 2)
    return row, built


def _build(source: Source, target: str, precision: str, tmp: Path, name: str, max_drop: float, command: str,
           extra_meta: dict | None, row: dict) -> bool:
    """Fill the private folder `tmp`; False (nothing installed) when verification fails."""
    mod = get_target(target)
    reference, k = source.reference, int(source.reference.shape[1])
    model_path = tmp / mod.MODEL_FILE
    use_qat = source.qat is not None and precision in mod.INT8
    use_float = bool(source.float_layers) and precision in mod.INT8
    rounded = source.rounded.get(mod.weight_qmax()) if source.rounded and precision in mod.INT8 else None
    spec = mod.convert(rounded[0] if rounded else source.model, source.preprocessing, model_path, precision,
                       source.calib,
                       **({"qat": source.qat} if use_qat else {}),
                       **({"float_layers": source.float_layers} if use_float else {}))
    spec["output"]["shape"] = [None, k]
    session, check = session_for(mod, model_path, spec)
    logits = session.predict(source.test.x)
    par = parity(logits, reference, source.test.y, precision, check, max_drop)
    row.update(top1=par["top1"], drop=par["drop"], agreement=par["agreement"], tied_top1=par["tied_top1"],
               max_abs_logit_diff=par["max_abs_logit_diff"], sqnr=par["sqnr_db"])
    if not par["passed"]:
        row.update(status=STATUS_FAILED, reason=par["reason"])
        return False
    info = source.info
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "name": name, "target": target,
        "runtime": mod.RUNTIME, "model_file": mod.MODEL_FILE, "precision": precision,
        "input": spec["input"], "output": spec["output"], "quantization": spec["quantization"],
        "min_runtime": spec.get("min_runtime"),
        "classes": source.classes, "preprocessing": source.preprocessing,
        "source": {"checkpoint": str(info["path"]), "sha256": info["sha256"], "arch": info["arch"],
                   "num_classes": k, "dataset": source.dataset},
        "teacher": source.teacher, "parity": par,
        "tool_versions": {"kd2edge": __version__, **_torch_versions(), **spec["tool_versions"]},
        "command": command, "created": datetime.datetime.now().isoformat(timespec="seconds"), **(extra_meta or {}),
    }
    if meta["quantization"] is not None:
        meta["quantization"]["calibration"] = {"images": int(len(source.calib)), "source": f"{source.dataset} train"}
        meta["quantization"]["method"] = "QAT" if use_qat else "PTQ"
        if use_qat:
            meta["quantization"]["qat"] = dict(source.qat[2])
        elif target in ROUNDING_TARGETS:
            meta["quantization"]["rounding"] = dict(rounded[1]) if rounded else {"rounding": "nearest"}
        if use_float:
            meta["quantization"]["float_layers"] = {"keep": list(source.keep_float),
                                                    **meta["quantization"].get("float_layers", {})}
    mod.embed_metadata(model_path, meta)
    again = session_for(mod, model_path, spec)[0].predict(source.test.x[:16])  # embedding must not touch the graph
    diff = np.abs(np.asarray(again, np.float64) - np.asarray(logits[:16], np.float64)).max()
    if not diff <= 1e-5 * (1 + np.abs(reference[:16]).max()):  # batch-size rounding only
        raise Kd2EdgeError(f"{target}: writing metadata into {mod.MODEL_FILE} changed its outputs")
    write_files(tmp, meta, source.bundle)
    row["size"] = model_size(model_path)
    return True


QAT_TARGETS = ("onnx", "tflite")
ROUNDING_TARGETS = ("onnx", "tflite")  # int8 weights per-channel symmetric, scale max|w| / qmax (kd2edge.export.rounding)


def _check_qat(plan, qat_epochs) -> None:
    if qat_epochs is None or qat_epochs == 0:
        return
    if not qat_epochs > 0:
        raise Kd2EdgeError(f"--qat-epochs must be > 0 (fractions allowed), got {qat_epochs:g}")
    _check_int8_targets(plan, "--qat-epochs trains", QAT_TARGETS)


def _check_int8_targets(plan, what: str, targets) -> None:
    """`what` (a flag and its verb) needs int8 artifacts of `targets` only in the plan: one error line otherwise."""
    int8 = [(t, p) for t, p in plan if p in get_target(t).INT8]
    if not int8:
        raise Kd2EdgeError(f"{what} the int8 artifacts: add --int8 (or --precision int8)")
    other = sorted({t for t, _ in int8 if t not in targets})
    if other:
        raise Kd2EdgeError(f"{what} int8 {', '.join(targets)}, not {', '.join(other)}; pick those targets with -t")


def _check_keep_float(plan, keep_float, qat_epochs) -> list[str]:
    from kd2edge.export.float_layers import TARGETS, check

    keep = check(keep_float)
    if keep:
        _check_int8_targets(plan, "--keep-float applies to", TARGETS)
    if keep and qat_epochs:
        raise Kd2EdgeError("--keep-float works with post-training int8 only: drop --qat-epochs or --keep-float")
    return keep


def _check_rounding(plan, rounding, qat_epochs) -> str:
    from kd2edge.export.rounding import check

    rounding = check(rounding)
    if rounding != "nearest":
        _check_int8_targets(plan, f"--rounding {rounding} rounds", ROUNDING_TARGETS)
        if qat_epochs:
            raise Kd2EdgeError(f"--rounding {rounding} rounds post-training int8 weights; QAT learns its own: drop "
                               "--qat-epochs or --rounding")
    return rounding


def _round(source: Source, plan, data_dir, bars) -> None:
    """Learned rounding (kd2edge.export.rounding) of the student once per int8 weight grid the plan's targets use,
    on its own seeded sample of TRAINING images."""
    from kd2edge.data import load_dataset
    from kd2edge.export.rounding import DEFAULTS, adaround

    train = load_dataset(source.dataset, "train", data_dir)
    images = train.x[calibration_pick(train.y, DEFAULTS["images"], seed=1)]
    grids = sorted({get_target(t).weight_qmax() for t, p in plan if p in get_target(t).INT8})
    skip = [p[len("net."):] for p in source.float_layers if p.startswith("net.")]
    for qmax in grids:
        task = bars.task(f"adaround, int8 grid +-{qmax}", total=1, unit="layer")
        source.rounded[qmax] = adaround(source.model, source.preprocessing, images, qmax, skip,
                                        on_layer=lambda done, n, task=task: task.set(completed=done, total=n),
                                        range_images=source.calib)
        task.done()


def _qat(source: Source, epochs: float, data_dir, progress: bool):
    """KD-aware QAT of the student against its teacher (source.teacher) on the training images."""
    from kd2edge.data import load_dataset
    from kd2edge.evaluate import load_predictor
    from kd2edge.export.qat import qat_prepare

    if not source.teacher:
        raise Kd2EdgeError("QAT distills from the teacher: pass --teacher PATH (arch:PATH for a foreign file)")
    teacher = load_predictor(source.teacher["path"], source.teacher.get("arch"), contract=source.teacher.get("input"),
                             flag="--teacher-input")  # fed as for the eval bundle (load_source)
    tinfo = teacher["info"]
    if int(tinfo["num_classes"] or 0) not in (0, len(source.classes)):
        raise Kd2EdgeError(f"QAT needs a teacher with the student's {len(source.classes)} classes, "
                           f"{source.teacher['path']} has {tinfo['num_classes']}")
    train = load_dataset(source.dataset, "train", data_dir)
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if progress else None
    prepared, quantizer, record = qat_prepare(source.model, source.preprocessing, train.x,
                                              lambda x: teacher["predict"](x), epochs, log=log)
    record["teacher"] = {"path": str(tinfo["path"]), "sha256": tinfo["sha256"], "arch": tinfo["arch"]}
    return prepared, quantizer, record


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
