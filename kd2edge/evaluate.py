"""`kd2edge eval`: accuracy, per-class precision/recall/F1, confusion matrix, latency, params and MACs."""
from __future__ import annotations

import csv
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from kd2edge import Kd2EdgeError
from kd2edge.batches import normalize
from kd2edge.checkpoint import load_model
from kd2edge.data import Dataset, load_dataset
from kd2edge.metrics import classification_report
from kd2edge.pretrained import arch_of, fetch
from kd2edge.files import check_out_dir, sha256, write_json, write_text
from kd2edge.numbers import number
from kd2edge.zoo import count_macs, count_params


@torch.no_grad()
def predict(model, x_uint8: np.ndarray, preprocessing: dict, batch_size: int = 500, on_batch=None) -> np.ndarray:
    """Logits (float32 numpy) of `model` on uint8 NHWC images fed as `preprocessing` (a checkpoint's record
    or an input contract) says; `on_batch(n)` is called after each batch."""
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


MATCH_CLASSES = ("name", "index")


def match_classes(ds: Dataset, classes: list[str] | None, what: str, mode: str = "name") -> Dataset:
    """Relabel `ds` into the model's class order when both name the same classes (in any order). Classes that
    cannot be matched by name (unnamed .npz classes '0', '1', ... against a model's names, or other names)
    are refused unless `mode` is "index" (label i = the model's class i), which is said in one line. A model
    that records no class names is matched by index (there is nothing else), also said in one line."""
    if mode not in MATCH_CLASSES:
        raise Kd2EdgeError(f"unknown --match-classes {mode!r}; valid: {', '.join(MATCH_CLASSES)}")
    if not classes:
        if not ds.name.startswith("cifar"):
            print(f"note: {what} records no class names: dataset {ds.name}'s labels are taken as its class indices",
                  file=sys.stderr, flush=True)
        return ds
    if list(classes) == ds.classes:
        return ds
    if mode == "index" or len(classes) != ds.num_classes:
        if len(classes) == ds.num_classes:
            print(f"note: --match-classes index: label i of {ds.name} is taken as {what}'s class i "
                  f"({classes[0]}, {classes[1] if len(classes) > 1 else ''} ...)", file=sys.stderr, flush=True)
            return Dataset(ds.x, ds.y, list(classes), ds.name, ds.split, ds.extra, ds.extra_classes)
        return ds  # a class-count mismatch is reported by check_classes
    if all(c.isdigit() for c in ds.classes):
        raise Kd2EdgeError(f"dataset {ds.name} names no classes (labels 0..{ds.num_classes - 1}) but {what} has "
                           f"named classes ({', '.join(classes[:3])} ...): they cannot be matched by name; add a "
                           "`classes` array to the .npz, or pass --match-classes index if label i is class i")
    if sorted(classes) != sorted(ds.classes):
        extra, missing = sorted(set(ds.classes) - set(classes)), sorted(set(classes) - set(ds.classes))
        raise Kd2EdgeError(f"{what} classes differ from dataset {ds.name}'s: dataset only {extra[:5]}, "
                           f"{what} only {missing[:5]}; evaluate on the dataset it was trained on, or pass "
                           "--match-classes index if label i is class i")
    index = {c: i for i, c in enumerate(classes)}
    remap = np.asarray([index[c] for c in ds.classes], dtype=np.int64)
    return Dataset(ds.x, remap[ds.y], list(classes), ds.name, ds.split, ds.extra, ds.extra_classes)


def model_contract(info: dict, spec=None, flag: str = "--input") -> tuple[dict, str]:
    """The input contract of a model from kd2edge.checkpoint.load_model, and the one line saying which and why:
    `spec` (the user's flag), else the checkpoint's / kd2edge.json's record, else ImageNet (foreign files)."""
    from kd2edge.input_contract import resolve_contract

    why = {"native": "recorded in the kd2edge checkpoint",
           "foreign": "a foreign state dict: ImageNet mean/std, the convention of the shared CIFAR teachers",
           "torchscript": "the kd2edge.json record inside the TorchScript file"}[info["source"]]
    recorded = info.get("preprocessing")
    if recorded and info["source"] != "native":
        recorded = {**recorded, "input_size": None}  # foreign nets take the dataset's size
    return resolve_contract(spec, recorded, why, "imagenet", "a TorchScript file without a kd2edge.json record: "
                            "assumed ImageNet normalization (torchvision/timm convention)", flag)


def load_predictor(spec, arch: str | None = None, num_classes: int | None = None, contract=None,
                   flag: str = "--input") -> dict:
    """Any model eval accepts, as {predict(x_uint8, on_batch) -> logits, info, contract, line, model}: a
    native/foreign/TorchScript checkpoint or known name (model = the torch module), an .onnx file or an
    artifact folder (model None; run by kd2edge.runtimes). `contract` overrides what the file records."""
    from kd2edge.input_contract import (ONNX_GUESS, onnx_default, onnx_layout, onnx_record, resolve_contract,
                                        run_session)

    p = Path(str(spec)).expanduser()
    if p.is_dir():
        from kd2edge.artifact import open_session, read_folder

        if contract is not None:
            raise Kd2EdgeError(f"{p} is an artifact folder: its input is fixed by its meta.json (raw pixels, "
                               f"normalization inside); drop {flag}")
        art = read_folder(p)
        meta, session = art["meta"], open_session(art)
        shape = meta["input"].get("shape") or []
        hw = shape[1:3] if meta["input"].get("layout", "NHWC") == "NHWC" else shape[2:4]
        c, line = resolve_contract(None, {"mean": [0.0] * 3, "std": [1 / 255] * 3, "layout": meta["input"]["layout"],
                                          "channel_order": "RGB", "input_size": [3, *hw], "name": "raw255"},
                                   "the artifact's meta.json (raw pixels, normalization inside)", "", "", flag)
        info = {"path": str(art["model_path"]), "sha256": sha256(art["model_path"]), "arch": meta.get("name"),
                "source": f"artifact {meta['target']} {meta['precision']}", "classes": meta.get("classes"),
                "num_classes": (meta.get("source") or {}).get("num_classes"),
                "provenance": {"dataset": (meta.get("source") or {}).get("dataset")}}
        return {"predict": lambda x, on_batch=None: _session_predict(session.predict, x, on_batch), "info": info,
                "contract": c, "line": line, "model": None}
    if p.suffix == ".onnx":
        from kd2edge.locations import resolve_file
        from kd2edge.runtimes import load_session

        path = resolve_file(p)
        session = load_session("onnxruntime", path, torch.get_num_threads())
        session.name = str(path)
        recorded, why, size = onnx_record(session)
        c, line = resolve_contract(contract, recorded, why, onnx_default(session), ONNX_GUESS, flag, size,
                                   onnx_layout(session))
        meta = _json(session.metadata.get("kd2edge"))
        info = {"path": str(path), "sha256": sha256(path), "arch": meta.get("name") or "onnx", "source": "onnx",
                "classes": meta.get("classes") or _json(session.metadata.get("classes")) or None,
                "num_classes": (meta.get("source") or {}).get("num_classes"),
                "provenance": {"dataset": (meta.get("source") or {}).get("dataset")}}
        return {"predict": lambda x, on_batch=None: _session_predict(
                    lambda xs: run_session(session, xs, c), x, on_batch), "info": info, "contract": c, "line": line,
                "model": None}
    model, info = load_model(spec, arch, num_classes)
    c, line = model_contract(info, contract, flag)
    return {"predict": lambda x, on_batch=None, bs=500: predict(model, x, c, bs, on_batch), "info": info,
            "contract": c, "line": line, "model": model}


def _json(text):
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {}


def _session_predict(fn, x: np.ndarray, on_batch=None, batch: int = 500) -> np.ndarray:
    out = []
    for i in range(0, len(x), batch):
        out.append(fn(x[i:i + batch]))
        if on_batch:
            on_batch(len(out[-1]))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def evaluate(checkpoint, arch: str | None = None, dataset: str | None = None, split: str = "test",
             data_dir=None, out=None, limit: int | None = None, batch_size: int = 500,
             latency: bool = True, num_classes: int | None = None, progress=None, threads: int | None = None,
             download: bool = False, contract=None, match: str = "name") -> dict:
    """Evaluate a model on a dataset split: a checkpoint (native, foreign, TorchScript, known name), an .onnx
    file or an artifact folder, fed as `contract` says (else as it records, else a stated guess; see
    kd2edge.input_contract). `progress`: progress bars (kd2edge.progress) or None. `threads` sets torch's CPU
    threads for the whole run. `download`: fetch a missing CIFAR dataset or known pretrained checkpoint.
    `match`: how dataset classes meet the model's ("name", or "index")."""
    if batch_size < 1:
        raise Kd2EdgeError(f"--batch-size must be at least 1, got {batch_size}")
    number("--num-classes", num_classes, integer=True, low=1, none=True)
    if out is not None:
        check_out_dir(out)
    if threads is not None:
        if threads < 1:
            raise Kd2EdgeError(f"--threads must be at least 1, got {threads}")
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return evaluate(checkpoint, arch, dataset, split, data_dir, out, limit, batch_size, latency,
                            num_classes, progress, download=download, contract=contract, match=match)
        finally:
            torch.set_num_threads(before)
    if download and arch_of(checkpoint):
        fetch(str(checkpoint))
    pred = load_predictor(checkpoint, arch, num_classes, contract)
    info, prep, model = pred["info"], pred["contract"], pred["model"]
    dataset = dataset or _dataset_name(info)
    size = tuple(prep["input_size"][1:]) if prep.get("input_size") else None
    ds = load_dataset(dataset, split, data_dir, download=download, limit=limit, size=size)
    if not prep.get("input_size"):  # foreign nets take the dataset's size
        prep = {**prep, "input_size": [3, *ds.x.shape[1:3]]}
    elif size and tuple(ds.x.shape[1:3]) != size:
        raise Kd2EdgeError(f"{info['path']} expects {size[0]}x{size[1]} images but {ds.name} has "
                           f"{ds.x.shape[1]}x{ds.x.shape[2]}; use a dataset of that size")
    what = f"checkpoint {Path(info['path']).name}"
    expected = info.get("num_classes") or num_classes
    if expected:
        check_classes(int(expected), ds, what)
    ds = match_classes(ds, info.get("classes"), what, match)
    step = progress.task("predict", len(ds), unit="img").advance if progress else None
    logits = pred["predict"](ds.x, on_batch=step) if model is None else \
        pred["predict"](ds.x, on_batch=step, bs=batch_size)
    check_classes(logits.shape[1], ds, what)
    report = classification_report(logits, ds.y, ds.classes)
    input_size = prep["input_size"]
    result = {"checkpoint": str(info["path"]), "sha256": info["sha256"], "arch": info["arch"],
              "source": info["source"], "dataset": ds.name, "split": split, **report,
              "input": prep, "input_line": pred["line"], "input_size": list(input_size)}
    chance = 100.0 / ds.num_classes
    if len(ds) >= 100 and report["top1"] < 3 * chance:
        result["warning"] = (f"top-1 {report['top1']:.1f}% is below 3x chance ({3 * chance:.1f}%): the input "
                             f"contract is probably wrong; try --input raw255, unit, imagenet or cifar10 "
                             "(docs/TEACHERS.md)")
    if model is not None:
        result.update(model_cost(model, input_size) if prep.get("layout", "NCHW") == "NCHW" else
                      {"params": count_params(model), "macs": None})
        if latency:
            runs, throughput_runs = 100, 3
            step = progress.task("latency", runs + throughput_runs, unit="runs").advance if progress else None
            result.update(torch_latency(model, input_size if prep.get("layout", "NCHW") == "NCHW" else
                                        [*input_size[1:], input_size[0]], runs=runs,
                                        throughput_runs=throughput_runs, on_step=step))
    else:
        result.update(params=None, macs=None)
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


from kd2edge import api_module  # noqa: E402

api_module(__name__)  # `from kd2edge import evaluate` is callable (kd2edge.api)
