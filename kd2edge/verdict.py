"""The report's answer first: per target, which student artifact to ship under the user's rule, and the
accuracy-latency Pareto front. Plain functions over the report's deployment rows (dicts keyed by column).
No torch.

Rules (the run config's `report` section, both optional):
- `max_latency_ms`: the most accurate artifact whose batch-1 p50 is within it;
- `max_drop`: the fastest artifact whose top-1 is at most this many points below the PyTorch teacher's (on
  the artifact's eval bundle, `Δ vs teacher (pt)`);
- both: the most accurate artifact within both; neither: the most accurate artifact (ties: the faster).
"""
from __future__ import annotations

from kd2edge import Kd2EdgeError
from kd2edge.numbers import number

VERDICT_COLS = ["target", "ship", "threads", "top-1 (%)", "Δ vs teacher (pt)", "p50 (ms)", "p90 (ms)",
                "speed-up vs PyTorch teacher", "speed-up vs teacher, same export"]
RULE_KEYS = {"max_latency_ms": "milliseconds of batch-1 p50", "max_drop": "top-1 points below the teacher",
             "seed_spread_pt": "top-1 points of seed-to-seed spread you measured"}


def check_rules(rules: dict) -> dict:
    """The `report` section of a run config, each value None or a positive number (one-line error else)."""
    for key, what in RULE_KEYS.items():
        try:
            number(f"report.{key}", rules.get(key), low=0, low_open=True, none=True)
        except Kd2EdgeError as e:
            raise Kd2EdgeError(f"{e} ({what}, or null); e.g. `report: {{{key}: 2}}` in the config or "
                               f"--set report.{key}=2") from None
    return rules


def rule_text(rules: dict) -> str:
    lat, drop = rules.get("max_latency_ms"), rules.get("max_drop")
    if lat is not None and drop is not None:
        return f"the most accurate artifact with p50 <= {lat:g} ms and at most {drop:g} pt below the teacher"
    if lat is not None:
        return f"the most accurate artifact with p50 <= {lat:g} ms"
    if drop is not None:
        return f"the fastest artifact at most {drop:g} pt below the teacher"
    return ("the most accurate artifact (no budget set: add `report: {max_latency_ms: ...}` or "
            "`{max_drop: ...}` to the config)")


def _drop(row: dict, teacher_top1: float | None) -> float | None:
    """Points below the teacher: from the eval bundle's teacher logits, else the teacher's test-set top-1."""
    if row.get("Δ vs teacher (pt)") is not None:
        return -row["Δ vs teacher (pt)"]
    if teacher_top1 is not None and row.get("top-1 (%)") is not None:
        return teacher_top1 - row["top-1 (%)"]
    return None


def pick(candidates: list[dict], rules: dict, teacher_top1: float | None = None) -> dict | None:
    """The row the rule recommends among benched rows (None when none fits)."""
    lat, drop = rules.get("max_latency_ms"), rules.get("max_drop")
    fits = [r for r in candidates
            if (lat is None or r["p50 (ms)"] <= lat)
            and (drop is None or (_drop(r, teacher_top1) is not None and _drop(r, teacher_top1) <= drop))]
    if not fits:
        return None
    if drop is not None and lat is None:
        return min(fits, key=lambda r: (r["p50 (ms)"], -r["top-1 (%)"]))
    return min(fits, key=lambda r: (-r["top-1 (%)"], r["p50 (ms)"]))


def _benched(rows: list[dict], who: str) -> list[dict]:
    return [r for r in rows if str(r["artifact"]).startswith(f"{who}-") and str(r.get("status", "")).startswith("ok")
            and r.get("p50 (ms)") is not None and r.get("top-1 (%)") is not None]


def verdict_rows(deploy: list[dict], rules: dict, teacher_top1: float | None = None) -> list[dict]:
    """One row per export target of the student: the recommended artifact and thread count, or why none."""
    targets = list(dict.fromkeys(r["target"] for r in deploy if str(r["artifact"]).startswith("student-")))
    teacher_rows = {(r["artifact"], r["threads"]): r for r in _benched(deploy, "teacher")}
    out = []
    for target in targets:
        cands = [r for r in _benched(deploy, "student") if r["target"] == target]
        row = {c: None for c in VERDICT_COLS}
        row["target"] = target
        best = pick(cands, rules, teacher_top1)
        if best is None:
            row["ship"] = "none within the budget" if cands else "not benched here"
            out.append(row)
            continue
        twin = teacher_rows.get(("teacher-" + best["artifact"][len("student-"):], best["threads"]))
        row.update({"ship": best["artifact"], "threads": best["threads"], "top-1 (%)": best["top-1 (%)"],
                    "Δ vs teacher (pt)": best.get("Δ vs teacher (pt)"), "p50 (ms)": best["p50 (ms)"],
                    "p90 (ms)": best.get("p90 (ms)"),
                    "speed-up vs PyTorch teacher": best.get("speedup vs PyTorch teacher"),
                    "speed-up vs teacher, same export": (twin["p50 (ms)"] / best["p50 (ms)"]
                                                         if twin and best["p50 (ms)"] else None)})
        out.append(row)
    return out


def kd_line(evals: dict, method: str, spread: float | None = None) -> str | None:
    """KD student vs the hard-label baseline on the full test set (PyTorch), with the seed spread if known."""
    s, b = evals.get(f"student ({method})"), evals.get("baseline (ce)")
    if not s or not b:
        return None
    gap = s["top1"] - b["top1"]
    noise = (f"seed-to-seed spread ±{spread:g} pt, so the gap is {'above' if abs(gap) > spread else 'within'} "
             "the noise" if spread else "one seed: see the README for the spread to expect between runs")
    return (f"Distillation ({method}) vs hard labels, same student and budget: {s['top1']:.2f}% vs {b['top1']:.2f}% "
            f"top-1 ({gap:+.2f} pt; {noise}).")


def pareto(points: list[dict], x: str = "p50_ms", y: str = "top1") -> list[dict]:
    """Points no other point beats on both (lower x, higher y), ordered by x."""
    front, best = [], float("-inf")
    for p in sorted((q for q in points if q.get(x) is not None and q.get(y) is not None),
                    key=lambda q: (q[x], -q[y])):
        if p[y] > best:
            front.append(p)
            best = p[y]
    return front
