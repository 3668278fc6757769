"""Issue 11, target 1 ("equal wall time"): `kd2edge distill --time-budget 377` from a COLD teacher cache.

Runs, one after the other, for each method (kd, ce) and seed (0, 1):

    kd2edge distill --teacher cifar10-resnet56 --student resnet8 --time-budget 377 --seed S [--method ce]

each as its own process with an empty cache folder (KD2EDGE_CACHE), and records per run: the command, its wall
time (process start to exit, start-up included), the top-1 the run reports (all 10,000 test images, in its
training precision), the same checkpoint re-evaluated in fp32 afterwards (outside the budget), the seed,
`/proc/loadavg` before and after, the CPU's ISA (lscpu flags) and torch's thread count. JSON + a markdown table
go to benchmarks/results/time_budget[-TAG].{json,md}.

    .venv/bin/python benchmarks/time_budget.py                       # the 4 target-1 runs (~26 min)
    .venv/bin/python benchmarks/time_budget.py --budget 150 --seeds 0 --methods kd --tag pilot -- --student plaincnn

Arguments after `--` are passed to every `kd2edge distill` command. Data: --data-dir, else $KD2EDGE_DATA, else
./data of this checkout. Nothing here depends on where the checkout lives.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_isa() -> dict:
    """CPU model and the ISA flags that decide bf16 / int8 speed (from lscpu / /proc/cpuinfo)."""
    flags, model = set(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    keys = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16"]
    env = {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if k in os.environ}
    have = [k for k in keys if k in flags]
    summary = "avx512_bf16" if "avx512_bf16" in have else ("avx512" if "avx512f" in have else
                                                          ("avx2 only" if "avx2" in have else "no avx2"))
    return {"model": model, "flags": have, "summary": summary, "cpus": os.cpu_count(), "isa_env": env}


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "n/a"


def fp32_top1(checkpoint: str, data_dir: str) -> float:
    import torch

    from kd2edge.batches import Normalizer
    from kd2edge.checkpoint import load_model
    from kd2edge.data import load_dataset
    from kd2edge.distill.loop import predict_logits

    model, info = load_model(checkpoint)
    pre = info["preprocessing"]
    test = load_dataset("cifar10", "test", data_dir)
    logits = predict_logits(model, Normalizer(pre["mean"], pre["std"], channels_last=True),
                            torch.from_numpy(test.x))
    return float((logits.argmax(1).numpy() == test.y).mean() * 100)


def run_one(method: str, seed: int, a, extra: list[str], work: Path) -> dict:
    out = work / f"{method}-s{seed}"
    cache = work / f"cache-{method}-s{seed}"  # cold: a fresh cache folder per run
    cmd = [sys.executable, "-m", "kd2edge", "distill", "--teacher", a.teacher, "--student", a.student,
           "--time-budget", str(a.budget), "--seed", str(seed), "--method", method, "--out", str(out),
           "--data-dir", a.data_dir, "--json", *extra]
    shown = (f"kd2edge distill --teacher {a.teacher} --student {a.student} --time-budget {a.budget} --seed {seed}"
             + (" --method ce" if method == "ce" else "") + (" " + " ".join(extra) if extra else ""))
    env = {**os.environ, "KD2EDGE_CACHE": str(cache), "PYTHONPATH": str(ROOT) + os.pathsep +
           os.environ.get("PYTHONPATH", "")}
    before = loadavg()
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = loadavg()
    row = {"command": shown, "method": method, "seed": seed, "budget_s": a.budget, "wall_s": round(wall, 1),
           "loadavg_before": before, "loadavg_after": after, "returncode": p.returncode}
    if p.returncode != 0:
        row["error"] = (p.stderr or p.stdout).strip().splitlines()[-1:]
        return row
    r = json.loads(p.stdout[p.stdout.index("{\n  \"checkpoint\""):])
    m = r["metrics"]
    b = m.get("budget", {})
    row.update({"top1": m["last"]["top1"], "eval_precision": b.get("eval_precision"),
                "top1_fp32": round(fp32_top1(r["checkpoint"], a.data_dir), 2),
                "epochs": b.get("epochs"), "train_images": b.get("train_images"),
                "views_per_image": b.get("views_per_image"), "cache_build_s": b.get("cache_build_s"),
                "train_slice_s": b.get("train_slice_s"), "in_process_wall_s": b.get("wall_s"),
                "phases": b.get("phases"), "threads_start": b.get("threads_start"),
                "student_ips_probe": b.get("student_train_ips_probe"),
                "teacher_fps_probe": b.get("teacher_forwards_per_s_probe"),
                "teacher_top1": m.get("teacher", {}).get("top1"), "params": m["student"]["params"],
                "macs": m["student"].get("macs")})
    with open(out / "history.csv", newline="") as f:  # the last epoch: fit on the training views, and with
        last = list(csv.DictReader(f))[-1]  # --set ema=D the last step's weights (before the average)
    row["train_top1_last_epoch"] = round(float(last["train_top1"]), 2)
    if last.get("val_top1_last_step"):
        row["top1_last_step"] = round(float(last["val_top1_last_step"]), 2)
    if a.keep_runs:
        shutil.copytree(out, Path(a.keep_runs) / out.name, dirs_exist_ok=True)
    return row


def table(rows: list[dict], isa: dict) -> str:
    lines = [f"CPU: {isa['model']} ({isa['cpus']} CPUs; ISA: {isa['summary']}; flags {', '.join(isa['flags'])}"
             + (f"; env {isa['isa_env']}" if isa["isa_env"] else "") + ")", "",
             "| command | wall (s) | top-1 (%) | top-1 fp32 re-eval (%) | epochs | views | cache build (s) | "
             "loadavg before | loadavg after |", "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        if r.get("returncode"):
            lines.append(f"| `{r['command']}` | {r['wall_s']} | failed: {r.get('error')} | | | | | "
                         f"{r['loadavg_before']} | {r['loadavg_after']} |")
            continue
        cb = f"{r['cache_build_s']:.0f}" if r.get("cache_build_s") is not None else "-"
        lines.append(f"| `{r['command']}` | {r['wall_s']:.1f} | {r['top1']:.2f} | {r['top1_fp32']:.2f} | "
                     f"{r['epochs']} | {r['views_per_image'] or '-'} | {cb} | {r['loadavg_before']} | "
                     f"{r['loadavg_after']} |")
    by = {}
    for r in rows:
        if not r.get("returncode"):
            by.setdefault(r["method"], []).append(r["top1_fp32"])
    lines.append("")
    for m, v in by.items():
        spread = f"{min(v):.2f}-{max(v):.2f}"
        lines.append(f"- {m}: mean fp32 top-1 {statistics.mean(v):.2f} over {len(v)} seed(s) (spread {spread})")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="377")
    ap.add_argument("--teacher", default="cifar10-resnet56")
    ap.add_argument("--student", default="resnet8")
    ap.add_argument("--methods", nargs="+", default=["kd", "ce"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--data-dir", default=os.environ.get("KD2EDGE_DATA", str(ROOT / "data")))
    ap.add_argument("--tag", default="")
    ap.add_argument("--out-dir", default=str(ROOT / "benchmarks/results"))
    ap.add_argument("--keep-runs", help="copy each run folder here")
    a, extra = ap.parse_known_args()
    extra = [e for e in extra if e != "--"]
    isa = cpu_isa()
    work = Path(tempfile.mkdtemp(prefix="kd2edge-budget-"))
    rows = []
    name = "time_budget" + (f"-{a.tag}" if a.tag else "")
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        for seed in a.seeds:
            for method in a.methods:
                rows.append(run_one(method, seed, a, extra, work))
                print(json.dumps(rows[-1]), flush=True)
                result = {"cpu": isa, "rows": rows, "torch_threads_default": os.cpu_count()}
                (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
                (out / f"{name}.md").write_text(table(rows, isa))
                shutil.rmtree(work / f"cache-{method}-s{seed}", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(rows, isa))


if __name__ == "__main__":
    main()
