"""Evaluate the four shared CIFAR-10 teachers through `kd2edge eval` (the real console command, one
process per teacher) on the full test set: top-1, top-5, macro F1, params, MACs, batch-1 latency,
throughput. Prints a markdown table and saves it with the raw JSON under benchmarks/results/.

    .venv/bin/python benchmarks/eval_teachers.py [--shared ../shared] [--data-dir data]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEACHERS = {"resnet20": "resnet20-12fca82f.th", "resnet32": "resnet32-d509ac18.th",
            "resnet44": "resnet44-014dd654.th", "resnet56": "resnet56-4bfd9763.th"}
EXPECTED = {"resnet20": 91.73, "resnet32": 92.63, "resnet44": 93.10, "resnet56": 93.39}  # ../shared/README.md


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("KD2EDGE_SHARED", ROOT.parent / "shared")))
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("KD2EDGE_DATA", ROOT / "data")))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--tag", default="", help="suffix of the result files, e.g. -1thread")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from kd2edge.files import write_json, write_text

    rows, t_all = [], time.perf_counter()
    for arch, fname in TEACHERS.items():
        path = args.shared / "weights" / "cifar10" / fname
        cmd = [sys.executable, "-m", "kd2edge", "eval", str(path), "--arch", arch, "--data-dir", str(args.data_dir),
               "--out", str(args.out / "eval" / f"cifar10-{arch}{args.tag}"), "--json"]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        load_before = os.getloadavg()[0]
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t
        if p.returncode:
            sys.exit(f"{arch} failed ({p.returncode}): {p.stdout.strip()} {p.stderr.strip()}")
        r = json.loads(p.stdout)
        rows.append({"teacher": arch, "file": fname, "top1": r["top1"], "expected_top1": EXPECTED[arch],
                     "top5": r["top5"], "macro_f1": r["macro_f1"], "params": r["params"], "macs": r["macs"],
                     "latency_ms_b1": r["latency_ms_b1"], "throughput_ips": r["throughput_ips"], "batch": r["batch"],
                     "threads": r["threads"], "n": r["n"], "wall_s": round(wall, 1), "load_avg_1m": load_before,
                     "command": "kd2edge " + " ".join(shlex.quote(str(c)) for c in cmd[3:])})
        print(f"{arch}: top-1 {r['top1']:.2f} (expected {EXPECTED[arch]:.2f}), {wall:.0f} s", flush=True)
    total = time.perf_counter() - t_all

    lines = ["| teacher | top-1 (%) | expected | top-5 (%) | macro F1 (%) | params | MACs | latency b1 (ms) | "
             "throughput b256 (img/s) | threads | load avg (1 min) | wall (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['teacher']} | {r['top1']:.2f} | {r['expected_top1']:.2f} | {r['top5']:.2f} | "
                     f"{r['macro_f1']:.2f} | {r['params']:,} | {r['macs']:,} | {r['latency_ms_b1']:.2f} | "
                     f"{r['throughput_ips']:,.0f} | {r['threads']} | {r['load_avg_1m']:.1f} | {r['wall_s']:.0f} |")
    table = "\n".join(lines)
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "total_wall_s": round(total, 1), "command": "python " + " ".join(map(shlex.quote, sys.argv))}
    write_json(args.out / f"eval_teachers{args.tag}.json", {"meta": meta, "rows": rows})
    write_text(args.out / f"eval_teachers{args.tag}.md", table + "\n")
    print(table)
    print(f"total wall time {total:.0f} s; wrote {args.out}/eval_teachers{args.tag}.json and .md")
    if any(abs(r["top1"] - r["expected_top1"]) > 0.005 for r in rows):
        sys.exit("a teacher does not reproduce its published top-1")


if __name__ == "__main__":
    main()
