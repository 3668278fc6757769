"""`kd2edge bench --profile`: time per operator where the runtime offers a profiler, else say what is missing.

| runtime     | per-operator profile                                                                        |
|-------------|---------------------------------------------------------------------------------------------|
| onnxruntime | its session profiling (SessionOptions.enable_profiling -> JSON trace), in a session of its own |
| litert      | none from Python: ai-edge-litert's Interpreter returns no per-op times; use benchmark_model   |
|             | --enable_op_profiling=true on the device and `kd2edge bench --import` (docs/phones.md)      |
| coreml      | none from Python (Xcode's Core ML performance report)                                         |

A profile is {source, runs, by_op: [{op, nodes, ms_per_run, pct}], by_node: [{node, op, ms_per_run, pct}]},
largest first; benchmark_model's op-profiling tables import to the same shape (kd2edge.bench.log_import).
"""
from __future__ import annotations

import tempfile
from collections import defaultdict

PROFILE_RUNS, SKIP_RUNS, TOP = 200, 3, 10
MISSING = {
    "litert": "no per-operator profile: ai-edge-litert's Python Interpreter has no profiler (no call returns "
              "per-op times; experimental_force_delegate_node_profiling only feeds a C++ profiler Python cannot "
              "attach). On the device run benchmark_model --enable_op_profiling=true and import its log with "
              "`kd2edge bench --import` (docs/phones.md)",
    "coreml": "no per-operator profile: coremltools has no profiler; use Xcode's Core ML performance report",
}


def summarize_ort_trace(events: list[dict], skip_runs: int = SKIP_RUNS) -> dict:
    """Per-op-type and per-node totals from an onnxruntime profiling trace, ignoring the first `skip_runs`
    model runs (first-call allocations). Kernel time only (`<node>_kernel_time` events)."""
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    if len(starts) <= skip_runs:
        skip_runs = 0
    cutoff = starts[skip_runs] if starts else 0
    runs = len(starts) - skip_runs
    by_op, nodes, by_node = defaultdict(float), defaultdict(set), defaultdict(float)
    node_op = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time") or e.get("ts", 0) < cutoff:
            continue
        op = (e.get("args") or {}).get("op_name", "?")
        node = name[: -len("_kernel_time")]
        by_op[op] += e["dur"]
        by_node[node] += e["dur"]
        nodes[op].add(node)
        node_op[node] = op
    total = sum(by_op.values()) or 1.0
    per_run = max(runs, 1) * 1000.0  # us over all runs -> ms per run
    ops = [{"op": op, "nodes": len(nodes[op]), "ms_per_run": us / per_run, "pct": 100 * us / total}
           for op, us in sorted(by_op.items(), key=lambda kv: -kv[1])]
    top_nodes = [{"node": n, "op": node_op[n], "ms_per_run": us / per_run, "pct": 100 * us / total}
                 for n, us in sorted(by_node.items(), key=lambda kv: -kv[1])[:TOP]]
    return {"source": "onnxruntime session profiling (kernel time per node)", "runs": runs, "by_op": ops,
            "by_node": top_nodes, "kernel_ms_per_run": total / per_run}


def _onnxruntime(artifact: dict, x, threads, runs: int) -> dict:
    from kd2edge.runtimes.ort import profile_trace

    with tempfile.TemporaryDirectory(prefix="kd2edge-profile-") as folder:
        events = profile_trace(artifact["model_path"], threads, x, runs + SKIP_RUNS, folder)
    return summarize_ort_trace(events)


PROFILERS = {"onnxruntime": _onnxruntime}


def profile(artifact: dict, x, threads, runs: int = PROFILE_RUNS) -> dict:
    """The runtime's per-operator profile of `runs` calls on the prepared input `x`, or {missing: why}."""
    runtime = artifact["meta"]["runtime"]
    if runtime not in PROFILERS:
        return {"source": None, "missing": MISSING.get(runtime, f"no per-operator profiler for {runtime}")}
    return PROFILERS[runtime](artifact, x, threads, runs)


def top_text(prof: dict | None, n: int = 5) -> str:
    """'QLinearConv 71.3%, QuantizeLinear 9.8%, ...' (the CSV cell and the terminal line)."""
    if not prof or not prof.get("by_op"):
        return ""
    return ", ".join(f"{o['op']} {o['pct']:.1f}%" for o in prof["by_op"][:n])


def summary_lines(row: dict) -> list[str]:
    prof = row.get("profile") or {}
    head = f"profile {row['artifact']} threads={row['threads']}:"
    if prof.get("missing"):
        return [f"{head} {prof['missing']}"]
    lines = [f"{head} {prof['source']}, {prof['runs']} runs"]
    for o in prof["by_op"][:TOP]:
        lines.append(f"  {o['op']:<28} {o['nodes']:4d} nodes  {o['ms_per_run']:8.4f} ms/run  {o['pct']:5.1f}%")
    return lines
