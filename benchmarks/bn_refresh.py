"""What an EMA student's BatchNorm statistics are worth: top-1 (all 10,000 CIFAR-10 test images, fp32) of a
checkpoint as saved, and after `kd2edge.distill.loop.refresh_bn` recomputes its BN statistics over the 50,000
training images shown as training shows them (one random translate/flip view each).

    PYTHONPATH=. .venv/bin/python benchmarks/bn_refresh.py CHECKPOINT [--tag TAG]

Written for the 60-min `--set ema=0.9995` run of 2026-12-02 (benchmarks/distill.md): its student was saved with
averaged BN buffers, before refresh_bn existed. JSON to benchmarks/results/bn_refresh[-TAG].json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main():
    import torch

    from kd2edge.batches import Normalizer
    from kd2edge.checkpoint import load_model
    from kd2edge.data import load_dataset
    from kd2edge.distill.loop import predict_logits, refresh_bn

    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--data-dir", default=os.environ.get("KD2EDGE_DATA", str(ROOT / "data")))
    ap.add_argument("--tag", default="")
    a = ap.parse_args()
    model, info = load_model(a.checkpoint)
    pre = info["preprocessing"]
    norm = Normalizer(pre["mean"], pre["std"], channels_last=True)
    test = load_dataset("cifar10", "test", a.data_dir)
    train = load_dataset("cifar10", "train", a.data_dir)

    def top1():
        logits = predict_logits(model, norm, torch.from_numpy(test.x))
        return round(float((logits.argmax(1).numpy() == test.y).mean() * 100), 2)

    cfg = dict(info.get("config") or {})
    cfg.setdefault("seed", 0)
    cfg.setdefault("augment", True), cfg.setdefault("pad", 4), cfg.setdefault("flip", True)
    row = {"checkpoint": str(a.checkpoint), "top1_as_saved": top1()}
    refresh_bn(model, norm, torch.from_numpy(train.x), cfg)
    row["top1_bn_refreshed"] = top1()
    row["views"] = "one random view per training image" if cfg["augment"] else "the training images as they are"
    print(json.dumps(row, indent=1))
    out = ROOT / "benchmarks" / "results" / ("bn_refresh" + (f"-{a.tag}" if a.tag else "") + ".json")
    out.write_text(json.dumps(row, indent=1) + "\n")


if __name__ == "__main__":
    main()
