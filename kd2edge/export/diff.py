"""`kd2edge diff ARTIFACT`: where does an artifact drift from its PyTorch checkpoint, layer by layer?

The artifact and the checkpoint named in its meta.json (source.checkpoint) run side by side on the first N
test images of the artifact's eval.npz (kd2edge.export.taps reads the intermediate tensors of both). Each
artifact tensor is matched with the PyTorch graph tensor of the same shape (NCHW) that it is most similar to
(per-channel correlation on the first batch): fused layers (conv+BN, conv+ReLU, add+ReLU) then match the PyTorch
node whose output the fused op computes, whatever the converter named it, and a layer whose scale is wrong
still matches its own counterpart (a per-channel scale or offset does not change a correlation). For each match the SQNR over all N
images is reported, in the artifact's execution order (depth); the first tensor below the threshold names
where the drift starts. fp32 artifacts are expected to be at parity (threshold 60 dB by default).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from kd2edge import Kd2EdgeError, require

THRESHOLD_DB = {"fp32": 60.0}  # parity; every reduced precision: DEFAULT_THRESHOLD_DB
DEFAULT_THRESHOLD_DB = 20.0
BATCH = 8
TIE = 2e-3  # similarity within which candidates count as the same layer


def diff(artifact, images: int = 32, threshold: float | None = None, out=None, data_dir=None) -> dict:
    """Per-layer SQNR of `artifact` (a folder) against its PyTorch checkpoint; writes diff.json and diff.png
    into `out` (default runs/diff/<artifact name>) and returns the report."""
    require("torch", "export")
    from kd2edge.artifact import open_session, read_eval, read_folder
    from kd2edge.checkpoint import load_model
    from kd2edge.export.taps import onnx_runner, tflite_runner, torch_runner

    art = read_folder(artifact, verify=False)  # a diagnosis: edited or damaged files are what it looks into
    meta = art["meta"]
    if images < 1:
        raise Kd2EdgeError("--images must be >= 1")
    src = meta.get("source") or {}
    ckpt = src.get("checkpoint")
    if not ckpt or not Path(ckpt).is_file():
        raise Kd2EdgeError(f"{art['dir']}: its PyTorch checkpoint {ckpt or '(none recorded)'} is missing; "
                           "diff needs the checkpoint the artifact was exported from (meta.json source.checkpoint)")
    runners = {"onnxruntime": lambda: onnx_runner(art["model_path"]),
               "litert": lambda: tflite_runner(art["model_path"], open_session(art, threads=1))}
    if meta["runtime"] not in runners:
        raise Kd2EdgeError(f"diff reads intermediate tensors of onnxruntime and litert artifacts, not "
                           f"{meta['runtime']} ({meta['target']})")
    x = _images(art, images, data_dir)
    model, info = load_model(ckpt, src.get("arch"))
    notes = [] if info["sha256"] == src.get("sha256") else [
        f"checkpoint {ckpt} changed since export (sha256 differs): drift may be the checkpoint's"]
    labels, run = runners[meta["runtime"]]()
    t_labels, t_run = torch_runner(model, meta["preprocessing"], x[:2])
    matches, acc = None, None
    for i in range(0, len(x), BATCH):
        a_outs, t_outs = run(x[i:i + BATCH]), t_run(x[i:i + BATCH])
        if matches is None:
            matches = [_match(a, t_outs) for a in a_outs]
            acc = np.zeros((len(a_outs), 2))
        for j, (a, m) in enumerate(zip(a_outs, matches)):
            if m is not None:
                ref = t_outs[m[0]].astype(np.float64)
                acc[j] += (np.sum(ref ** 2), np.sum((ref - a) ** 2))
    precision = meta["precision"]
    threshold = THRESHOLD_DB.get(precision, DEFAULT_THRESHOLD_DB) if threshold is None else float(threshold)
    layers = []
    for j, (label, m) in enumerate(zip(labels, matches)):
        if m is None:
            continue
        signal, noise = acc[j]
        sqnr = math.inf if noise == 0 else 10 * math.log10(signal / noise) if signal > 0 else -math.inf
        layers.append({"depth": len(layers), "artifact_tensor": label, "pytorch": t_labels[m[0]],
                       "shape": list(a_outs[j].shape[1:]), "similarity": round(m[1], 6), "sqnr_db": sqnr})
    first = next((r for r in layers if r["sqnr_db"] < threshold), None)
    report = {"artifact": str(art["dir"]), "name": art["name"], "target": meta["target"], "precision": precision,
              "runtime": meta["runtime"], "checkpoint": ckpt, "images": int(len(x)), "threshold_db": threshold,
              "layers": layers, "unmatched": len(labels) - len(layers), "first_below": first,
              "parity": first is None, "notes": notes}
    out = Path(out) if out else Path("runs") / "diff" / art["name"]
    _write(report, out)
    return report


def _images(art: dict, n: int, data_dir) -> np.ndarray:
    """The first n test images: the artifact's eval.npz, or the dataset when it holds fewer."""
    from kd2edge.artifact import read_eval

    x = read_eval(art["eval_path"])["x"] if art["eval_path"] else np.zeros((0,))
    if len(x) >= n:
        return x[:n]
    from kd2edge.data import load_dataset

    return load_dataset((art["meta"].get("source") or {}).get("dataset") or "cifar10", "test", data_dir, limit=n).x


def _match(a: np.ndarray, t_outs: dict):
    """(PyTorch node name, similarity) of the same-shape PyTorch tensor most similar to `a`, or None.
    Similarity: the per-channel correlation (axis 1) averaged over channels that vary, so a layer whose
    scale, zero point or bias is wrong still matches its own counterpart. Nodes equal up to a per-channel
    affine map (conv and the BN after it) tie; of those within TIE of the best, the closest in value wins."""
    scored = []
    ac = _centered(a)
    for name, t in t_outs.items():
        if t.shape != a.shape:
            continue
        tc = _centered(t)
        den = np.linalg.norm(ac, axis=0) * np.linalg.norm(tc, axis=0)
        ok = den > 0
        sim = float(np.mean(np.sum(ac * tc, axis=0)[ok] / den[ok])) if ok.any() else (
            1.0 if np.array_equal(a, t) else 0.0)
        scored.append((sim, name))
    if not scored:
        return None
    top = max(s for s, _ in scored)
    close = [(float(np.sum((t_outs[n].astype(np.float64) - a) ** 2)), n, s) for s, n in scored if s >= top - TIE]
    _, name, sim = min(close)
    return name, sim


def _centered(a: np.ndarray) -> np.ndarray:
    """Channel-major 2-D view (samples x channels), each channel minus its mean."""
    m = np.moveaxis(np.asarray(a, np.float64), 1, -1).reshape(-1, a.shape[1])
    return m - m.mean(0)


def table_rows(report: dict) -> list[list]:
    """depth, artifact tensor, PyTorch layer, SQNR, flag: cut to fit 100 columns."""
    first = report["first_below"]
    return [[r["depth"], _cut(r["artifact_tensor"], 34), _cut(r["pytorch"], 32), _db(r["sqnr_db"]),
             "<- first" if first and r["depth"] == first["depth"] else
             ("low" if r["sqnr_db"] < report["threshold_db"] else "")] for r in report["layers"]]


def _cut(s: str, n: int) -> str:
    return s if len(s) <= n else s[:n - 1] + "…"


def _db(v: float) -> str:
    return "inf" if v == math.inf else f"{v:.1f}"


def _write(report: dict, out: Path) -> None:
    from kd2edge.files import write_json
    from kd2edge.plots import _pyplot, _save

    write_json(out / "diff.json", {**report, "layers": [{**r, "sqnr_db": _json_db(r["sqnr_db"])}
                                                         for r in report["layers"]],
                                   "first_below": report["first_below"] and {
                                       **report["first_below"], "sqnr_db": _json_db(report["first_below"]["sqnr_db"])}})
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.5))
    y = [min(r["sqnr_db"], 150.0) for r in report["layers"]]
    ax.plot(range(len(y)), y, marker=".", label="SQNR vs PyTorch")
    ax.axhline(report["threshold_db"], color="red", ls="--", lw=1, label=f"threshold {report['threshold_db']:g} dB")
    if report["first_below"]:
        f = report["first_below"]
        ax.annotate(f["pytorch"], (f["depth"], y[f["depth"]]), textcoords="offset points", xytext=(5, 10),
                    fontsize=8, color="red")
    ax.set_xlabel("layer depth (artifact execution order)")
    ax.set_ylabel("SQNR (dB, inf shown as 150)")
    ax.set_title(f"{report['name']} ({report['precision']}) vs PyTorch, {report['images']} test images")
    ax.legend(fontsize=8)
    _save(fig, out / "diff.png")
    report["json"], report["png"] = str(out / "diff.json"), str(out / "diff.png")


def _json_db(v: float):
    return v if math.isfinite(v) else ("inf" if v > 0 else "-inf")
