"""`kd2edge eval`: accuracy, per-class precision/recall/F1, confusion matrix, latency, params and MACs."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from kd2edge import Kd2EdgeError
from kd2edge.batches import normalize
from kd2edge.checkpoint import load_model
from kd2edge.data import Dataset, load_dataset
from kd2edge.metrics import classification_report
from kd2edge.paths import write_json, write_text
from kd2edge.zoo import count_macs, count_params


@torch.no_grad()
def predict(model, x_uint8: np.ndarray, preprocessing: dict, batch_size: int = 500) -> np.ndarray:
    """Logits (float32 numpy) of `model` on uint8 NHWC images."""
    model.eval()
    out = []
    for i in range(0, len(x_uint8), batch_size):
        out.append(model(normalize(x_uint8[i:i + batch_size], preprocessing)).float())
    return torch.cat(out).numpy()


@torch.no_grad()
def torch_latency(model, input_size, runs: int = 100, warmup: int = 10, batch: int = 256,
                  throughput_runs: int = 3) -> dict:
    """Batch-1 latency (median over `runs` after `warmup`) and throughput at `batch`, on this CPU."""
    model.eval()
    x1 = torch.randn(1, *input_size)
    for _ in range(warmup):
        model(x1)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        model(x1)
        times.append(time.perf_counter() - t)
    xb = torch.randn(batch, *input_size)
    model(xb)
    t = time.perf_counter()
    for _ in range(throughput_runs):
        model(xb)
    rate = batch * throughput_runs / (time.perf_counter() - t)
    return {"latency_ms_b1": float(np.median(times) * 1000), "throughput_ips": float(rate), "batch": batch,
            "threads": torch.get_num_threads()}


def model_cost(model, input_size) -> dict:
    cost = {"params": count_params(model)}
    try:
        cost["macs"] = int(count_macs(model, tuple(input_size)))
    except Exception:  # TorchScript modules cannot always be traced by the flop counter
        cost["macs"] = None
    return cost


def check_classes(model_classes: int, ds: Dataset, what: str = "model") -> None:
    if model_classes != ds.num_classes:
        raise Kd2EdgeError(f"{what} has {model_classes} classes but dataset {ds.name} has {ds.num_classes}; "
                           "use a checkpoint trained on this dataset or the matching --dataset")


def evaluate(checkpoint, arch: str | None = None, dataset: str | None = None, split: str = "test",
             data_dir=None, out=None, limit: int | None = None, batch_size: int = 500,
             latency: bool = True) -> dict:
    model, info = load_model(checkpoint, arch)
    dataset = dataset or info.get("provenance", {}).get("dataset") or "cifar10"
    ds = load_dataset(dataset, split, data_dir, limit=limit)
    prep = info["preprocessing"] or {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                     "input_size": [3, *ds.x.shape[1:3]]}
    logits = predict(model, ds.x, prep, batch_size)
    check_classes(logits.shape[1], ds)
    report = classification_report(logits, ds.y, info.get("classes") or ds.classes)
    input_size = prep.get("input_size") or [3, *ds.x.shape[1:3]]
    result = {"checkpoint": str(info["path"]), "sha256": info["sha256"], "arch": info["arch"],
              "source": info["source"], "dataset": ds.name, "split": split, **report,
              **model_cost(model, input_size)}
    if latency:
        result.update(torch_latency(model, input_size))
    if out is not None:
        write_outputs(result, Path(out))
    return result


def write_outputs(result: dict, out: Path, stem: str = "eval") -> None:
    from kd2edge.plots import confusion_png

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{stem}.json", result)
    cm, classes = np.asarray(result["confusion_matrix"]), result["classes"]
    rows = [",".join(["true\\pred", *classes])] + [",".join([c, *map(str, r)]) for c, r in zip(classes, cm)]
    write_text(out / f"{stem}_confusion.csv", "\n".join(rows) + "\n")
    confusion_png(cm, classes, out / f"{stem}_confusion.png",
                  f"{result['arch']} on {result['dataset']} {result['split']} (top-1 {result['top1']:.2f}%)")
