"""The Python API: the five commands as functions, with the CLI's options as keyword arguments, returning the
dicts that the command's `--json` prints (before JSON encoding).

    from kd2edge import distill, export, bench, run, evaluate

    student = distill(teacher="cifar10-resnet56", student="resnet8", epochs=15, limit_train=10000)
    rows = export(student["checkpoint"], ["onnx", "tflite"], int8=True)
    timings = bench([r["path"] for r in rows if r["status"] == "ok"], threads=[1, 2])

Every function imports its stage when called, so `import kd2edge` stays torch-free and `bench` needs no
torch. Outputs default to `runs/<command>/...` as on the command line. Progress bars are off unless asked for.
`kd2edge.distill` and the other names are also the stage packages (`kd2edge.distill.config`, ...): calling
the package calls the function here (kd2edge._ApiModule).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence


def distill(config: Mapping[str, Any] | str | Path | None = None, *, sets: Sequence[str] = (), out: str | Path | None = None,
            resume: bool = False, overwrite: bool = False, progress: bool = False, **keys: Any) -> dict:
    """`kd2edge distill`: train a student from a teacher (or the hard-label baseline with method="ce").

    config: a dict or a YAML file of distill keys; sets: `key=value` strings like `--set`; keys: any distill
    key (kd2edge.distill.config.DEFAULTS: teacher, student, method, epochs, batch_size, lr, limit_train,
    seed, T, alpha, ...), overriding both. Returns {"checkpoint", "run_dir", "metrics"}.
    """
    from kd2edge.distill import distill as run_distill
    from kd2edge.distill.config import apply_sets, load_config_file

    base = dict(config) if isinstance(config, Mapping) else (load_config_file(config) if config else {})
    return run_distill(apply_sets(base, list(sets)), out=str(out) if out else None, resume=resume or None,
                       overwrite=overwrite or None, progress=progress, **keys)


def export(checkpoint: str | Path, targets: str | Sequence[str] = "all", *, int8: bool = False,
           precisions: Sequence[str] | None = None, arch: str | None = None, out: str | Path | None = None,
           calib_images: int = 256, eval_images: int = 1000, max_drop: float = 1.0, teacher: str | None = None,
           dataset: str | None = None, data_dir: str | Path | None = None, progress: bool = False,
           verbose: bool = False, keep_float: Sequence[str] = (), rounding: str = "nearest") -> list[dict]:
    """`kd2edge export`: one verified artifact folder per (target, precision) under `out` (default
    runs/export). Returns one row each: target, precision, status, reason, path, size, top1, drop, agreement,
    max_abs_logit_diff, sqnr, seconds. Converter output goes to each folder's export.log unless verbose.
    `keep_float` (first, last): layers the int8 onnx/tflite artifacts keep in float; `rounding` (nearest,
    adaround): how int8 PTQ rounds their weights."""
    from kd2edge.export import export as run_export

    return run_export(str(checkpoint), targets, int8=int8, arch=arch, out=out, calib_images=calib_images,
                      eval_images=eval_images, max_drop=max_drop, teacher=teacher, precisions=precisions,
                      dataset=dataset, data_dir=data_dir, command="kd2edge.export()", progress=progress,
                      verbose=verbose, keep_float=list(keep_float), rounding=rounding)


def bench(artifacts: str | Path | Sequence[str | Path], threads: int | Sequence[int] | None = None, *,
          batch: int = 1, runs: int | None = None, seconds: float | None = None, warmup: int = 10,
          dataset: str | None = None, out: str | Path | None = None, write: bool = True,
          progress: bool = False) -> list[dict]:
    """`kd2edge bench` (no torch): one row per (artifact, thread count) with latency, top-1 and drift against
    the PyTorch student/teacher; with `write`, bench-*.json, bench.csv and bench.png go to `out`
    (default runs/bench)."""
    from kd2edge.bench import bench as run_bench

    threads = list(threads) if isinstance(threads, Sequence) else threads
    return run_bench(artifacts, threads, batch, runs, seconds, warmup, dataset, out=out, write=write,
                     progress=progress)


def run(config: Mapping[str, Any] | str | Path, *, out: str | Path | None = None, sets: Sequence[str] = (),
        progress: bool = False, verbose: bool = False) -> dict:
    """`kd2edge run`: teacher -> baseline + distilled student -> exports -> bench -> report folder (default
    runs/run/<name>). config: a YAML file or a dict of the same keys (kd2edge.run.DEFAULTS). Returns the
    report (report.json's content plus report_md and report_html paths), verdict first."""
    from kd2edge.run import load_config, run as run_pipeline

    cfg = load_config(config, {"out": str(out) if out else None}, list(sets))
    return run_pipeline(cfg, progress=progress, verbose=verbose)


def evaluate(checkpoint: str | Path, *, arch: str | None = None, dataset: str | None = None, split: str = "test",
             data_dir: str | Path | None = None, out: str | Path | None = None, limit: int | None = None,
             batch_size: int = 500, latency: bool = True, num_classes: int | None = None,
             threads: int | None = None, download: bool = False, input: str | None = None,
             match_classes: str = "name") -> dict:
    """`kd2edge eval`: top-1/top-5, per-class precision/recall/F1, confusion matrix, params, MACs and batch-1
    latency of a checkpoint; eval.json and the confusion CSV/PNG go to `out` (default
    runs/eval/<checkpoint>-<dataset>-<split>). `input`: how the model is fed (--input, kd2edge.input_contract);
    `match_classes`: name or index (--match-classes)."""
    from kd2edge.evaluate import evaluate as run_eval

    out = out or eval_folder(checkpoint, dataset, split)
    return run_eval(str(checkpoint), arch, dataset, split, data_dir, out, limit, batch_size=batch_size,
                    latency=latency, num_classes=num_classes, threads=threads, download=download, contract=input,
                    match=match_classes)


def eval_folder(checkpoint, dataset: str | None, split: str) -> Path:
    """The default output folder of `kd2edge eval`."""
    from kd2edge.locations import run_folder

    return run_folder("eval", f"{Path(str(checkpoint)).stem}-{Path(dataset).stem if dataset else 'auto'}-{split}")
