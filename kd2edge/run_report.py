"""The `kd2edge run` report: report.json (every number), report.md and report.html (the same tables, from
the same values), and PNG plots (curves, confusion matrices, accuracy vs latency)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from kd2edge.paths import write_json
from kd2edge.report import write_report

SUMMARY_COLS = ["model", "arch", "params", "MACs", "top-1 (%)", "top-5 (%)", "precision (%)", "recall (%)",
                "F1 (%)", "PyTorch b1 latency (ms)", "throughput (img/s)"]
DEPLOY_COLS = ["artifact", "target", "precision", "status", "size (KB)", "top-1 (%)", "Δ vs student (pt)",
               "agree student (%)", "Δ vs teacher (pt)", "agree teacher (%)", "threads", "p50 (ms)", "p90 (ms)",
               "speedup vs PyTorch teacher"]


def summary_rows(evals: dict) -> list[list]:
    return [[label, e["arch"], e["params"], e["macs"], e["top1"], e["top5"], e["macro_precision"], e["macro_recall"],
             e["macro_f1"], e.get("latency_ms_b1"), e.get("throughput_ips")] for label, e in evals.items()]


def deploy_rows(exports: list[dict], benches: list[dict], teacher_ms: float | None) -> list[list]:
    by_path = {}
    for b in benches:
        by_path.setdefault(os.path.normpath(b["path"]), []).append(b)
    rows = []
    for e in exports:
        name = Path(e["path"]).name
        size = round(e["size"] / 1024, 1) if e.get("size") else None
        head = [name, e["target"], e["precision"], e["status"], size]
        runs = by_path.get(os.path.normpath(e["path"]), [])
        skipped = [b for b in runs if b.get("status") == "skipped"]  # e.g. CoreML off macOS
        runs = [b for b in runs if b.get("status") != "skipped"]
        if skipped:
            head[3] = f"{e['status']}; not benched here: {skipped[0].get('note')}"
        if not runs:
            rows.append(head + [e.get("top1"), None, e.get("agreement"), None, None, None, None, None, None])
            continue
        for b in runs:
            speedup = teacher_ms / b["p50_ms"] if teacher_ms and b.get("p50_ms") else None
            rows.append(head + [b.get("top1"), b.get("delta_student"), b.get("agree_student"), b.get("delta_teacher"),
                                b.get("agree_teacher"), b["threads"], b["p50_ms"], b["p90_ms"], speedup])
    return rows


def _copy_png(src, dest: Path) -> str | None:
    if not src or not Path(src).exists():
        return None
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return str(dest.relative_to(dest.parents[1]))


def write_run_report(out: Path, cfg: dict, models: dict, evals: dict, exports: list[dict], benches: list[dict],
                     timings: dict) -> dict:
    from kd2edge.plots import scatter_png

    out = Path(out)
    teacher_ms = evals.get("teacher", {}).get("latency_ms_b1")
    summary = summary_rows(evals)
    deploy = deploy_rows(exports, benches, teacher_ms)
    points = [{"name": f"{label} (PyTorch)", "p50_ms": e.get("latency_ms_b1"), "top1": e["top1"]}
              for label, e in evals.items()]
    one_thread = min((b["threads"] for b in benches), default=None)
    points += [{"name": f"{Path(b['path']).name} ({b['threads']} thread)", "p50_ms": b.get("p50_ms"), "top1": b.get("top1")}
               for b in benches if b["threads"] == one_thread]
    plots = {"accuracy_vs_latency": "plots/accuracy_vs_latency.png"}
    scatter_png(points, out / plots["accuracy_vs_latency"], title="Accuracy vs batch-1 latency (this machine; PyTorch at its default threads)")
    for label, m in models.items():
        slug = label.split(" ")[0] if label == "teacher" else label.replace(" ", "").replace("(", "-").replace(")", "")
        if m.get("run_dir"):
            p = _copy_png(Path(m["run_dir"]) / "curves.png", out / "plots" / f"curves-{slug}.png")
            if p:
                plots[f"curves {label}"] = p
        cm = _copy_png(Path(evals[label].get("_dir", "")) / "eval_confusion.png" if evals[label].get("_dir") else None,
                       out / "plots" / f"confusion-{slug}.png")
        if cm:
            plots[f"confusion {label}"] = cm
    report = {"name": cfg["name"], "config": cfg, "summary": {"columns": SUMMARY_COLS, "rows": summary},
              "deployment": {"columns": DEPLOY_COLS, "rows": deploy}, "plots": plots, "timings_s": timings,
              "models": {k: {"checkpoint": str(v["checkpoint"]), "run_dir": v.get("run_dir")} for k, v in models.items()},
              "exports": exports, "bench": benches}
    d = cfg["distill"]
    budget = (f"student {cfg['student']}, method {d.get('method', 'kd')}, {d.get('epochs')} epochs"
              + (f" on the first {d['limit_train']} training images" if d.get("limit_train") else " on the full training set")
              + f", seed {cfg['seed']}; teacher {cfg['teacher']}; dataset {cfg['dataset']} (test split for every number)")
    device = benches[0] if benches else {}
    blocks = [("p", f"Budget: {budget}."),
              ("p", f"Machine: {device.get('cpu', 'n/a')}, {device.get('cores', '?')} cores, {device.get('os', '')}. "
                    f"Wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + "."),
              ("h", "Models (PyTorch)"), ("table", SUMMARY_COLS, summary),
              ("h", "Deployment (every artifact, benchmarked on this machine at batch 1)"), ("table", DEPLOY_COLS, deploy),
              ("p", "Δ columns: artifact top-1 minus the PyTorch student's / teacher's top-1 on the artifact's eval "
                    "bundle; agree = top-1 agreement. Speedup = PyTorch teacher batch-1 latency / artifact p50."),
              ("h", "Plots")]
    blocks += [("img", path, caption) for caption, path in plots.items()]
    failed = [e for e in exports if e["status"] != "ok"]
    if failed:
        blocks += [("h", "Export problems"), ("table", ["artifact", "status", "reason"],
                                              [[Path(e["path"]).name, e["status"], e["reason"]] for e in failed])]
    write_json(out / "report.json", report)
    md, html = write_report(out, f"kd2edge report: {cfg['name']}", blocks)
    report["report_md"], report["report_html"] = str(md), str(html)
    return report
