"""Calibration study: how many TRAINING images, which calibration method, which selection -> int8 top-1 drop
and agreement with the fp32 student on all 10,000 CIFAR-10 test images, for ONNX (onnxruntime static QDQ)
and TFLite (PT2E full integer).

    PYTHONPATH=. .venv/bin/python benchmarks/calibration.py [--checkpoint PATH [--arch A]] [--tag calibration]

Sweep (kept small: the machine has 2 shared cores): N in --sizes (TFLite: --tflite-sizes) with the default
method and random selection; every method (ORT MinMax/Percentile/Entropy; PT2E activation observers histogram/min-max) at
--method-n; class-balanced vs random selection at --balanced-sizes. Calibration images come from the
training split only (asserted below, also byte-wise against the test images). Writes
benchmarks/results/<tag>.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from kd2edge.onnx_graph import CALIB_METHODS

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "weights" / "cifar10"


def runs(args) -> list[tuple]:
    """(target, method, selection, n, seed) of the sweep."""
    out = []
    for target, methods in (("onnx", args.onnx_methods), ("tflite", ("histogram", "minmax"))):
        if target not in args.targets:
            continue
        if target == "tflite":  # PT2E calibrates image by image and LiteRT int8 runs at batch 1: a smaller sweep
            args = argparse.Namespace(targets=args.targets, sizes=args.tflite_sizes, method_n=args.tflite_method_n,
                                      balanced_sizes=args.balanced_sizes[:1], seeds=1, every_method=False)
        out += [(target, methods[0], "random", n, 0) for n in args.sizes]
        out += [(target, m, "random", args.method_n, 0) for m in methods[1:]]
        out += [(target, methods[0], "balanced", n, 0) for n in args.balanced_sizes]
        out += [(target, m, "random", args.method_n, s) for s in range(1, args.seeds)
                for m in (methods if args.every_method else methods[:1])]
    return out


def quantize_and_eval(target, method, calib, model, prep, test_x, tmp: Path) -> np.ndarray:
    from kd2edge.export import onnx as onnx_t, tflite as tflite_t
    from kd2edge.export.graph import deployable, sample_input
    from kd2edge.runtimes import load_session

    if target == "onnx":
        fp32 = tmp / "fp32.onnx"
        if not fp32.exists():
            onnx_t._export_fp32(model, prep, fp32, calib)
        path = tmp / f"int8-{time.monotonic_ns()}.onnx"
        onnx_t._quantize(fp32, path, calib, method)
        return load_session("onnxruntime", path, threads=2).predict(test_x)
    import litert_torch

    net = deployable(model, prep, channels_last=True)
    x = sample_input(calib, channels_last=True, n=1)
    qnet, config = tflite_t.pt2e_int8(net, x, calib, observer=method)
    path = tmp / f"int8-{time.monotonic_ns()}.tflite"
    litert_torch.convert(qnet, (x,), quant_config=config).export(str(path))
    return load_session("litert", path, threads=2).predict(test_x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=str(SHARED / "resnet20-12fca82f.th"))
    ap.add_argument("--arch", default=None, help="for a foreign checkpoint (default resnet20 for the shared one)")
    ap.add_argument("--targets", default="onnx,tflite")
    ap.add_argument("--sizes", default="32,128,512,2048,4096")
    ap.add_argument("--method-n", type=int, default=512)
    ap.add_argument("--tflite-sizes", default="32,256,1024")
    ap.add_argument("--tflite-method-n", type=int, default=256)
    ap.add_argument("--balanced-sizes", default="32,128")
    ap.add_argument("--seeds", type=int, default=3, help="random seeds at --method-n (noise of the sample)")
    ap.add_argument("--eval-images", type=int, default=10000)
    ap.add_argument("--onnx-methods", default=",".join(CALIB_METHODS), help="first: the one the sizes sweep")
    ap.add_argument("--every-method", action="store_true", help="every method at every seed (default: the first)")
    ap.add_argument("--rounding", default="nearest", choices=("nearest", "adaround"),
                    help="adaround: learned rounding first (kd2edge export --rounding), once per calibration sample")
    ap.add_argument("--tag", default="calibration")
    args = ap.parse_args()
    args.targets = args.targets.split(",")
    args.sizes = [int(v) for v in args.sizes.split(",")]
    args.tflite_sizes = [int(v) for v in args.tflite_sizes.split(",")]
    args.balanced_sizes = [int(v) for v in args.balanced_sizes.split(",") if v]
    args.onnx_methods = args.onnx_methods.split(",")
    arch = args.arch or ("resnet20" if args.checkpoint.endswith("resnet20-12fca82f.th") else None)

    from kd2edge.data import load_dataset
    from kd2edge.export.stage import calibration_pick, load_source
    from kd2edge.metrics import agreement, sqnr_db, topk_accuracy

    src = load_source(args.checkpoint, arch, eval_images=args.eval_images, calib_images=1)
    train = load_dataset(src.dataset, "train")
    test_x, y, ref = src.test.x, src.test.y, src.reference
    test_bytes = {img.tobytes() for img in test_x}
    top1_fp32 = topk_accuracy(ref, y)
    rows, t0 = [], time.time()
    print(f"fp32 PyTorch top-1 {top1_fp32:.2f} on {len(y)} test images; load {open('/proc/loadavg').read().split()[:3]}")
    with tempfile.TemporaryDirectory() as tmp:
        for target, method, selection, n, seed in runs(args):
            pick = calibration_pick(train.y, n, selection, seed)
            calib = train.x[pick]
            assert train.split == "train" and len(calib) == n  # calibration never sees a test image
            dup = sum(img.tobytes() in test_bytes for img in calib)
            start = time.time()
            model = src.model
            if args.rounding == "adaround":
                from kd2edge.export.onnx import weight_qmax
                from kd2edge.export.rounding import DEFAULTS, adaround

                images = train.x[calibration_pick(train.y, DEFAULTS["images"], seed=1)]  # as kd2edge export does
                model = adaround(model, src.preprocessing, images, weight_qmax(), range_images=calib)[0]
            where = Path(tmp) / (f"row{len(rows)}" if model is not src.model else "")  # fp32 file per model
            where.mkdir(exist_ok=True)
            logits = quantize_and_eval(target, method, calib, model, src.preprocessing, test_x, where)
            top1 = topk_accuracy(logits, y)
            row = {"target": target, "method": method, "selection": selection, "n": n, "seed": seed,
                   "rounding": args.rounding,
                   "top1": round(top1, 2), "drop": round(top1_fp32 - top1, 2),
                   "agreement": round(agreement(logits, ref), 2), "sqnr_db": round(sqnr_db(ref, logits), 2),
                   "seconds": round(time.time() - start, 1), "test_duplicates": dup,
                   "loadavg": open("/proc/loadavg").read().split()[0]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"checkpoint": args.checkpoint, "arch": arch or src.info["arch"], "top1_fp32": top1_fp32,
              "eval_images": len(y), "rows": rows, "wall_seconds": round(time.time() - t0, 1),
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": __import__("os").cpu_count()},
              "command": "benchmarks/calibration.py " + " ".join(__import__("sys").argv[1:])}
    out = ROOT / "benchmarks" / "results" / f"{args.tag}.json"
    from kd2edge.files import write_json

    write_json(out, result)
    print("| target | method | selection | N | seed | top-1 | drop | agreement | SQNR (dB) | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['target']} | {r['method']} | {r['selection']} | {r['n']} | {r['seed']} | {r['top1']:.2f} | "
              f"{r['drop']:+.2f} | {r['agreement']:.2f} | {r['sqnr_db']:.1f} | {r['seconds']} |")
    print(f"wrote {out} (wall {result['wall_seconds']} s)")


if __name__ == "__main__":
    main()
