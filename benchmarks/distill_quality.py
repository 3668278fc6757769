"""Quality on real CIFAR-10 with the shared resnet56 teacher (93.39%): ce vs kd vs hybrid vs dkd for a
compact student, several seeds, equal budget; optionally kd with the live teacher (no cache) to measure
what the cache costs in accuracy.

CPU budget (default; sized for a 2-core CPU shared with other jobs): resnet8 student, first 2,500 training
images, 6 epochs, batch 128, 4 cached views per image, evaluated on the full 10,000-image test set.
GPU / full budget: `--full` = all 50,000 images, 200 epochs (the same protocol, nothing else changes).

    .venv/bin/python benchmarks/distill_quality.py --seeds 0 1
    .venv/bin/python benchmarks/distill_quality.py --methods kd-live --seeds 0 1   # cache vs live teacher
    .venv/bin/python benchmarks/distill_quality.py --full --seeds 0 1 2     # on a GPU machine

Writes benchmarks/results/distill_quality.json (every run, appended as it finishes) and
benchmarks/results/distill_quality.md (mean and spread per method).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEACHER = "cifar10-resnet56"  # a known name, found under $KD2EDGE_WEIGHTS (default ./models)
DATA_DIR = os.environ.get("KD2EDGE_DATA", str(ROOT / "data"))
METHOD_CFG = {  # shared settings per method; everything else is the same for all
    "ce": {"method": "ce"},
    "kd": {"method": "kd", "T": 4.0, "alpha": 0.9},
    "dkd": {"method": "dkd", "T": 4.0, "alpha": 0.5, "beta": 8.0},
    "hybrid": {"method": "hybrid", "T": 4.0, "alpha": 0.9, "feature_weight": 0.1},
    "kd-t2": {"method": "kd", "T": 2.0, "alpha": 0.5},
    "kd-live": {"method": "kd", "T": 4.0, "alpha": 0.9, "cache": False},
}


def main():
    from kd2edge.distill import distill
    from kd2edge.files import write_json

    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", nargs="+", default=["ce", "kd", "dkd", "hybrid"], choices=list(METHOD_CFG))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--student", default="resnet8")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--limit-train", type=int, default=2500)
    ap.add_argument("--views-per-image", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None, help="torch threads per run (1: two scripts side by side)")
    ap.add_argument("--val-every", type=int, default=1, help="validate every N epochs (and the last)")
    ap.add_argument("--full", action="store_true", help="full budget: all 50k images, 200 epochs (GPU)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/distill_quality"))
    ap.add_argument("--runs-dir", default="/tmp/kd2edge-quality-runs")
    ap.add_argument("--merge", nargs="+", help="only summarize these result JSONs (e.g. seeds run in parallel)")
    a = ap.parse_args()
    if a.merge:
        data = [json.loads(Path(p).read_text()) for p in a.merge]
        runs = [r for d in data for r in d["runs"]]
        write_json(a.out + ".json", {"budget": data[0]["budget"], "runs": runs, "merged_from": a.merge})
        return summarize(a.methods, runs, data[0]["budget"], a.out)
    if a.full:
        a.epochs, a.limit_train, a.batch_size = 200, None, 256
    budget = {"student": a.student, "epochs": a.epochs, "limit_train": a.limit_train, "batch_size": a.batch_size,
              "optimizer": "sgd", "lr": 0.1, "schedule": "onecycle", "views_per_image": a.views_per_image,
              "teacher": "resnet56 (shared, 93.39%)", "test_images": 10000}
    json_path = Path(a.out + ".json")
    old = json.loads(json_path.read_text()) if json_path.exists() else {}
    runs = [r for r in old.get("runs", []) if r.get("budget") == budget]
    done = {(r["name"], r["seed"]) for r in runs}
    for seed in a.seeds:
        for name in a.methods:
            if (name, seed) in done:
                continue
            cfg = {"teacher": TEACHER, "teacher_arch": None, "student": a.student, "epochs": a.epochs,
                   "limit_train": a.limit_train, "batch_size": a.batch_size, "lr": 0.1, "schedule": "onecycle",
                   "views_per_image": a.views_per_image, "seed": seed, "latency": False,
                   "threads": a.threads, "val_every": a.val_every,
                   "out": f"{a.runs_dir}/{name}-s{seed}", "overwrite": True, "data_dir": DATA_DIR,
                   **METHOD_CFG[name]}
            if name == "ce":
                cfg.pop("teacher"), cfg.pop("teacher_arch")
            t0 = time.perf_counter()
            r = distill(cfg)
            m = r["metrics"]
            runs.append({"name": name, "seed": seed, "budget": budget, "top1": m["last"]["top1"],
                         "top5": m["last"]["top5"], "macro_f1": m["last"]["macro_f1"],
                         "best_top1": m["best"]["val_top1"], "wall_seconds": time.perf_counter() - t0,
                         "train_seconds": m["train_seconds"], "cache": m.get("cache"),
                         "teacher_top1": m.get("teacher", {}).get("top1")})
            print(f"{name} seed {seed}: top-1 {m['last']['top1']:.2f}% ({runs[-1]['wall_seconds']:.0f} s)", flush=True)
            write_json(json_path, {"budget": budget, "runs": runs})
    summarize(a.methods, runs, budget, a.out)


def summarize(methods, runs, budget, out):
    from kd2edge.files import write_text

    rows = ["| method | seeds | top-1 mean (%) | spread (min-max) | std | macro F1 mean | wall s per run |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for name in methods:
        rs = [r for r in runs if r["name"] == name]
        if not rs:
            continue
        t = [r["top1"] for r in rs]
        rows.append(f"| {name} | {len(rs)} | {statistics.mean(t):.2f} | {min(t):.2f}-{max(t):.2f} | "
                    f"{statistics.stdev(t) if len(t) > 1 else 0:.2f} | "
                    f"{statistics.mean(r['macro_f1'] for r in rs):.2f} | "
                    f"{statistics.mean(r['wall_seconds'] for r in rs):.0f} |")
    md = "\n".join([f"budget: {json.dumps(budget)}", "", *rows, ""])
    write_text(out + ".md", md)
    print(md)


if __name__ == "__main__":
    main()
