"""ONNX int8: int8 vs uint8 activations in the QDQ graph `kd2edge export -t onnx --int8` writes.

onnxruntime fuses a QDQ Conv into an integer kernel for uint8 activations on every CPU, but for int8 activations
only where `session.qdqisint8allowed` is on (ARM by default, not x86): on x86 an int8-activation graph runs its
convolutions in float between Q/DQ pairs. For each checkpoint, the same fp32 ONNX graph is quantized both ways
with the same calibration images (training split, export's default pick), and both are run side by side:
top-1, drop and agreement against the PyTorch fp32 model on all 10,000 CIFAR-10 test images, and batch-1
latency (p50 over interleaved rounds, 1 and 2 threads) next to the fp32 graph.

    .venv/bin/python benchmarks/onnx_activations.py [--checkpoint PATH[:ARCH] ...] [--tag onnx_activations]

Writes benchmarks/results/<tag>.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from time_budget import cpu_isa, loadavg  # noqa: E402

SHARED = ROOT.parent / "shared" / "weights" / "cifar10"
DEFAULT = [f"{SHARED / 'resnet20-12fca82f.th'}:resnet20", f"{SHARED / 'resnet56-4bfd9763.th'}:resnet56"]


def latency(sessions: dict, x: np.ndarray, rounds: int, per_round: int) -> dict:
    """p50 ms of batch-1 calls per session; rounds interleave the sessions so load changes hit all alike."""
    times = {k: [] for k in sessions}
    for _ in range(rounds):
        for name, s in sessions.items():
            s.run(x[:1])
            for i in range(per_round):
                t = time.perf_counter()
                s.run(x[i % len(x):i % len(x) + 1])
                times[name].append(time.perf_counter() - t)
    return {k: round(1000 * statistics.median(v), 4) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", nargs="+", default=DEFAULT, help="PATH or PATH:ARCH")
    ap.add_argument("--calib-images", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--per-round", type=int, default=200)
    ap.add_argument("--tag", default="onnx_activations")
    args = ap.parse_args()

    from kd2edge.data import load_dataset
    from kd2edge.export import onnx as onnx_t
    from kd2edge.export.stage import calibration_pick, load_source
    from kd2edge.metrics import agreement, topk_accuracy
    from kd2edge.onnx_graph import quantize_graph
    from kd2edge.runtimes import load_session

    rows, t0 = [], time.time()
    cpu = cpu_isa()
    print(f"load before: {loadavg()}; CPU {cpu['model']} ({cpu['summary']})", flush=True)
    for spec in args.checkpoint:
        path, _, arch = spec.partition(":")
        src = load_source(path, arch or None, eval_images=10000, calib_images=1)
        train = load_dataset(src.dataset, "train")
        calib = train.x[calibration_pick(train.y, args.calib_images, "random", 0)]
        assert train.split == "train"
        test_x, y, ref = src.test.x, src.test.y, src.reference
        x = test_x.astype(np.float32)
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = Path(tmp) / "fp32.onnx"
            onnx_t._export_fp32(src.model, src.preprocessing, fp32, calib)
            files = {"fp32": fp32}
            for act in ("int8", "uint8"):
                files[act] = Path(tmp) / f"{act}.onnx"
                quantize_graph(fp32, files[act], calib, "minmax", activations=act)
            for threads in (1, 2):
                sessions = {k: load_session("onnxruntime", f, threads=threads) for k, f in files.items()}
                lat = latency(sessions, x, args.rounds, args.per_round)
                for k, s in sessions.items():
                    logits = s.predict(test_x) if threads == 1 else None
                    row = {"checkpoint": Path(path).name, "arch": src.info["arch"], "graph": k, "threads": threads,
                           "p50_ms": lat[k], "loadavg": loadavg().split()[0]}
                    if logits is not None:
                        top1 = topk_accuracy(logits, y)
                        row.update(top1=round(top1, 2), drop=round(topk_accuracy(ref, y) - top1, 2),
                                   agreement=round(agreement(logits, ref), 2))
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    result = {"rows": rows, "cpu": cpu, "load_after": loadavg(), "wall_s": round(time.time() - t0, 1),
              "calib_images": args.calib_images, "command": "benchmarks/onnx_activations.py " + " ".join(sys.argv[1:])}
    out = ROOT / "benchmarks" / "results" / f"{args.tag}.json"
    from kd2edge.files import write_json

    write_json(out, result)
    acc = {(r["arch"], r["graph"]): r for r in rows if "top1" in r}
    print("| model | graph | top-1 (%) | drop vs PyTorch fp32 (pt) | agreement (%) | p50 1 thr (ms) | p50 2 thr (ms) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["threads"] != 1:
            continue
        two = next(q["p50_ms"] for q in rows if q["arch"] == r["arch"] and q["graph"] == r["graph"] and q["threads"] == 2)
        a = acc[(r["arch"], r["graph"])]
        print(f"| {r['arch']} | {r['graph']} | {a['top1']:.2f} | {a['drop']:+.2f} | {a['agreement']:.2f} | "
              f"{r['p50_ms']:.3f} | {two:.3f} |")
    print(f"wrote {out} (wall {result['wall_s']} s; load after {result['load_after']})")


if __name__ == "__main__":
    main()
