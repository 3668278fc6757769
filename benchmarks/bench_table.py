"""The recorded bench table for benchmarks/bench.md: student and teacher artifacts (ONNX/TFLite, fp32/int8) with
`kd2edge.bench.bench` at batch 1 with 1 and 2 threads, plus the PyTorch teacher's eager latency on this CPU
for the speed-up column. Prints a markdown table and saves JSON + markdown in benchmarks/results/.

    .venv/bin/python benchmarks/bench_table.py --student exports/student-{onnx,onnx-int8,tflite,tflite-int8} \
        --teacher runs/bench/exports/resnet56-4bfd9763-{onnx,onnx-int8,tflite,tflite-int8} \
        [--torch-teacher cifar10-resnet56] [--seconds 3] [--tag NAME]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kd2edge.bench import bench  # noqa: E402
from kd2edge.files import write_json, write_text  # noqa: E402


def fmt(v, spec):
    return "" if v is None else format(v, spec)


def markdown(rows: list[dict], baseline: dict, teachers: set) -> str:
    """One line per (artifact, threads). A teacher artifact's own PyTorch reference IS the teacher, so its
    drift-vs-teacher columns come from its eval bundle's reference logits."""
    head = ("| artifact | role | runtime | prec | thr | min ms | p50 ms | p90 ms | p99 ms | speed-up vs PyTorch teacher (p50) "
            "| top-1 | Δ vs PyTorch student | agree PyTorch student | max abs logit diff vs own PyTorch "
            "| Δ vs PyTorch teacher | agree PyTorch teacher |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        teacher = r["path"] in teachers
        base = baseline.get(r["threads"])
        speed = base["p50_ms"] / r["p50_ms"] if base and r.get("p50_ms") else None
        d_s, a_s = (None, None) if teacher else (r.get("delta_student"), r.get("agree_student"))
        d_t, a_t = ((r.get("delta_student"), r.get("agree_student")) if teacher
                    else (r.get("delta_teacher"), r.get("agree_teacher")))
        lines.append(f"| {r['artifact']} | {'teacher' if teacher else 'student'} | {r['runtime']} | {r['precision']} "
                     f"| {r['threads']} | {fmt(r['min_ms'], '.3f')} | {fmt(r['p50_ms'], '.3f')} | {fmt(r['p90_ms'], '.3f')} | "
                     f"{fmt(r['p99_ms'], '.3f')} | {fmt(speed, '.1f')} | {fmt(r.get('top1'), '.2f')} | "
                     f"{fmt(d_s, '+.2f')} | {fmt(a_s, '.2f')} | {fmt(r.get('max_logit_diff'), '.3g')} | "
                     f"{fmt(d_t, '+.2f')} | {fmt(a_t, '.2f')} |")
    return head + "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", nargs="*", default=[], help="Student artifact folders.")
    ap.add_argument("--teacher", nargs="*", default=[], help="Teacher artifact folders (exported the same way).")
    ap.add_argument("--torch-teacher", default="cifar10-resnet56", help="Checkpoint for the PyTorch eager baseline.")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seconds", type=float, default=3.0, help="Timed seconds per (artifact, threads).")
    ap.add_argument("--tag", default="bench_table")
    a = ap.parse_args()
    out = ROOT / "benchmarks" / "results"
    t0 = time.time()
    load = {"start": os.getloadavg()}
    from kd2edge.evaluate import torch_bench

    baseline = {r["threads"]: {"artifact": f"PyTorch eager {r['arch']}", "precision": "fp32", **r}
                for r in torch_bench(a.torch_teacher, None, a.threads, seconds=a.seconds, warmup=20)}
    rows = bench([*a.student, *a.teacher], threads=a.threads, batch=1, seconds=a.seconds, warmup=20, out=out)
    load["end"] = os.getloadavg()
    teachers = {str(Path(p)) for p in a.teacher} | {str(Path(p).expanduser().resolve()) for p in a.teacher}
    md = markdown(rows, baseline, teachers)
    md += "\nPyTorch eager teacher, batch 1: " + ", ".join(
        f"{t} thread(s) min {b['min_ms']:.3f} / p50 {b['p50_ms']:.3f} / p90 {b['p90_ms']:.3f} ms" for t, b in baseline.items()) + "\n"
    md += (f"\nload average (1/5/15 min) at start {tuple(round(v, 2) for v in load['start'])}, at end "
           f"{tuple(round(v, 2) for v in load['end'])}; wall time {time.time() - t0:.0f} s\n")
    print(md)
    write_json(out / f"{a.tag}.json", {"command": " ".join(sys.argv), "rows": rows, "torch_baseline": baseline,
                                       "load_average": load, "wall_s": time.time() - t0})
    write_text(out / f"{a.tag}.md", md)


if __name__ == "__main__":
    main()
