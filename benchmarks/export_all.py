"""Export real checkpoints to every target (fp32 + int8) on real CIFAR-10 and record the table.

    .venv/bin/python benchmarks/export_all.py [--eval-images 10000] [--coreml-eval-images 1000]
        [--checkpoint PATH --tag NAME]

Models: the shared trained resnet20 (akamaster, foreign checkpoint) and every distilled kd2edge student found
under models/ or runs/ (a native checkpoint whose provenance names a teacher). ONNX and TFLite are verified
on `--eval-images` test images; CoreML (numpy evaluation of the saved ML program on Linux, ~50x slower than
a runtime) on `--coreml-eval-images`. Writes benchmarks/results/export.json and export_table.md and prints
the table. Artifacts go to exports/ (git-ignored).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def distilled_students() -> list[Path]:
    import torch

    found = []
    for base in (ROOT / "models", ROOT / "runs"):
        for p in sorted(base.rglob("*.pt")) if base.exists() else []:
            try:
                ck = torch.load(p, map_location="cpu", weights_only=True)
            except Exception:
                continue
            if isinstance(ck, dict) and ck.get("format") == "kd2edge.checkpoint" and \
                    (ck.get("provenance") or {}).get("teacher"):
                found.append(p)
    return found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--eval-images", type=int, default=10000)
    ap.add_argument("--coreml-eval-images", type=int, default=1000)
    ap.add_argument("--calib-images", type=int, default=256)
    ap.add_argument("--out", default=str(ROOT / "exports"))
    ap.add_argument("--only-shared", action="store_true", help="skip distilled students")
    ap.add_argument("--checkpoint", action="append", help="export only these native checkpoints")
    ap.add_argument("--tag", default="export", help="results file stem (benchmarks/results/<tag>.json)")
    args = ap.parse_args()
    from kd2edge.export import export

    # known names: resolved under models/ ($KD2EDGE_WEIGHTS; setup.sh links the shared weights there)
    models = [("cifar10-resnet20", None, "cifar10-resnet56")]
    if args.checkpoint:
        models = [(p, None, None) for p in args.checkpoint]
    elif not args.only_shared:
        models += [(str(p), None, None) for p in distilled_students()]
    results = []
    for ckpt, arch, teacher in models:
        for targets, precisions, n in ((["onnx", "tflite"], ["fp32", "int8"], args.eval_images),
                                       (["coreml"], ["fp32", "fp16", "w8", "w8a8"], args.coreml_eval_images)):
            t0 = time.perf_counter()
            rows = export(ckpt, targets, arch=arch, out=args.out, calib_images=args.calib_images, eval_images=n,
                          teacher=teacher, precisions=precisions, max_drop=1.0,
                          command=f"benchmarks/export_all.py (export {Path(ckpt).name} {targets} {precisions})")
            for r in rows:
                meta = Path(r["path"]) / "meta.json"
                r.update(checkpoint=ckpt, eval_images=n, wall_s=round(time.perf_counter() - t0, 1),
                         check=json.loads(meta.read_text())["parity"]["check"] if meta.exists() else None)
                print(json.dumps({k: r[k] for k in ("target", "precision", "status", "size", "top1", "drop",
                                                   "agreement", "max_abs_logit_diff", "sqnr", "seconds")}), flush=True)
            results += rows
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.tag}.json").write_text(json.dumps({"machine": platform.platform(), "processor": platform.processor(),
                                                 "rows": results}, indent=2) + "\n")
    lines = ["| checkpoint | target | precision | status | check | n | size (KB) | top-1 | drop vs PyTorch | "
             "agreement | max abs logit diff | SQNR (dB) | export+verify (s) |", "|" + "---|" * 13]
    for r in results:
        f = (lambda v, fmt: "-" if v is None else format(v, fmt))
        lines.append(f"| {Path(r['checkpoint']).name} | {r['target']} | {r['precision']} | {r['status']}"
                     f"{': ' + r['reason'] if r['reason'] else ''} | {r['check'] or '-'} | {r['eval_images']} | "
                     f"{f(r['size'] and r['size'] / 1024, ',.1f')} | {f(r['top1'], '.2f')} | {f(r['drop'], '+.2f')} | "
                     f"{f(r['agreement'], '.2f')} | {f(r['max_abs_logit_diff'], '.2e')} | {f(r['sqnr'], '.1f')} | "
                     f"{r['seconds']} |")
    table = "\n".join(lines) + "\n"
    (out / f"{args.tag}_table.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
