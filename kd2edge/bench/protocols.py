"""Bench protocols: how many timed queries, for how long, which latency is the headline, and which accuracy
gate a row must pass. One dict registry; the CLI's `--protocol` choices are its keys. Torch-free.

| protocol | timed queries                                   | headline | accuracy gate                          |
|----------|-------------------------------------------------|----------|----------------------------------------|
| default  | >= 50 runs and >= 1 s (or --runs / --seconds), as TFLite's benchmark_model | p50 | none          |
| mlperf   | >= 1,024 queries AND >= 60 s, single stream (MLPerf Inference edge rules) | p90 | artifact top-1 >= 99% of the fp32 PyTorch student's |

Warm-up runs are never timed. MLPerf's closed division gates accuracy at 98-99% of the fp32 reference
(99% for ResNet-50 and most vision models); here the reference is the PyTorch student's top-1 on the same
eval.npz images (its `student_logits`), the artifact's top-1 is measured on the device.
"""
from __future__ import annotations

from kd2edge import Kd2EdgeError

PROTOCOLS = {
    "default": {"summary": ">= 50 runs and >= 1 s (or --runs/--seconds), p50 headline, no accuracy gate",
                "min_queries": None, "min_seconds": None, "headline": "p50_ms", "accuracy_gate": None},
    "mlperf": {"summary": "MLPerf single-stream: >= 1,024 queries and >= 60 s, p90 headline, "
                          "top-1 >= 99% of the fp32 PyTorch student",
               "min_queries": 1024, "min_seconds": 60.0, "headline": "p90_ms", "accuracy_gate": 0.99},
}


def get_protocol(name: str) -> dict:
    if name not in PROTOCOLS:
        raise Kd2EdgeError(f"unknown bench protocol {name!r}; valid: {', '.join(PROTOCOLS)}")
    return {"name": name, **PROTOCOLS[name]}


def timing_budget(protocol: dict, runs, seconds, min_queries=None, min_seconds=None) -> dict:
    """time_runs() arguments for a protocol: {runs, seconds, max_seconds}. A protocol with minimums takes
    --min-queries / --min-seconds as overrides (short runs in tests) and refuses --runs / --seconds."""
    if protocol["min_queries"] is None:
        if min_queries is not None or min_seconds is not None:
            raise Kd2EdgeError(f"--min-queries/--min-seconds apply to a protocol with minimums "
                               f"({', '.join(k for k, p in PROTOCOLS.items() if p['min_queries'])}); "
                               "use --runs/--seconds with the default protocol")
        return {"runs": runs, "seconds": seconds}
    if runs is not None or seconds is not None:
        raise Kd2EdgeError(f"--runs/--seconds do not apply to --protocol {protocol['name']} (it times >= "
                           f"{protocol['min_queries']} queries and >= {protocol['min_seconds']:g} s); "
                           "use --min-queries/--min-seconds to change that")
    queries = protocol["min_queries"] if min_queries is None else min_queries
    secs = protocol["min_seconds"] if min_seconds is None else min_seconds
    if queries < 1 or secs <= 0:
        raise Kd2EdgeError(f"--min-queries must be >= 1 and --min-seconds > 0, got {queries} and {secs}")
    # both minimums must be met, however long that takes (no 150 s cap as in the default protocol)
    return {"runs": int(queries), "seconds": float(secs), "max_seconds": None}


def protocol_columns(protocol: dict, row: dict, budget: dict) -> dict:
    """The protocol's row columns: name, headline latency, the minimums asked for, and the accuracy gate."""
    key = protocol["headline"]
    out = {"protocol": protocol["name"], "headline": key.replace("_ms", ""), "headline_ms": row.get(key)}
    if protocol["min_queries"] is not None:
        out.update(min_queries=budget["runs"], min_seconds=budget["seconds"],
                   queries_ok=row.get("runs", 0) >= budget["runs"] and row.get("duration_s", 0) >= budget["seconds"])
    out.update(accuracy_gate(protocol["accuracy_gate"], row))
    return out


def accuracy_gate(fraction, row: dict) -> dict:
    """pass / fail / n/a of `top1 >= fraction * student_top1` (n/a without a gate or without reference logits)."""
    if fraction is None:
        return {}
    if row.get("top1") is None or row.get("student_top1") is None:
        return {"gate": "n/a", "gate_top1_min": None,
                "gate_note": "no eval.npz with student_logits beside the model: accuracy gate not checked"}
    need = fraction * row["student_top1"]
    return {"gate": "pass" if row["top1"] >= need - 1e-9 else "fail", "gate_top1_min": need,
            "gate_note": f"top-1 {row['top1']:.2f} vs >= {need:.2f} ({fraction:.0%} of the fp32 PyTorch student's "
                         f"{row['student_top1']:.2f}, {row.get('n_eval')} images)"}
