"""The `kd2edge run` report: report.json (every number), report.md and report.html (the same tables, from
the same values), and PNG plots (curves, confusion matrices, accuracy vs latency)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from kd2edge.files import write_json
from kd2edge.render import write_report
from kd2edge.verdict import VERDICT_COLS, kd_line, pareto, rule_text, verdict_rows

SUMMARY_COLS = ["model", "arch", "params", "MACs", "top-1 (%)", "top-5 (%)", "precision (%)", "recall (%)",
                "F1 (%)", "PyTorch b1 p50 (ms)", "throughput (img/s)"]
DEPLOY_COLS = ["artifact", "target", "precision", "status", "size (KB)", "top-1 (%)", "Δ vs student (pt)",
               "tied top-1", "agreement with student (%)", "Δ vs teacher (pt)", "agreement with teacher (%)", "threads", "p50 (ms)", "p90 (ms)",
               "speedup vs PyTorch teacher"]


ACCURACY_COLS = ["artifact", "target", "precision", "status", "size (KB)", "top-1 (%)", "Δ vs student (pt)", "tied top-1",
                 "agreement with student (%)", "Δ vs teacher (pt)", "agreement with teacher (%)"]


def accuracy_rows(deploy: list[dict]) -> list[dict]:
    """One row per artifact (accuracy does not depend on the thread count)."""
    rows = {}
    for r in deploy:
        rows.setdefault(r["artifact"], {c: r.get(c) for c in ACCURACY_COLS})
    return list(rows.values())


def latency_rows(deploy: list[dict]) -> tuple[list[str], list[dict]]:
    """One row per artifact, p50 / p90 / speed-up columns per thread count."""
    threads = sorted({r["threads"] for r in deploy if r.get("threads")})
    cols = ["artifact"] + [f"{k} @{t} thr" for t in threads for k in ("p50 (ms)", "p90 (ms)", "speed-up")]
    rows = {}
    for r in deploy:
        row = rows.setdefault(r["artifact"], {c: None for c in cols} | {"artifact": r["artifact"]})
        if r.get("threads"):
            t = r["threads"]
            row.update({f"p50 (ms) @{t} thr": r["p50 (ms)"], f"p90 (ms) @{t} thr": r["p90 (ms)"],
                        f"speed-up @{t} thr": r["speedup vs PyTorch teacher"]})
    return cols, [r for r in rows.values() if any(r[c] is not None for c in cols[1:])]


def summary_rows(evals: dict, eager_ms: dict) -> list[dict]:
    """`eager_ms[label]`: the model's PyTorch batch-1 p50 at the first bench thread count."""
    return [{"model": label, "arch": e["arch"], "params": e["params"], "MACs": e["macs"], "top-1 (%)": e["top1"],
             "top-5 (%)": e["top5"], "precision (%)": e["macro_precision"], "recall (%)": e["macro_recall"],
             "F1 (%)": e["macro_f1"], "PyTorch b1 p50 (ms)": eager_ms.get(label),
             "throughput (img/s)": e.get("throughput_ips")} for label, e in evals.items()]


def speedup(teacher_ms: dict, threads, p50_ms) -> float | None:
    """PyTorch teacher p50 / row p50 at the same thread count (None when either is missing)."""
    t_ms = teacher_ms.get(threads)
    return t_ms / p50_ms if t_ms and p50_ms else None


def _deploy_row(head: dict, timing: dict | None = None, teacher_ms: dict | None = None, **accuracy) -> dict:
    """One deployment row: every DEPLOY_COLS key (None where unknown)."""
    row = {c: None for c in DEPLOY_COLS}
    row.update(head)
    row.update(accuracy)
    if timing:
        row.update({"threads": timing["threads"], "p50 (ms)": timing.get("p50_ms"), "p90 (ms)": timing.get("p90_ms"),
                    "speedup vs PyTorch teacher": speedup(teacher_ms, timing["threads"], timing.get("p50_ms"))})
    return row


def eager_rows(models: dict, eager: dict, teacher_ms: dict) -> list[dict]:
    """The PyTorch models themselves, timed by the same loop right after the artifacts."""
    rows = []
    for label, runs in eager.items():
        path = Path(models[label]["checkpoint"])
        size = round(path.stat().st_size / 1024, 1) if path.is_file() else None
        head = {"artifact": f"{label} (PyTorch)", "target": "pytorch", "precision": "fp32", "status": "ok",
                "size (KB)": size}
        rows += [_deploy_row(head, r, teacher_ms) for r in runs]
    return rows


def deploy_rows(exports: list[dict], benches: list[dict], teacher_ms: dict) -> list[dict]:
    """`teacher_ms[threads]`: the PyTorch teacher's batch-1 p50 at that thread count (same process, same loop)."""
    by_path = {}
    for b in benches:
        by_path.setdefault(os.path.normpath(b["path"]), []).append(b)
    rows = []
    for e in exports:
        head = {"artifact": Path(e["path"]).name, "target": e["target"], "precision": e["precision"],
                "status": e["status"], "size (KB)": round(e["size"] / 1024, 1) if e.get("size") else None}
        runs = by_path.get(os.path.normpath(e["path"]), [])
        skipped = [b for b in runs if b.get("status") == "skipped"]  # e.g. CoreML off macOS
        runs = [b for b in runs if b.get("status") != "skipped"]
        if skipped:
            head["status"] = f"{e['status']}; not benched here (see below)"
        if not runs:  # the export's own parity check is all there is
            rows.append(_deploy_row(head, **{"top-1 (%)": e.get("top1"), "agreement with student (%)": e.get("agreement"),
                                             "tied top-1": e.get("tied_top1")}))
        for b in runs:
            rows.append(_deploy_row(head, b, teacher_ms, **{
                "top-1 (%)": b.get("top1"), "Δ vs student (pt)": b.get("delta_student"),
                "tied top-1": b.get("tied_top1"),
                "agreement with student (%)": b.get("agree_student"), "Δ vs teacher (pt)": b.get("delta_teacher"),
                "agreement with teacher (%)": b.get("agree_teacher")}))
    return rows


def skipped_notes(benches: list[dict]) -> list[str]:
    """One line per reason an artifact could not run here (e.g. CoreML off macOS), naming the artifacts once."""
    skipped = {}  # reason (the note up to its first ':') -> artifact names
    for b in benches:
        if b.get("status") == "skipped" and b.get("note"):
            names = skipped.setdefault(b["note"].split(":")[0], [])
            if Path(b["path"]).name not in names:
                names.append(Path(b["path"]).name)
    return [f"Not benched here: {', '.join(names)}. {reason}: copy them to a device that has the runtime and run "
            "`kd2edge bench` there." for reason, names in skipped.items()]


def _copy_png(src, dest: Path) -> str | None:
    if not src or not Path(src).exists():
        return None
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return str(dest.relative_to(dest.parents[1]))


def schedule_text(distill_cfg: dict, models: dict) -> str:
    """`10 epochs` with what each student's training took (the teacher pass included: equal epochs are not equal
    time), or for a time-budgeted run what each student's plan made of the budget (its budget.json)."""
    if distill_cfg.get("time_budget") is None:
        took = []
        for label, m in models.items():
            met = m.get("metrics") or {}
            if "train_seconds" in met:
                s = met["train_seconds"] + (met.get("cache") or {}).get("fill_s", 0.0)
                took.append(f"{label} {s / 60:.1f} min")
        return f"{distill_cfg.get('epochs')} epochs" + (
            f" per student (training took {', '.join(took)}, its teacher pass included)" if took else "")
    from kd2edge.distill.budget import parse_time_budget

    plans = []
    for label, m in models.items():
        b = (m.get("metrics") or {}).get("budget")
        if b:
            views = b.get("views_per_image") if b.get("cache_forwards") else None
            plans.append(f"{label}: {b['epochs']} epochs" + (f", {views} cached teacher view(s) per image" if views else ""))
    return (f"a time budget of {parse_time_budget(distill_cfg['time_budget']):g} s per student, the teacher pass "
            f"inside it ({'; '.join(plans)})")


def write_run_report(out: Path, cfg: dict, models: dict, evals: dict, exports: list[dict], benches: list[dict],
                     eager: dict, timings: dict) -> dict:
    """`eager[label]`: torch_bench rows (one per bench thread count) of each PyTorch model."""
    from kd2edge.plots import scatter_png

    out = Path(out)
    teacher_ms = {r["threads"]: r["p50_ms"] for r in eager.get("teacher", [])}
    summary = summary_rows(evals, {label: runs[0]["p50_ms"] for label, runs in eager.items() if runs})
    deploy = eager_rows(models, eager, teacher_ms) + deploy_rows(exports, benches, teacher_ms)
    counts = [b["threads"] for b in benches if b["threads"]] + [r["threads"] for rs in eager.values() for r in rs]
    one_thread = min(counts, default=None)
    points = [{"name": f"{label} (PyTorch, {r['threads']} thread)", "p50_ms": r["p50_ms"], "top1": evals[label]["top1"]}
              for label, runs in eager.items() for r in runs if r["threads"] == one_thread]
    points += [{"name": f"{Path(b['path']).name} ({b['threads']} thread)", "p50_ms": b.get("p50_ms"), "top1": b.get("top1")}
               for b in benches if b["threads"] == one_thread]
    plots = {"accuracy_vs_latency": "plots/accuracy_vs_latency.png"}
    scatter_png(points, out / plots["accuracy_vs_latency"], front=pareto(points),
                title=f"Accuracy vs batch-1 latency (this machine, {one_thread} thread)")
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
    rules = cfg.get("report") or {}
    method = cfg["distill"].get("method", "kd")
    verdict = verdict_rows(deploy, rules, evals.get("teacher", {}).get("top1"))
    kd = kd_line(evals, method, rules.get("seed_spread_pt"))
    accuracy = accuracy_rows(deploy)
    lat_cols, latency = latency_rows(deploy)
    report = {"name": cfg["name"], "config": cfg,
              "verdict": {"rule": rule_text(rules), "columns": VERDICT_COLS, "rows": verdict, "kd_vs_baseline": kd},
              "summary": {"columns": SUMMARY_COLS, "rows": summary},
              "accuracy": {"columns": ACCURACY_COLS, "rows": accuracy},
              "latency": {"columns": lat_cols, "rows": latency},
              "deployment": {"columns": DEPLOY_COLS, "rows": deploy}, "plots": plots, "timings_s": timings,
              "models": {k: {"checkpoint": str(v["checkpoint"]), "run_dir": v.get("run_dir")} for k, v in models.items()},
              "exports": exports, "bench": benches, "pytorch_bench": eager}
    d = cfg["distill"]
    budget = (f"student {cfg['student']}, method {method}, {schedule_text(d, models)}"
              + (f" on the first {d['limit_train']} training images" if d.get("limit_train") else " on the full training set")
              + f", seed {cfg['seed']}; teacher {cfg['teacher']}; dataset {cfg['dataset']} (test split for every number)")
    device = benches[0] if benches else {}
    blocks = [("h", "Verdict: what to ship"),
              ("p", f"Per target, {rule_text(rules)}, among the student's artifacts benchmarked on this machine "
                    "(batch 1; top-1 on the artifact's eval bundle). Speed-up vs teacher, same export: the teacher "
                    "converted to the same target and precision, at the same thread count (int8 vs int8)."),
              ("table", VERDICT_COLS, verdict)]
    blocks += [("p", kd)] if kd else []
    blocks += [("p", f"Budget: {budget}."),
               ("p", f"Machine: {device.get('cpu', 'n/a')}, {device.get('cores', '?')} cores, {device.get('os', '')}. "
                     f"Wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + "."),
               ("h", "Models (PyTorch, full test set)"), ("table", SUMMARY_COLS, summary),
               ("h", "Accuracy of every artifact (its eval bundle)"), ("table", ACCURACY_COLS, accuracy),
               ("p", "Δ columns: artifact top-1 minus the PyTorch student's / teacher's top-1 on the same images; "
                     "agreement: share of images where both predict the same class; tied top-1: images whose largest logit "
                     "occurs more than once (the first class wins, kd2edge.metrics.predict_top1)."),
               ("h", "Latency per thread count (batch 1, this machine)"), ("table", lat_cols, latency),
               ("p", "PyTorch rows: the checkpoints in eager mode, timed by the same loop in the same process right "
                     "after the artifacts. Speed-up = PyTorch teacher p50 / row p50 at the same thread count. "
                     "report.json's `deployment` holds every column of every (artifact, thread count) pair.")]
    blocks += [("p", line) for line in skipped_notes(benches)] + [("h", "Plots")]
    blocks += [("img", path, caption) for caption, path in plots.items()]
    failed = [e for e in exports if e["status"] != "ok"]
    if failed:
        blocks += [("h", "Export problems"), ("table", ["artifact", "status", "reason"],
                                              [{"artifact": Path(e["path"]).name, **e} for e in failed])]
    write_json(out / "report.json", report)
    md, html = write_report(out, f"kd2edge report: {cfg['name']}", blocks)
    report["report_md"], report["report_html"] = str(md), str(html)
    return report
