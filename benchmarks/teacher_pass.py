"""The teacher pass, side by side in ONE process: forwards/s of a teacher at every `teacher_precision`
(fp32 and bf16 PyTorch, channels-last; int8 through onnxruntime, kd2edge.distill.teacher_int8), and what each
costs in quality: top-1 on all 10,000 CIFAR-10 test images and top-1 agreement with the fp32 teacher.

    .venv/bin/python benchmarks/teacher_pass.py [--teacher cifar10-resnet56] [--batch 500] [--rounds 3]

Speed: the best of `rounds` timed passes over one batch of test images (after a warm-up), at 1 thread and at
all threads, rows interleaved per round so a change in load hits all alike. The int8 model is built into a
temporary cache folder (its one-time build is timed too). Saves benchmarks/results/teacher_pass.json.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", default="cifar10-resnet56")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/teacher_pass.json"))
    a = ap.parse_args()
    import importlib.util

    spec = importlib.util.spec_from_file_location("tb", Path(__file__).with_name("time_budget.py"))
    tb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tb)
    from kd2edge.data import load_dataset
    from kd2edge.distill.teacher import load_teacher
    from kd2edge.distill.teacher_int8 import Int8Teacher, to_int8
    from kd2edge.files import write_json

    data = os.environ.get("KD2EDGE_DATA", str(ROOT / "data"))
    train, test = load_dataset("cifar10", "train", data), load_dataset("cifar10", "test", data)
    result = {"teacher": a.teacher, "batch": a.batch, "machine": tb.cpu_isa(), "torch": torch.__version__,
              "loadavg_start": tb.loadavg()}
    teachers = {"fp32": load_teacher(a.teacher), "bf16": load_teacher(a.teacher, bf16=True)}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        teachers["int8"] = to_int8(load_teacher(a.teacher), train.x, tmp, log=lambda m: None)
        result["int8_build_s"] = time.perf_counter() - t0
        x = torch.from_numpy(test.x)
        logits = {k: torch.cat([t.logits(x[i:i + 500]) for i in range(0, len(x), 500)]).numpy()
                  for k, t in teachers.items()}
        rates = {k: {} for k in teachers}
        xb = x[:a.batch]
        threads = sorted({1, os.cpu_count() or 1})
        q = teachers["int8"]  # onnxruntime has its own thread pool: a session per thread count
        int8_by_threads = {n: Int8Teacher(q.base, q.path, q.onnx_sha256, n) for n in threads}
        for _ in range(a.rounds):
            for n in threads:
                torch.set_num_threads(n)
                for k, t in teachers.items():
                    t = int8_by_threads[n] if k == "int8" else t
                    t.logits(xb[:64])
                    t1 = time.perf_counter()
                    t.logits(xb)
                    rates[k][n] = max(rates[k].get(n, 0.0), len(xb) / (time.perf_counter() - t1))
    ref = logits["fp32"].argmax(1)
    result["rows"] = {k: {"top1": 100.0 * float((v.argmax(1) == test.y).mean()),
                          "agreement_with_fp32": 100.0 * float((v.argmax(1) == ref).mean()),
                          "forwards_per_s": {str(n): round(r, 1) for n, r in rates[k].items()}}
                      for k, v in logits.items()}
    result["loadavg_end"] = tb.loadavg()
    print(f"{a.teacher}, batch {a.batch}, {result['machine'].get('summary')}, load {result['loadavg_start']} -> "
          f"{result['loadavg_end']}; int8 build {result['int8_build_s']:.1f} s")
    print("| precision | top-1 (%) | agreement with fp32 (%) | " +
          " | ".join(f"forwards/s, {n} thread(s)" for n in threads) + " |")
    for k, r in result["rows"].items():
        print(f"| {k} | {r['top1']:.2f} | {r['agreement_with_fp32']:.2f} | " +
              " | ".join(f"{r['forwards_per_s'][str(n)]:.0f}" for n in threads) + " |")
    write_json(a.out, result)
    print(json.dumps({"saved": a.out}))


if __name__ == "__main__":
    main()
