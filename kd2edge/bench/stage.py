"""`kd2edge bench`: latency, accuracy and drift of exported artifacts on the device, without torch.

For each artifact folder (see docs/CONTRACTS.md: meta.json + model file + eval.npz) and thread count:
load time, first inference, warmup, then repeated single-stream runs (mean/std/min/p50/p90/p99, the way
TFLite's benchmark_model reports them), peak RSS and model size; then top-1 on the eval bundle and drift
against the PyTorch student and teacher logits stored beside it. Reports: see `kd2edge.bench.reports`.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from kd2edge import Kd2EdgeError
from kd2edge.artifact import model_size, open_session, read_eval, read_folder
from kd2edge.files import check_out_dir
from kd2edge.bench.protocols import get_protocol, protocol_columns, timing_budget
from kd2edge.bench.sensors import NOT_EXPOSED
from kd2edge.bench.sustained import check as check_sustained, time_sustained
from kd2edge.locations import run_folder
from kd2edge.metrics import agreement, sqnr_db, tied_top1, topk_accuracy
from kd2edge.runtimes import RuntimeUnavailable, Session, check_available
from kd2edge.timing import time_runs


def check_images(x: np.ndarray, session: Session, meta: dict, where) -> None:
    """Fail clearly when images (N,H,W,C) do not fit the model's input."""
    if x.ndim != 4:
        raise Kd2EdgeError(f"{where}: images must be (N,H,W,C), got shape {x.shape}")
    layout = meta["input"].get("layout", "NHWC")
    hwc = tuple(x.shape[1:])
    shown = hwc if layout == "NHWC" else (hwc[2], hwc[0], hwc[1])
    for expected in (meta["input"].get("shape"), session.input_shape):
        dims = list(expected or [])[1:]
        if len(dims) == 3 and any(e not in (None, -1) and e != s for e, s in zip(dims, shown)):
            raise Kd2EdgeError(
                f"{where}: images are {'x'.join(map(str, hwc))} (HxWxC) but the model expects a {layout} input "
                f"of shape {expected}; use an eval bundle / dataset of the model's input size")


# ---- measurements ------------------------------------------------------------------------------------------------

def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux: VmHWM) so the next reading covers one artifact only."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process in MiB (since the last reset where the OS allows one)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2 ** 20 if sys.platform == "darwin" else rss / 2 ** 10  # bytes on macOS, KiB on Linux


def drift(logits: np.ndarray, y: np.ndarray, student: np.ndarray | None = None,
          teacher: np.ndarray | None = None) -> dict:
    """Top-1 on labels; against the PyTorch student: agreement, accuracy delta, max/mean |logit diff|, SQNR;
    against the PyTorch teacher: agreement and accuracy delta (deltas are this artifact minus the reference)."""
    top1 = topk_accuracy(logits, y, 1)
    out = {"n_eval": int(len(y)), "top1": top1, "tied_top1": tied_top1(logits)}
    if student is not None:
        s_top1 = topk_accuracy(student, y, 1)
        diff = np.abs(np.asarray(logits, np.float64) - np.asarray(student, np.float64))
        out.update(student_top1=s_top1, agree_student=agreement(logits, student), delta_student=top1 - s_top1,
                   max_logit_diff=float(diff.max()), mean_logit_diff=float(diff.mean()),
                   sqnr_db=sqnr_db(student, logits))
    if teacher is not None:
        t_top1 = topk_accuracy(teacher, y, 1)
        out.update(teacher_top1=t_top1, agree_teacher=agreement(logits, teacher), delta_teacher=top1 - t_top1)
    return out


def _dataset_images(dataset: str, meta: dict, data_dir=None):
    from kd2edge.data import load_dataset, load_image_folder

    p = Path(dataset).expanduser()
    if p.is_dir():
        shape = meta["input"].get("shape") or [None, None, None, None]
        size = shape[1] if meta["input"].get("layout", "NHWC") == "NHWC" else shape[2]
        return load_image_folder(p, "test", size=size)
    return load_dataset(dataset, "test", data_dir)


def _predict(session: Session, x: np.ndarray, progress) -> np.ndarray:
    task = progress.task("eval", len(x))
    try:
        return session.predict(x, task)
    finally:
        task.done()


# ---- the stage ---------------------------------------------------------------------------------------------------

def bench_one(artifact: dict, threads: int | None, batch: int = 1, runs: int | None = None,
              seconds: float | None = None, warmup: int = 10, dataset=None, progress=None,
              protocol: str = "default", min_queries: int | None = None, min_seconds: float | None = None,
              sustained: float | None = None, window: float | None = None, profile: bool = False) -> dict:
    """One row: timings by the protocol (or a sustained run), top-1 and drift on eval.npz, the accuracy gate
    and, with `profile`, the runtime's per-operator profile."""
    from kd2edge.progress import Bars

    progress = progress or Bars()
    proto = get_protocol(protocol)
    budget = timing_budget(proto, runs, seconds, min_queries, min_seconds)
    meta = artifact["meta"]
    notes = [] if reset_peak_rss() else ["peak RSS is the process's peak so far (cannot be reset here)"]
    notes += [artifact["note"]] if artifact.get("note") else []
    t = time.perf_counter()
    session = open_session(artifact, threads)
    load_ms = (time.perf_counter() - t) * 1000
    ev = read_eval(artifact["eval_path"]) if artifact["eval_path"] else None
    notes += session.notes
    if ev is not None:
        check_images(ev["x"], session, meta, artifact["eval_path"])
        pixels = ev["x"][:batch]
        if len(pixels) < batch:
            pixels = np.resize(pixels, (batch, *pixels.shape[1:]))
    else:
        notes.append("no eval.npz: latency only, on random pixels")
        shape = [d or 32 for d in (meta["input"].get("shape") or [None, 32, 32, 3])]
        hwc = shape[1:] if meta["input"].get("layout", "NHWC") == "NHWC" else [shape[2], shape[3], shape[1]]
        pixels = np.random.default_rng(0).integers(0, 256, (batch, *hwc), dtype=np.uint8)
    x = session.prepare(pixels)
    session.resize(batch)  # a fixed-batch model refuses any other batch here, with the fix in the message
    t = time.perf_counter()
    try:
        out = session.run(x)
    except Exception as e:
        raise Kd2EdgeError(f"{artifact['name']}: inference at batch {batch} failed: {str(e).splitlines()[0]}"
                           " (a model exported with a fixed batch runs only at that batch: try --batch 1)") from None
    first_ms = (time.perf_counter() - t) * 1000
    k = int(np.asarray(out).reshape(batch, -1).shape[1])
    row = {"artifact": artifact["name"], "target": meta["target"], "precision": meta["precision"],
           "runtime": session.runtime, "runtime_version": session.version,
           "threads": session.threads, "batch": batch, "model_mb": model_size(artifact["model_path"]) / 2 ** 20,
           "load_ms": load_ms, "first_ms": first_ms, "warmup": warmup}
    if ev is not None:
        y = ev["y"]
        if y.dtype.kind not in "iu" or (len(y) and (y.min() < 0 or y.max() >= k)):
            raise Kd2EdgeError(f"{artifact['eval_path']}: labels y must be integers in [0, {k}) for a {k}-class "
                               f"model, got {y.dtype} {y.min() if len(y) else ''}..{y.max() if len(y) else ''}; "
                               "re-export the artifact")
    if sustained is not None:
        row.update(time_sustained(session.run, x, sustained, warmup, window, progress))
        notes += [f"CPU {what} {NOT_EXPOSED} by this OS ({where})" for what, key, where in (
            ("temperature", "temp_c_first", "/sys/class/thermal"), ("frequency", "freq_mhz_first", "cpufreq"))
            if row[key] is None]
    else:
        row.update(time_runs(session.run, x, warmup=warmup, progress=progress, **budget))
    if profile:
        from kd2edge.bench.profile import profile as op_profile, top_text

        row["profile"] = op_profile(artifact, x, threads)
        row["profile_top"] = top_text(row["profile"]) or row["profile"].get("missing")
    if ev is not None:
        for key in ("student_logits", "teacher_logits"):
            if key in ev and ev[key].shape[1:] != (k,):
                raise Kd2EdgeError(f"{artifact['eval_path']}: {key} has shape {ev[key].shape} but the model "
                                   f"outputs {k} classes; the bundle belongs to another model, re-export it")
        logits = _predict(session, ev["x"], progress)
        row.update(drift(logits, ev["y"].astype(np.int64), ev.get("student_logits"), ev.get("teacher_logits")))
    if dataset is not None:
        ds = _dataset_images(str(dataset), meta)
        check_images(ds.x, session, meta, dataset)
        logits = _predict(session, ds.x, progress)
        if logits.shape[1] < ds.num_classes:
            raise Kd2EdgeError(f"{dataset} has {ds.num_classes} classes but the model outputs {logits.shape[1]}")
        row.update(dataset=str(dataset), dataset_n=len(ds), dataset_top1=topk_accuracy(logits, ds.y, 1))
    row.update(protocol_columns(proto, row, budget))
    row.update(status="ok", peak_rss_mb=peak_rss_mb(), note="; ".join(notes), path=str(artifact["dir"]))
    return row


def skipped_row(artifact: dict, threads, batch: int, reason: str) -> dict:
    """A row for an artifact this platform cannot run (kept out of bench.csv): every latency key is None."""
    meta = artifact["meta"]
    return {"artifact": artifact["name"], "target": meta["target"], "precision": meta["precision"],
            "runtime": meta["runtime"], "runtime_version": None, "threads": threads, "batch": batch,
            "model_mb": model_size(artifact["model_path"]) / 2 ** 20, "status": "skipped", "note": reason,
            "path": str(artifact["dir"]), **{k: None for k in ("load_ms", "first_ms", "runs", "mean_ms", "std_ms",
                                                                "min_ms", "max_ms", "p50_ms", "p90_ms", "p99_ms")}}


def bench(artifacts, threads=None, batch: int = 1, runs: int | None = None, seconds: float | None = None,
          warmup: int = 10, dataset=None, out=None, write: bool = True,
          progress: bool = True, protocol: str = "default", min_queries: int | None = None,
          min_seconds: float | None = None, sustained: float | None = None, window: float | None = None,
          profile: bool = False, verify: bool = True) -> list[dict]:
    """Benchmark artifact folders; one row per (artifact, thread count). `threads`: None (all cores), an int or
    a list of ints. `protocol`: a key of PROTOCOLS (mlperf: >= 1,024 queries and >= 60 s, p90, accuracy gate);
    `sustained`: minutes of back-to-back runs reported per `window` seconds (default one minute, a
    third of a shorter run) instead; `profile`: per-operator
    times where the runtime offers them. Rows carry the device fingerprint; with `write`, JSON + CSV (+ PNG)
    go to `out`."""
    from kd2edge.bench.fingerprint import fingerprint
    from kd2edge.bench.reports import write_reports
    from kd2edge.progress import progress_bars

    if isinstance(artifacts, (str, Path)):
        artifacts = [artifacts]
    if not artifacts:
        raise Kd2EdgeError("no artifact folders given (e.g. kd2edge bench exports/student-tflite-int8)")
    if batch < 1 or (runs is not None and runs < 1) or (seconds is not None and seconds <= 0) or warmup < 0:
        raise Kd2EdgeError("--batch and --runs must be >= 1, --seconds > 0, --warmup >= 0")
    timing_budget(get_protocol(protocol), runs, seconds, min_queries, min_seconds)  # bad flags: before any work
    check_sustained(sustained, window)
    if sustained is not None and (runs is not None or seconds is not None or protocol != "default"):
        raise Kd2EdgeError("--sustained times for its own duration: leave out --runs/--seconds/--protocol")
    thread_list = threads if isinstance(threads, (list, tuple)) else [threads]
    if any(t is not None and int(t) < 1 for t in thread_list):
        raise Kd2EdgeError(f"--threads must be >= 1, got {thread_list}")
    if write:
        from kd2edge.bench.reports import existing_csv

        existing_csv(Path(check_out_dir(out)) / "bench.csv")
    loaded = [read_folder(a, verify) for a in artifacts]  # check every folder before measuring anything
    unavailable = {}  # runtime packages that cannot exist here (32-bit Arm, CoreML off macOS): skipped rows
    for art in loaded:
        try:
            check_available(art["meta"]["runtime"], art["meta"])  # not installed, or older than min_runtime: now
        except RuntimeUnavailable as e:
            unavailable[art["name"]] = e
    if len(unavailable) == len(loaded):
        first = next(iter(unavailable.values()))
        raise first if len(loaded) == 1 else Kd2EdgeError(f"no artifact could run here: {first}")
    device = fingerprint()
    rows = []
    # no refresh thread competing with the timed runs: bars are redrawn between runs only
    with progress_bars(progress, auto_refresh=False) as bars:
        for art in loaded:
            for t in thread_list:
                bars.print(f"bench {art['name']} threads={t or 'all'} batch={batch}")
                try:
                    if art["name"] in unavailable:
                        raise unavailable[art["name"]]
                    row = bench_one(art, t, batch, runs, seconds, warmup, dataset, bars, protocol, min_queries,
                                    min_seconds, sustained, window, profile)
                except RuntimeUnavailable as e:  # e.g. CoreML on Linux: bench the others, say why this one not
                    if len(loaded) == 1:
                        raise
                    row = skipped_row(art, t, batch, str(e))
                rows.append({**row, **_device_cols(device)})
    if not any(r["status"] == "ok" for r in rows):
        raise Kd2EdgeError(f"no artifact could run here: {rows[0]['note']}")
    if write:
        write_reports(rows, device, out or run_folder("bench"))
    return rows


def _device_cols(device: dict) -> dict:
    """The fingerprint columns every row carries (bench.csv stays comparable across boards)."""
    return {"device_id": device["device_id"], "cpu": device["cpu"], "board": device["board"], "arch": device["arch"],
            "cores": device["cores"], "isa": " ".join(x.replace(" ", "_") for x in device["isa"]),
            "os": device["os"], "python": device["python"], "governor": device.get("governor") or NOT_EXPOSED,
            "runtimes": ", ".join(f"{k} {v}" for k, v in device.get("runtimes", {}).items()),
            "source": "kd2edge bench", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
