"""Foreign teachers under every input-contract preset: the shared resnet20 wrapped to take [0, 1] NCHW input
with its normalization inside (tests/foreign_teachers.py), saved as TorchScript and ONNX, evaluated by
`kd2edge.evaluate.evaluate` on the first N CIFAR-10 test images with no flag (the stated guess) and with each
preset. The right contract (`unit`) must reproduce the eager model's own top-1 exactly. Prints a markdown
table and saves it with the raw numbers under benchmarks/results/.

    .venv/bin/python benchmarks/teacher_contracts.py [--limit 1000] [--shared ../shared] [--data-dir data]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("KD2EDGE_SHARED", ROOT.parent / "shared")))
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("KD2EDGE_DATA", ROOT / "data")))
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()

    import foreign_teachers
    from kd2edge.data import load_dataset
    from kd2edge.evaluate import evaluate
    from kd2edge.input_contract import PRESETS
    from kd2edge.metrics import topk_accuracy

    ds = load_dataset("cifar10", "test", args.data_dir, limit=args.limit)
    with tempfile.TemporaryDirectory() as tmp:
        made = foreign_teachers.build(Path(tmp), args.shared / "weights/cifar10/resnet20-12fca82f.th")
        truth = topk_accuracy(foreign_teachers.true_logits(made["model"], ds.x), ds.y)
        rows = []
        for kind in ("torchscript", "onnx"):
            for contract in (None, *PRESETS):
                err = io.StringIO()
                with contextlib.redirect_stderr(err):
                    r = evaluate(str(made[kind]), dataset="cifar10", data_dir=args.data_dir, limit=args.limit,
                                 latency=False, contract=contract)
                rows.append({"file": kind, "contract": contract or f"(none: {r['input']['name']})",
                             "top1": r["top1"], "exact": r["top1"] == truth, "line": r["input_line"]})
    lines = [f"# Foreign resnet20 ([0,1] NCHW, normalization inside) on the first {args.limit} CIFAR-10 test images",
             "", f"eager PyTorch fed x/255: top-1 {truth:.2f}%; machine: {platform.machine()}, "
             f"load {os.getloadavg()[0]:.1f}", "", "| file | --input | top-1 (%) | = eager |", "|---|---|---:|---|"]
    lines += [f"| {r['file']} | {r['contract']} | {r['top1']:.2f} | {'yes' if r['exact'] else ''} |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "teacher_contracts.md").write_text(text)
    (args.out / "teacher_contracts.json").write_text(json.dumps({"truth_top1": truth, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
