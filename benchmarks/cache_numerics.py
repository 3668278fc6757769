"""Do the teacher's logits for the same images depend on the batch size, the other images of the batch or the
thread count? (Why kd2edge.distill.teacher_cache computes misses at least MIN_BATCH at a time; README,
"Reproducibility".) resnet56 teacher, the first 256 CIFAR-10 training images, fp32; prints and saves JSON.

    .venv/bin/python benchmarks/cache_numerics.py [--out benchmarks/results/cache_numerics.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from kd2edge.data import load_dataset  # noqa: E402
from kd2edge.distill.teacher import load_teacher  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/cache_numerics.json"))
    a = ap.parse_args()
    t = load_teacher("cifar10-resnet56")
    x = torch.as_tensor(load_dataset("cifar10", "train", None, limit=256).x)

    def run(xs, bs):
        return torch.cat([t.logits(xs[i:i + bs]) for i in range(0, len(xs), bs)]).numpy()

    def compare(y, ref):
        return {"max_abs_diff_fp32": float(np.abs(y - ref).max()),
                "fp16_differing_pct": float((y.astype(np.float16) != ref.astype(np.float16)).mean() * 100)}

    threads = torch.get_num_threads()
    ref = run(x, 128)
    res = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__, "threads": threads,
           "avx512_bf16": bool(torch.cpu._is_avx512_bf16_supported()), "reference": "batch 128",
           "batch": {bs: compare(run(x, bs), ref) for bs in (1, 7, 32, 100, 256)},
           "other_companions": compare(run(torch.cat([x[:64], x[128:192]]), 128)[:64], ref[:64])}
    torch.set_num_threads(1)
    res["one_thread"] = compare(run(x, 128), ref)
    print(json.dumps(res, indent=2))
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
