"""The seed experiments of issue 6, reproduced on real CIFAR-10 through `kd2edge.distill.distill()`.

Teacher: the shared resnet56 (`cifar10-resnet56`, 93.39%); student: resnet8 (default knobs). Every run uses
one budget (BUDGETS below, recorded in each result) plus its experiment config
`benchmarks/configs/exp_<name>.yaml` (a plain dict of distill keys; experiment keys override the budget):
  1. teacher vs student without KD (ce) vs distilled student (kd): top-1, params, PyTorch latency b1/1 thread
  2. alpha in {0, 0.5, 0.9, 1} at T=4; T in {1, 2, 4, 8} at alpha=0.9 (the 0.9/4 point is exp 1's kd)
  3. fixed vs exponentially decayed T/alpha; logits-only (kd) vs hybrid (logits + features, live teacher)
  4. 5% labels: CE on the labeled 5% vs KD with the other 95% unlabeled (+ a same-optimizer-steps CE control)
  5. the CIFAR-100 resnet56 (linear probe, adapt: probe) guiding the CIFAR-10 student vs the CIFAR-10 teacher

    .venv/bin/python benchmarks/experiments.py                 # the CPU budget, all runs in priority order
    .venv/bin/python benchmarks/experiments.py --only 1_ce 1_kd --seeds 0
    .venv/bin/python benchmarks/experiments.py --list          # the plan and what is done
    .venv/bin/python benchmarks/experiments.py --report        # only regenerate the markdown table
    .venv/bin/python benchmarks/experiments.py --full          # full budget (50k images, 200 epochs): a GPU
    .venv/bin/python benchmarks/experiments.py --budget recipe # fastcnn, all 50k images, 377 s per run (~4.5 h)

Resumable: each (run, seed) writes benchmarks/results/experiments[-full]/<run>-s<seed>.json and is skipped
when that file exists with the same budget; an interrupted training resumes from its last epoch
(distill resume). benchmarks/results/experiments[-full].md is regenerated from all present JSONs each time.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from time_budget import cpu_isa  # noqa: E402  (the CPU's model and the ISA flags that decide bf16 / int8 speed)
CONFIGS = ROOT / "benchmarks" / "configs"
TEACHER = "cifar10-resnet56"
BUDGETS = {
    # CPU: the first 2,500 training images (their 4-view teacher pool is shared with distill_quality.py),
    # 6 epochs, batch 128, SGD lr 0.1 onecycle; every accuracy on the full 10,000-image test set.
    "cpu": {"student": "resnet8", "limit_train": 2500, "epochs": 6, "batch_size": 128, "lr": 0.1,
            "optimizer": "sgd", "schedule": "onecycle", "views_per_image": 4, "cache": True, "limit_val": None},
    # A supplementary check of exp 1 only: the same images and pool, 5x the epochs (is KD's deficit the budget?).
    "cpu-long": {"student": "resnet8", "limit_train": 2500, "epochs": 30, "batch_size": 128, "lr": 0.1,
                 "optimizer": "sgd", "schedule": "onecycle", "views_per_image": 4, "cache": True, "limit_val": None},
    # The time-budgeted recipe, where KD beats hard labels (distill.md, "Equal wall time"): fastcnn on all 50,000
    # images, 377 s of wall time per run from a cold teacher cache (cache build, training and the final
    # evaluation inside it), everything else kd2edge.distill.config.BUDGET_RECIPE. Equal wall time, so exp 4's
    # same-steps control is not run under it. Full-size images throughout (low_res_scale 1): the recorded runs
    # predate progressive resizing, and the table's runs must share one protocol.
    "recipe": {"student": "fastcnn", "time_budget": 377, "limit_train": None, "limit_val": None, "low_res_scale": 1.0},
    # GPU: the same protocol on all 50,000 images for 200 epochs (not run here).
    "full": {"student": "resnet8", "limit_train": None, "epochs": 200, "batch_size": 256, "lr": 0.1,
             "optimizer": "sgd", "schedule": "onecycle", "views_per_image": 8, "cache": True, "limit_val": None},
}
# (run name, seeds) in priority order: exp 1, 2, 4, 5, 3, then the second seeds of the remaining sweeps,
# then a third seed.
PLAN = [
    ("1_ce", [0, 1]), ("1_kd", [0, 1]),
    ("2_alpha0", [0]), ("2_alpha0.5", [0]), ("2_alpha1", [0]), ("2_T1", [0]), ("2_T2", [0]), ("2_T8", [0]),
    ("4_ce_5pct", [0, 1]), ("4_kd_5pct", [0, 1]),
    ("5_kd_c100_probe", [0]),
    ("3_kd_decay", [0]), ("3_hybrid", [0]),
    ("2_alpha0", [1]), ("2_alpha1", [1]), ("2_T1", [1]), ("2_T8", [1]), ("2_alpha0.5", [1]), ("2_T2", [1]),
    ("4_ce_5pct_same_steps", [0, 1]), ("5_kd_c100_probe", [1]), ("3_kd_decay", [1]),
    # a third seed everywhere, then the hybrid's second seed (live teacher, the slowest run)
    ("1_ce", [2]), ("1_kd", [2]), ("2_alpha0", [2]), ("2_alpha0.5", [2]), ("2_alpha1", [2]), ("2_T1", [2]),
    ("2_T2", [2]), ("2_T8", [2]), ("4_ce_5pct", [2]), ("4_kd_5pct", [2]), ("4_ce_5pct_same_steps", [2]),
    ("5_kd_c100_probe", [2]), ("3_kd_decay", [2]), ("3_hybrid", [1]),
]
SAME_STEPS = {"4_ce_5pct_same_steps": "4_kd_5pct"}  # epochs chosen to match that run's optimizer steps
GROUPS = [  # (title, [(label, run)], reference runs shown for comparison)
    ("Exp 1: teacher vs student without KD vs distilled student", [("ce (hard labels only)", "1_ce"),
                                                                   ("kd (T 4, alpha 0.9)", "1_kd")]),
    ("Exp 2a: alpha sweep at T = 4", [("alpha 0", "2_alpha0"), ("alpha 0.5", "2_alpha0.5"),
                                      ("alpha 0.9 (= exp 1 kd)", "1_kd"), ("alpha 1", "2_alpha1")]),
    ("Exp 2b: T sweep at alpha = 0.9", [("T 1", "2_T1"), ("T 2", "2_T2"), ("T 4 (= exp 1 kd)", "1_kd"),
                                        ("T 8", "2_T8")]),
    ("Exp 3: fixed vs decayed T/alpha; logits-only vs hybrid", [
        ("kd fixed T 4, alpha 0.9 (= exp 1 kd)", "1_kd"), ("kd decayed T 8->2, alpha 0.9->0.5 (exp)", "3_kd_decay"),
        ("hybrid: kd + 0.1 feature MSE (layer3, live teacher)", "3_hybrid")]),
    ("Exp 4: 5% labels", [("ce on the labeled 5% (same epochs)", "4_ce_5pct"),
                          ("ce on the labeled 5% (~same optimizer steps as kd)", "4_ce_5pct_same_steps"),
                          ("kd, 5% labeled + 95% unlabeled", "4_kd_5pct"),
                          ("(ref) ce, 100% labels", "1_ce"), ("(ref) kd, 100% labels", "1_kd")]),
    ("Exp 5: CIFAR-100 teacher (linear probe) vs CIFAR-10 teacher", [
        ("kd from CIFAR-10 resnet56 (= exp 1 kd)", "1_kd"), ("kd from CIFAR-100 resnet56 + probe", "5_kd_c100_probe"),
        ("(ref) ce, no teacher", "1_ce")]),
]


def load_run_config(name: str) -> dict:
    from kd2edge.distill import load_config_file

    return load_config_file(CONFIGS / f"exp_{name}.yaml")


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(), "cpu": cpu_isa(),
            "torch": torch.__version__, "python": platform.python_version(), "loadavg": list(os.getloadavg())}


def run_config(name: str, seed: int, budget_name: str, runs_dir: Path) -> dict:
    cfg = {**BUDGETS[budget_name], **load_run_config(name), "seed": seed, "latency": False, "resume": True,
           "data_dir": str(ROOT / "data"), "out": str(runs_dir / f"{name}-s{seed}")}
    if cfg.get("time_budget"):  # a budgeted run restarts (its schedule follows the clock) from a cold cache
        cfg.update(resume=False, overwrite=True, cache_dir=str(runs_dir / f"{name}-s{seed}-cache"))
    if name in SAME_STEPS and not cfg.get("time_budget"):  # equal wall time needs no steps control
        from kd2edge.distill.loop import steps_per_epoch

        ref = {**BUDGETS[budget_name], **load_run_config(SAME_STEPS[name])}
        n = ref["limit_train"] or 50000
        target = ref["epochs"] * steps_per_epoch(n, ref["batch_size"])
        labeled = round(n * float(cfg["labeled_fraction"]))
        cfg["epochs"] = max(1, math.ceil(target / steps_per_epoch(labeled, cfg["batch_size"])))
    return cfg


def run_one(name: str, seed: int, budget_name: str, results: Path, runs_dir: Path) -> dict | None:
    from kd2edge.distill import distill
    from kd2edge.files import write_json

    path = results / f"{name}-s{seed}.json"
    cfg = run_config(name, seed, budget_name, runs_dir)
    if path.exists() and json.loads(path.read_text()).get("budget") == BUDGETS[budget_name]:
        return None
    print(f"=== {name} seed {seed} ({budget_name} budget) start {time.strftime('%H:%M:%S')} "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    if cfg.get("cache_dir"):
        shutil.rmtree(cfg["cache_dir"], ignore_errors=True)
    start_machine, t0 = machine(), time.perf_counter()
    r = distill(cfg)
    m = r["metrics"]
    last, t = m["last"], m.get("teacher") or {}
    rec = {"run": name, "seed": seed, "budget_name": budget_name, "budget": BUDGETS[budget_name],
           "config": {k: v for k, v in cfg.items() if k not in ("out", "data_dir")},
           "top1": last["top1"], "top5": last["top5"], "macro_f1": last["macro_f1"],
           "best_top1": m["best"]["val_top1"], "test_images": last["n"],
           "params": m["student"]["params"], "macs": m["student"]["macs"],
           "teacher_top1": t.get("top1"), "agreement_with_teacher": t.get("agreement_with_student"),
           "probe": m.get("probe"), "cache": m.get("cache"), "train_seconds": m.get("train_seconds"),
           "epochs": (m.get("budget") or {}).get("epochs") or cfg.get("epochs"), "time_budget": m.get("budget"),
           "wall_seconds": time.perf_counter() - t0, "resumed_finished": bool(r.get("resumed_finished")),
           "run_dir": str(Path(r["run_dir"]).relative_to(ROOT)) if Path(r["run_dir"]).is_relative_to(ROOT)
           else r["run_dir"], "machine_start": start_machine, "loadavg_end": list(os.getloadavg()),
           "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    write_json(path, rec)
    print(f"=== {name} seed {seed}: top-1 {rec['top1']:.2f}% ({rec['wall_seconds']:.0f} s wall)", flush=True)
    return rec


def measure_latency(results: Path, budget_name: str, runs_dir: Path, runs: int = 300) -> None:
    """Exp 1's latency column: PyTorch, batch 1, 1 thread, median of `runs`, for the teacher and students."""
    import torch

    from kd2edge.checkpoint import load_model
    from kd2edge.evaluate import model_cost, torch_latency
    from kd2edge.files import write_json

    path = results / "1_latency.json"
    if path.exists():
        return
    models = {"teacher": TEACHER}
    for name in ("1_ce", "1_kd"):
        ckpt = runs_dir / f"{name}-s0" / "student.pt"
        if not ckpt.exists():
            return
        models[name] = str(ckpt)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {"budget_name": budget_name, "budget": BUDGETS[budget_name], "threads": 1, "batch": 1, "runs": runs,
           "loadavg_start": list(os.getloadavg()), "models": {}}
    try:
        for key, spec in models.items():
            model, _ = load_model(spec, "resnet56" if key == "teacher" else None)
            with torch.no_grad():
                lat = torch_latency(model, (3, 32, 32), runs=runs, warmup=20, throughput_runs=1)
            out["models"][key] = {"spec": spec if key == "teacher" else str(Path(spec).relative_to(ROOT)),
                                  **model_cost(model, (3, 32, 32)), "latency_ms_b1": lat["latency_ms_b1"]}
            print(f"latency {key}: {lat['latency_ms_b1']:.2f} ms (batch 1, 1 thread)", flush=True)
    finally:
        torch.set_num_threads(threads)
    out["loadavg_end"] = list(os.getloadavg())
    write_json(path, out)


def stats(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def report(results: Path, budget_name: str) -> str:
    from kd2edge.files import write_text

    recs = {}
    for p in sorted(results.glob("*-s*.json")):
        r = json.loads(p.read_text())
        if r.get("budget") == BUDGETS[budget_name]:
            recs.setdefault(r["run"], []).append(r)
    b = BUDGETS[budget_name]
    images = f"{'first ' + format(b['limit_train'], ',') if b['limit_train'] else 'all 50,000'} CIFAR-10 training images"
    btxt = (f"{b['student']}, {images}, {b['time_budget']} s of wall time per run (`kd2edge distill --time-budget`: "
            "epochs, LR schedule and cached views planned to fit), cold teacher cache" if b.get("time_budget") else
            f"{b['student']}, {images}, {b['epochs']} epochs, batch {b['batch_size']}, SGD lr {b['lr']} "
            f"{b['schedule']}, teacher cache {b['views_per_image']} views/image") + \
        "; top-1 on the full 10,000-image test set"
    lines = [f"# Seed experiments ({budget_name} budget)", "",
             f"Budget for every number below: {btxt}. Generated by `benchmarks/experiments.py` from "
             f"`{results.relative_to(ROOT)}/*.json`; mean ± sample std over seeds, per-seed values listed.", ""]
    lat = json.loads((results / "1_latency.json").read_text()) if (results / "1_latency.json").exists() else None
    teacher_top1 = next((r["teacher_top1"] for rs in recs.values() for r in rs
                         if r["teacher_top1"] is not None and r["run"] != "5_kd_c100_probe"), None)
    for title, rows in GROUPS:
        exp1 = title.startswith("Exp 1")
        lines += [f"## {title}", "", f"Budget: {btxt}.", ""]
        head = "| model | seeds | top-1 % (mean ± std) | per seed | macro F1 | agreement w/ teacher % | wall s/run |"
        sep = "|---|---|---:|---|---:|---:|---:|"
        if exp1:
            head += " params | MACs | PyTorch latency b1, 1 thread (ms) |"
            sep += "---:|---:|---:|"
        if title.startswith("Exp 5"):
            head += " probe test top-1 % |"
            sep += "---:|"
        lines += [head, sep]
        if exp1 and teacher_top1 is not None:
            tl = lat["models"]["teacher"] if lat else {}
            lines.append(f"| teacher resnet56 (shared) | - | {teacher_top1:.2f} | - | - | - | - | "
                         f"{tl.get('params', '-')} | {tl.get('macs', '-')} | "
                         f"{format(tl['latency_ms_b1'], '.2f') if tl else '-'} |")
        for label, run in rows:
            rs = sorted(recs.get(run, []), key=lambda r: r["seed"])
            if not rs:
                lines.append(f"| {label} | not run yet |" + " |" * (sep.count("|") - 3))
                continue
            top1 = [r["top1"] for r in rs]
            agree = [r["agreement_with_teacher"] for r in rs if r["agreement_with_teacher"] is not None]
            row = (f"| {label} | {','.join(str(r['seed']) for r in rs)} | {stats(top1)} | "
                   f"{' / '.join(f'{v:.2f}' for v in top1)} | {stats([r['macro_f1'] for r in rs])} | "
                   f"{stats(agree)} | {statistics.mean(r['wall_seconds'] for r in rs):.0f} |")
            if exp1:
                sl = lat["models"].get(run) if lat else None
                row += f" {rs[0]['params']} | {rs[0]['macs']} | {format(sl['latency_ms_b1'], '.2f') if sl else '-'} |"
            if title.startswith("Exp 5"):
                probes = [r["probe"]["probe_top1"] for r in rs if r.get("probe")]
                row += f" {stats(probes)} |"
            lines.append(row)
        lines.append("")
    if lat:
        lines += [f"Latency: PyTorch eager, batch 1, 1 thread, median of {lat['runs']} runs; load average "
                  f"{lat['loadavg_start'][0]:.1f} at start (a shared machine: absolute values are inflated).", ""]
    if b.get("time_budget"):  # what a run trains in its budget depends on the CPU: say which ran each
        lines += ["## Machines", "", "| run | seed | CPU (ISA) | epochs | load at start |", "|---|---:|---|---:|---:|"]
        for run, rs in sorted(recs.items()):
            for r in sorted(rs, key=lambda r: r["seed"]):
                m = r.get("machine_start") or {}
                cpu = f"{m['cpu']['model']} ({m['cpu']['summary']})" if m.get("cpu") else "not recorded"
                load = f"{m['loadavg'][0]:.1f}" if m.get("loadavg") else "-"
                lines.append(f"| {run} | {r['seed']} | {cpu} | {r.get('epochs', '-')} | {load} |")
        lines.append("")
    md = "\n".join(lines)
    write_text(results.with_suffix(".md"), md)
    return md


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="full budget (all 50k images, 200 epochs; for a GPU)")
    ap.add_argument("--budget", choices=list(BUDGETS), help="another named budget (default cpu; --full = full)")
    ap.add_argument("--only", nargs="+", help="run names (e.g. 1_ce 2_T8) or experiment numbers (e.g. 1 4)")
    ap.add_argument("--seeds", nargs="+", type=int, help="restrict to these seeds")
    ap.add_argument("--list", action="store_true", help="print the plan and what is done, then exit")
    ap.add_argument("--report", action="store_true", help="only regenerate the markdown table")
    ap.add_argument("--runs-dir", help="where the distill run folders go (default runs/experiments[-full])")
    a = ap.parse_args(argv)
    budget_name = a.budget or ("full" if a.full else "cpu")
    suffix = "" if budget_name == "cpu" else f"-{budget_name}"
    results = ROOT / "benchmarks" / "results" / f"experiments{suffix}"
    runs_dir = Path(a.runs_dir) if a.runs_dir else ROOT / "runs" / f"experiments{suffix}"
    results.mkdir(parents=True, exist_ok=True)
    plan = [(n, s) for n, seeds in PLAN for s in seeds
            if (not a.only or n in a.only or n.split("_")[0] in a.only) and (not a.seeds or s in a.seeds)
            and not (n in SAME_STEPS and BUDGETS[budget_name].get("time_budget"))]
    for name, _ in plan:
        if not (CONFIGS / f"exp_{name}.yaml").is_file():
            sys.exit(f"error: config {CONFIGS / f'exp_{name}.yaml'} is missing")
    if a.list:
        for name, seed in plan:
            done = (results / f"{name}-s{seed}.json").exists()
            print(f"{'done' if done else 'todo'}  {name} seed {seed}")
        return 0
    if not a.report:
        t0 = time.perf_counter()
        for name, seed in plan:
            if run_one(name, seed, budget_name, results, runs_dir) is not None:
                report(results, budget_name)
            if name == "1_kd":
                measure_latency(results, budget_name, runs_dir)
        print(f"all planned runs present ({time.perf_counter() - t0:.0f} s this invocation)", flush=True)
    print(report(results, budget_name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
