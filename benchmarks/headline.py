"""The README's headline, recomputed from the recorded runs: KD vs hard labels at equal wall time (377 s, 60 min,
2 h), next to the shared teachers and the shipped resnet20. Reads `benchmarks/results/time_budget-*.json` (each
row one `kd2edge distill --time-budget` run from a cold cache, recorded by `time_budget.py`) and the teachers'
evaluations; prints a markdown table (mean +- sample std over seeds, per-seed values, KD minus hard labels for
seeds that have both) and saves `results/headline.{json,md,png}` (top-1 by budget, and top-1 by MACs).

    .venv/bin/python benchmarks/headline.py
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"

# (budget label, student, method) -> the time_budget.py records holding its seeds. Which file holds which run is
# provenance (distill.md says why each was run); the numbers are read from the files.
GROUPS = {
    ("377 s", "fastcnn", "kd"): ["fastcnn-int8teacher", "fastcnn-int8teacher-s2"],
    ("377 s", "fastcnn", "ce"): ["fastcnn", "fastcnn-recipe-s1", "fastcnn-int8teacher-s2"],
    ("60 min", "fastcnn", "kd"): ["t2-60m-ens-kd-2t", "t2-60m-ens-kd-s1"],
    ("60 min", "fastcnn", "ce"): ["t2-60m-ce-2t", "t2-60m-ce-s1"],
    ("2 h", "fastcnn 48/96/192", "kd"): ["t3-2h-ens-kd-w192-s0"],
    ("2 h", "fastcnn 48/96/192", "ce"): ["t3-2h-ce-w192-s0"],
}


def runs(tags: list[str], method: str) -> list[dict]:
    """The rows of `method` in these records, one per seed (a seed recorded twice is an error to fix here)."""
    out = {}
    for tag in tags:
        path = RESULTS / f"time_budget-{tag}.json"
        if not path.exists():
            continue
        for r in json.loads(path.read_text())["rows"]:
            if r["method"] != method or r.get("returncode") != 0:
                continue
            if r["seed"] in out:
                raise SystemExit(f"error: seed {r['seed']} of {method} recorded twice ({tag}); list one file")
            out[r["seed"]] = {"tag": tag, "seed": r["seed"], "top1": r.get("top1_fp32") or r["top1"],
                              "budget_s": float(r["budget_s"]), "wall_s": r["wall_s"], "macs": r.get("macs"),
                              "params": r.get("params"), "epochs": r.get("epochs")}
    return [out[s] for s in sorted(out)]


def summary() -> dict:
    rows = []
    for (budget, student, method), tags in GROUPS.items():
        got = runs(tags, method)
        if not got:
            continue
        top = [g["top1"] for g in got]
        rows.append({"budget": budget, "budget_s": got[0]["budget_s"], "student": student, "method": method,
                     "seeds": [g["seed"] for g in got], "top1": top, "mean": statistics.mean(top),
                     "std": statistics.stdev(top) if len(top) > 1 else None, "macs": got[0]["macs"],
                     "params": got[0]["params"], "sources": sorted({g["tag"] for g in got})})
    for r in rows:  # KD minus hard labels, seed by seed where both exist
        if r["method"] != "kd":
            continue
        ce = next((c for c in rows if c["method"] == "ce" and c["budget"] == r["budget"]), None)
        if ce:
            pairs = {s: t for s, t in zip(r["seeds"], r["top1"])}
            r["gap_by_seed"] = {s: round(pairs[s] - t, 2) for s, t in zip(ce["seeds"], ce["top1"]) if s in pairs}
            r["gap_of_means"] = round(r["mean"] - ce["mean"], 2)
    teachers = json.loads((RESULTS / "eval_teachers.json").read_text())["rows"]
    refs = {t["teacher"]: t for t in teachers}
    ensemble = json.loads((RESULTS / "eval_ensemble.json").read_text())["top1"]["cifar10-ensemble (EnsembleTeacher)"]
    return {"rows": rows, "references": {
        "resnet20 (shared, no KD)": {"top1": refs["resnet20"]["top1"], "macs": refs["resnet20"]["macs"]},
        "resnet56 (teacher)": {"top1": refs["resnet56"]["top1"], "macs": refs["resnet56"]["macs"]},
        "resnet20/32/44/56 ensemble (teacher)": {"top1": ensemble,
                                                 "macs": sum(refs[a]["macs"] for a in ("resnet20", "resnet32",
                                                                                      "resnet44", "resnet56"))}}}


def markdown(s: dict) -> str:
    lines = ["| budget | student | method | top-1 (%) | seeds | per seed | KD - hard labels, per seed |",
             "|---|---|---|---:|---|---|---|"]
    for r in s["rows"]:
        top = f"{r['mean'] + 1e-9:.2f}" + (f" +- {r['std']:.2f}" if r["std"] is not None else "")  # 90.665 -> 90.67
        gap = ", ".join(f"{g:+.2f}" for g in r.get("gap_by_seed", {}).values())
        lines.append(f"| {r['budget']} | {r['student']} | {r['method']} | {top} | {', '.join(map(str, r['seeds']))} "
                     f"| {' / '.join(f'{t:.2f}' for t in r['top1'])} | {gap} |")
    lines += ["", "| reference | top-1 (%) | MACs |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['top1']:.2f} | {v['macs'] / 1e6:.1f}M |" for k, v in s["references"].items()]
    return "\n".join(lines) + "\n"


def plot(s: dict, path: Path) -> Path | None:
    from kd2edge import Kd2EdgeError
    from kd2edge.plots import _pyplot, _save

    try:
        plt = _pyplot()
    except Kd2EdgeError:  # matplotlib missing: the table still stands
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    style = {"kd": ("tab:blue", "o", "KD"), "ce": ("tab:gray", "s", "hard labels")}
    for method, (color, marker, label) in style.items():
        rs = sorted((r for r in s["rows"] if r["method"] == method), key=lambda r: r["budget_s"])
        xs = [r["budget_s"] / 60 for r in rs]
        a.errorbar(xs, [r["mean"] for r in rs], yerr=[r["std"] or 0 for r in rs], color=color, marker=marker,
                   capsize=3, label=label)
        for r in rs:
            a.scatter([r["budget_s"] / 60] * len(r["top1"]), r["top1"], color=color, s=10, alpha=0.5)
            if method == "kd":
                a.annotate(f"{r['student']}, {r['macs'] / 1e6:.1f}M MACs", (r["budget_s"] / 60, r["mean"]),
                           textcoords="offset points", xytext=(0, 9), fontsize=7, ha="center")
            b.scatter(r["macs"] / 1e6, r["mean"], color=color, marker=marker,
                      label=label if r is rs[0] else None)
            b.annotate(r["budget"], (r["macs"] / 1e6, r["mean"]), textcoords="offset points", xytext=(5, -3),
                       fontsize=7)
    for (name, ref), ls in zip(s["references"].items(), (":", "--", "-.")):
        a.axhline(ref["top1"], color="tab:red", ls=ls, lw=1, label=name)
        b.scatter(ref["macs"] / 1e6, ref["top1"], color="tab:red", marker="^")
        b.annotate(name.split(" (")[0], (ref["macs"] / 1e6, ref["top1"]), textcoords="offset points",
                   xytext=(5, -3), fontsize=7)
    a.set_xscale("log")
    a.set_xlim(3, 250)
    a.set_xlabel("wall-clock budget per student (minutes, cold teacher cache, 2-core CPU)")
    a.set_ylabel("CIFAR-10 test top-1 (%)")
    a.set_title("KD vs hard labels at equal wall time")
    a.legend(fontsize=7, loc="lower right")
    b.set_xscale("log")
    b.set_xlabel("MACs per image (millions)")
    b.set_title("top-1 by model size")
    b.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def main() -> None:
    from kd2edge.files import write_json, write_text

    s = summary()
    md = markdown(s)
    print(md, end="")
    write_json(RESULTS / "headline.json", s)
    write_text(RESULTS / "headline.md", md)
    png = plot(s, RESULTS / "headline.png")
    print(f"saved {RESULTS / 'headline.json'}, headline.md" + (f", {png.name}" if png else " (no matplotlib: no plot)"))


if __name__ == "__main__":
    main()
