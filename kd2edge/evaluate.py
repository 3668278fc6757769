"""`kd2edge eval`: accuracy, per-class precision/recall/F1, confusion matrix, latency, params and MACs."""
from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import numpy as np
import torch

from kd2edge import Kd2EdgeError
from kd2edge.batches import normalize
from kd2edge.checkpoint import FOREIGN_PREPROCESSING, load_model
from kd2edge.data import Dataset, load_dataset
from kd2edge.metrics import classification_report
from kd2edge.pretrained import arch_of, fetch
from kd2edge.files import write_json, write_text
from kd2edge.zoo import count_macs, count_params


@torch.no_grad()
def predict(model, x_uint8: np.ndarray, preprocessing: dict, batch_size: int = 500, on_batch=None) -> np.ndarray:
    """Logits (float32 numpy) of `model` on uint8 NHWC images; `on_batch(n)` is called after each batch."""
    model.eval()
    out = []
    for i in range(0, len(x_uint8), batch_size):
        logits = model(normalize(x_uint8[i:i + batch_size], preprocessing))
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            raise Kd2EdgeError(f"the model must return logits of shape (batch, classes); got "
                               f"{type(logits).__name__} {tuple(getattr(logits, 'shape', ()))}")
        out.append(logits.float())
        if on_batch:
            on_batch(len(logits))
    return torch.cat(out).numpy()


def torch_bench(checkpoint, arch: str | None, threads, runs: int | None = None, seconds: float | None = None,
                warmup: int = 10) -> list[dict]:
    """PyTorch eager batch-1 latency of a checkpoint at each thread count, timed by the same loop as the
    exported artifacts (kd2edge.timing.time_runs): the same-process baseline that speed-up ratios divide by.
    `threads`: a list of ints (None = torch's current setting)."""
    from kd2edge.timing import time_runs

    model, info = load_model(checkpoint, arch)
    x = torch.randn(1, *info["preprocessing"]["input_size"], generator=torch.Generator().manual_seed(0))
    before, rows = torch.get_num_threads(), []
    try:
        with torch.inference_mode():
            for t in threads:
                torch.set_num_threads(t or before)
                rows.append({"arch": info["arch"], "threads": t or before, "runtime": f"torch {torch.__version__}",
                             **time_runs(model, x, runs, seconds, warmup)})
    finally:
        torch.set_num_threads(before)
    return rows


@torch.no_grad()
def torch_latency(model, input_size, runs: int = 100, warmup: int = 10, batch: int = 256,
                  throughput_runs: int = 3, on_step=None) -> dict:
    """Batch-1 latency (median over `runs` after `warmup`) and throughput at `batch`, on this CPU.
    `on_step(1)` is called after each timed run (runs + throughput_runs calls)."""
    model.eval()
    x1 = torch.randn(1, *input_size)
    for _ in range(warmup):
        model(x1)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        model(x1)
        times.append(time.perf_counter() - t)
        if on_step:
            on_step(1)
    xb = torch.randn(batch, *input_size)
    model(xb)
    elapsed = 0.0
    for _ in range(throughput_runs):
        t = time.perf_counter()
        model(xb)
        elapsed += time.perf_counter() - t
        if on_step:
            on_step(1)
    rate = batch * throughput_runs / elapsed
    return {"latency_ms_b1": float(np.median(times) * 1000), "throughput_ips": float(rate), "batch": batch,
            "threads": torch.get_num_threads()}


def model_cost(model, input_size) -> dict:
    """Parameters and MACs per image (None when the flop counter cannot see the ops, e.g. TorchScript)."""
    cost = {"params": count_params(model)}
    try:
        macs = int(count_macs(model, tuple(input_size)))
    except Exception:
        macs = 0
    cost["macs"] = macs or None  # TorchScript runs outside Python dispatch: the counter sees nothing
    return cost


def check_classes(model_classes: int, ds: Dataset, what: str = "model") -> None:
    if model_classes != ds.num_classes:
        raise Kd2EdgeError(f"{what} has {model_classes} classes but dataset {ds.name} has {ds.num_classes}; "
                           "use a checkpoint trained on this dataset or the matching --dataset")
    if len(ds.y) and int(ds.y.max()) >= model_classes:
        raise Kd2EdgeError(f"dataset {ds.name} has label {int(ds.y.max())}, outside the {model_classes} classes "
                           f"of the {what}")


def _dataset_name(info: dict) -> str:
    """The dataset a checkpoint was made for: its provenance, a known teacher's, else cifar10."""
    from kd2edge.pretrained import PRETRAINED

    ds = (info.get("provenance") or {}).get("dataset")
    if isinstance(ds, dict):
        ds = ds.get("name") or ds.get("source")
    if ds:
        return str(ds)
    for _, (arch, name, rel, _url) in PRETRAINED.items():
        if Path(info.get("path", "")).name == Path(rel).name:
            return name
    return "cifar10"


def match_classes(ds: Dataset, classes: list[str] | None, what: str) -> Dataset:
    """Relabel `ds` into the checkpoint's class order when both name the same classes in another order;
    fail when the names differ (numeric default names such as '0', '1' count as unnamed)."""
    if not classes or list(classes) == ds.classes:
        return ds
    if all(c.isdigit() for c in ds.classes):  # unnamed (npz) classes take the checkpoint's names
        return ds if len(classes) != ds.num_classes else Dataset(ds.x, ds.y, list(classes), ds.name, ds.split,
                                                                  ds.extra, ds.extra_classes)
    if sorted(classes) != sorted(ds.classes):
        extra, missing = sorted(set(ds.classes) - set(classes)), sorted(set(classes) - set(ds.classes))
        raise Kd2EdgeError(f"{what} classes differ from dataset {ds.name}'s: dataset only {extra[:5]}, "
                           f"{what} only {missing[:5]}; evaluate on the dataset it was trained on")
    index = {c: i for i, c in enumerate(classes)}
    remap = np.asarray([index[c] for c in ds.classes], dtype=np.int64)
    return Dataset(ds.x, remap[ds.y], list(classes), ds.name, ds.split, ds.extra, ds.extra_classes)


def evaluate(checkpoint, arch: str | None = None, dataset: str | None = None, split: str = "test",
             data_dir=None, out=None, limit: int | None = None, batch_size: int = 500,
             latency: bool = True, num_classes: int | None = None, progress=None, threads: int | None = None,
             download: bool = False) -> dict:
    """Evaluate a checkpoint on a dataset split. `progress`: progress bars (kd2edge.progress) or None.
    `threads` sets torch's CPU threads for the whole run. `download`: fetch a missing CIFAR dataset or known
    pretrained checkpoint (needs internet)."""
    if batch_size < 1:
        raise Kd2EdgeError(f"--batch-size must be at least 1, got {batch_size}")
    if threads is not None:
        if threads < 1:
            raise Kd2EdgeError(f"--threads must be at least 1, got {threads}")
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return evaluate(checkpoint, arch, dataset, split, data_dir, out, limit, batch_size, latency,
                            num_classes, progress, download=download)
        finally:
            torch.set_num_threads(before)
    if download and arch_of(checkpoint):
        fetch(str(checkpoint))
    model, info = load_model(checkpoint, arch, num_classes)
    dataset = dataset or _dataset_name(info)
    prep = info.get("preprocessing")
    size = tuple(prep["input_size"][1:]) if info["source"] == "native" and prep and prep.get("input_size") else None
    ds = load_dataset(dataset, split, data_dir, download=download, limit=limit, size=size)
    if prep is None:  # TorchScript without kd2edge metadata: ImageNet statistics, like the foreign teachers
        prep = dict(FOREIGN_PREPROCESSING)
    if info["source"] != "native" or not prep.get("input_size"):  # foreign nets take the dataset's size
        prep = {**prep, "input_size": [3, *ds.x.shape[1:3]]}
    elif size and tuple(ds.x.shape[1:3]) != size:
        raise Kd2EdgeError(f"{info['path']} expects {size[0]}x{size[1]} images but {ds.name} has "
                           f"{ds.x.shape[1]}x{ds.x.shape[2]}; use a dataset of that size")
    what = f"checkpoint {Path(info['path']).name}"
    expected = info.get("num_classes") or num_classes
    if expected:
        check_classes(int(expected), ds, what)
    ds = match_classes(ds, info.get("classes"), what)
    step = progress.task("predict", len(ds), unit="img").advance if progress else None
    logits = predict(model, ds.x, prep, batch_size, on_batch=step)
    check_classes(logits.shape[1], ds, what)
    report = classification_report(logits, ds.y, ds.classes)
    input_size = prep["input_size"]
    result = {"checkpoint": str(info["path"]), "sha256": info["sha256"], "arch": info["arch"],
              "source": info["source"], "dataset": ds.name, "split": split, **report,
              **model_cost(model, input_size), "input_size": list(input_size)}
    if latency:
        runs, throughput_runs = 100, 3
        step = progress.task("latency", runs + throughput_runs, unit="runs").advance if progress else None
        result.update(torch_latency(model, input_size, runs=runs, throughput_runs=throughput_runs, on_step=step))
    if out is not None:
        write_outputs(result, Path(out))
    return result


def write_outputs(result: dict, out: Path, stem: str = "eval") -> None:
    from kd2edge.plots import confusion_png

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{stem}.json", result)
    cm, classes = np.asarray(result["confusion_matrix"]), result["classes"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")  # quotes class names that hold commas
    writer.writerow(["true\\pred", *classes])
    writer.writerows([c, *map(int, r)] for c, r in zip(classes, cm))
    write_text(out / f"{stem}_confusion.csv", buf.getvalue())
    confusion_png(cm, classes, out / f"{stem}_confusion.png",
                  f"{result['arch']} on {result['dataset']} {result['split']} (top-1 {result['top1']:.2f}%)")
