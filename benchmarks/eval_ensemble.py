"""Top-1 of the shared CIFAR-10 teachers and of their ensemble (mean logits, kd2edge's EnsembleTeacher) on all
10,000 test images, fp32 (or --bf16), with the machine's ISA and load recorded.

    .venv/bin/python benchmarks/eval_ensemble.py [--bf16] [--out benchmarks/results/eval_ensemble.json]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = ["cifar10-resnet20", "cifar10-resnet32", "cifar10-resnet44", "cifar10-resnet56"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--data-dir", default=os.environ.get("KD2EDGE_DATA", str(ROOT / "data")))
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/eval_ensemble.json"))
    a = ap.parse_args()
    from kd2edge.data import load_dataset
    from kd2edge.distill.teacher import EnsembleTeacher, load_teacher

    test = load_dataset("cifar10", "test", a.data_dir)
    x = torch.from_numpy(test.x)
    load0, t0 = Path("/proc/loadavg").read_text().strip(), time.perf_counter()
    members = [load_teacher(m, bf16=a.bf16) for m in MEMBERS]
    logits = {m: torch.cat([t.logits(x[i:i + 500]) for i in range(0, len(x), 500)]).numpy()
              for m, t in zip(MEMBERS, members)}
    acc = {m: float((z.argmax(1) == test.y).mean() * 100) for m, z in logits.items()}
    mean = np.mean([logits[m] for m in MEMBERS], axis=0)
    acc["ensemble (mean logits, by hand)"] = float((mean.argmax(1) == test.y).mean() * 100)
    ens = EnsembleTeacher(members)
    z = torch.cat([ens.logits(x[i:i + 500]) for i in range(0, len(x), 500)]).numpy()
    acc["cifar10-ensemble (EnsembleTeacher)"] = float((z.argmax(1) == test.y).mean() * 100)
    pair = np.mean([logits["cifar10-resnet44"], logits["cifar10-resnet56"]], axis=0)
    acc["resnet44+resnet56"] = float((pair.argmax(1) == test.y).mean() * 100)
    out = {"top1": acc, "precision": "bf16" if a.bf16 else "fp32", "images": len(x),
           "seconds": time.perf_counter() - t0, "loadavg_before": load0,
           "loadavg_after": Path("/proc/loadavg").read_text().strip(), "threads": torch.get_num_threads()}
    print(json.dumps(out, indent=2))
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
