"""`kd2edge bench --import LOG`: TFLite/LiteRT `benchmark_model` output -> the same bench.csv row as `kd2edge bench`,
so phones without Python land in one table with everything else (see docs/phones.md).

benchmark_model prints (times in microseconds):
    INFO: Num threads: [4]
    INFO: Graph: [/data/local/tmp/model.tflite]
    INFO: The input model file size (MB): 0.29
    INFO: Initialized session in 3.1ms.
    INFO: count=812 first=1013 curr=166 min=150 max=1013 avg=181.3 std=36 p5=152 median=170 p95=231   (warmup)
    INFO: count=5530 first=183 curr=176 min=165 max=1004 avg=180.2 std=25 p5=... median=... p95=...    (timed)
    INFO: Inference timings in us: Init: 3103, First inference: 1013, Warmup (avg): 191.4, Inference (avg): 180.2
    INFO: Peak memory footprint (MB): init=2.5 overall=4.1   (or, with --report_peak_memory_footprint,
    INFO: Overall peak memory footprint (MB) via periodic monitoring: 6.9)
Older builds omit p5/median/p95 and say "Memory footprint delta from the start of the tool (MB)"; the Android
benchmark app logs "Average inference timings in us: Warmup: W, Init: I, Inference: A" to logcat.

With --enable_op_profiling=true it then prints "Operator-wise Profiling Info for Regular Benchmark Runs:" and
three tables (Run Order, Top by Computation Time, Summary by node type; tab- or space-aligned, with or without
a [start] column, node types such as "Convolution (NHWC, QC8) GEMM" under XNNPACK): `parse_op_profile` reads
them into the same profile shape as `kd2edge bench --profile` (kd2edge.bench.profile).
The tests read real published logs (tests/data/*.log, each citing its source on its first line).
"""
from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

from kd2edge import Kd2EdgeError
from kd2edge.locations import run_folder

NUMBER = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
STAT_KEYS = ("count", "first", "curr", "min", "max", "avg", "std", "p5", "median", "p95")


def _bracket(text: str, label: str):
    m = re.search(rf"{re.escape(label)}:\s*\[([^\]]*)\]", text)
    return m.group(1).strip() if m else None


def _stats(line: str) -> dict:
    return {k: float(v) for k, v in re.findall(rf"\b({'|'.join(STAT_KEYS)})={NUMBER}", line)}


def parse_log(text: str) -> dict:
    """The numbers of one benchmark_model run (microseconds as printed; keys absent when not printed)."""
    errors = [ln.split("ERROR:", 1)[-1].strip() for ln in text.splitlines() if "ERROR" in ln]
    if "Benchmarking failed" in text or ("Inference timings in us" not in text and errors):
        raise Kd2EdgeError(f"the benchmark_model run failed: {' | '.join(errors[:3]) or 'Benchmarking failed'}; "
                           "fix it (e.g. another op version or delegate) and import a successful run")
    # the latency lines only: not the op-profiling sections' "Timings (microseconds): count=" / "Memory (bytes)"
    stats = [_stats(ln) for ln in text.split(OP_PROFILE_HEADER)[0].split("Profiling Info for Benchmark Init")[0]
             .splitlines() if re.search(r"\bcount=\d", ln) and "(microseconds)" not in ln and "(bytes)" not in ln]
    summary = re.search(rf"Inference timings in us:\s*Init:\s*{NUMBER},\s*First inference:\s*{NUMBER},\s*"
                        rf"Warmup \(avg\):\s*{NUMBER},\s*Inference \(avg\):\s*{NUMBER}", text)
    app = re.search(rf"Average inference timings in us:\s*Warmup:\s*{NUMBER},\s*Init:\s*{NUMBER},\s*"
                    rf"(?:Inference|no stats):\s*{NUMBER}", text)
    if not (summary or app):
        raise Kd2EdgeError("this file does not look like TFLite benchmark_model output (no 'Inference timings in "
                           "us' line); save the tool's whole output, e.g. `adb shell /data/local/tmp/benchmark_model "
                           "--graph=... > log.txt` (see docs/phones.md)")
    cli_threads = re.search(r"--num_threads=(\d+)", text)  # the command line, when the log starts with it
    out: dict = {"graph": _bracket(text, "Graph"),
                 "num_threads": _bracket(text, "Num threads") or _bracket(text, "#threads used for CPU inference")
                 or (cli_threads[1] if cli_threads else None),
                 "input_shape": _bracket(text, "Input shapes") or _bracket(text, "Input layer shape")}
    if summary:
        out.update(init_us=float(summary[1]), first_us=float(summary[2]), warmup_avg_us=float(summary[3]),
                   avg_us=float(summary[4]))
    else:
        out.update(warmup_avg_us=float(app[1]), init_us=float(app[2]), avg_us=float(app[3]))
    if len(stats) >= 2:
        out["warmup"], out["timed"] = stats[-2], stats[-1]
    elif stats:
        out["timed"] = stats[-1]
    m = re.search(rf"model file size \(MB\):\s*{NUMBER}", text)
    if m:
        out["model_mb"] = float(m[1])
    m = re.search(rf"Initialized session in\s*{NUMBER}\s*ms", text)
    if m:
        out["init_ms"] = float(m[1])
    m = re.search(rf"Overall peak memory footprint \(MB\) via periodic monitoring:\s*{NUMBER}", text)
    n = re.search(rf"Peak memory footprint \(MB\):\s*init={NUMBER}\s+overall={NUMBER}", text)
    if m or n:
        out["peak_mem_mb"] = float(m[1] if m else n[2])
    m = re.search(rf"Memory footprint delta from the start of the tool \(MB\):\s*init={NUMBER}\s+overall={NUMBER}", text)
    if m:
        out["mem_delta_mb"] = float(m[2])
    if OP_PROFILE_HEADER in text:
        out["op_profile"] = parse_op_profile(text)
    return out


OP_PROFILE_HEADER = "Operator-wise Profiling Info for Regular Benchmark Runs"
_SUMMARY_ROW = re.compile(rf"^\s*(?:INFO:\s*)?(\S.*?)\s+(\d+)\s+{NUMBER}\s+{NUMBER}%\s+{NUMBER}%\s+{NUMBER}\s+(\d+)\s*$")
_NODE_ROW = re.compile(rf"^\s*(?:INFO:\s*)?(\S.*?)\s+(?:{NUMBER}\s+)?{NUMBER}\s+{NUMBER}\s+{NUMBER}%\s+{NUMBER}%\s+"
                       rf"{NUMBER}\s+(\d+)\s+(\S.*?)\s*$")


def parse_op_profile(text: str, top: int = 10) -> dict:
    """benchmark_model's regular-run op profile: {source, runs, by_op: [{op, nodes, ms_per_run, pct}] (the
    "Summary by node type" table), by_node: top nodes [{node, op, ms_per_run, pct}] (the "Run Order" table),
    ms_per_run: the profiled runs' mean}. Times are per run, as the tool prints them (avg over its runs)."""
    if OP_PROFILE_HEADER not in text:
        raise Kd2EdgeError("no 'Operator-wise Profiling Info for Regular Benchmark Runs' section: run benchmark_model "
                           "with --enable_op_profiling=true (see docs/phones.md)")
    section = text.split(OP_PROFILE_HEADER, 1)[1]
    part, by_op, nodes = None, [], []
    for line in section.splitlines():
        if "Run Order" in line:
            part = "order"
        elif "Top by Computation Time" in line:
            part = "top"
        elif "Summary by node type" in line:
            part = "summary"
        elif "Timings (microseconds)" in line:
            break
        elif part == "summary" and (m := _SUMMARY_ROW.match(line)):
            by_op.append({"op": m[1].strip(), "nodes": int(m[2]), "ms_per_run": float(m[3]), "pct": float(m[4])})
        elif part == "order" and (m := _NODE_ROW.match(line)):
            avg, pct, called = float(m[4]), float(m[5]), int(m[8])
            nodes.append({"node": m[9], "op": m[1].strip(), "ms_per_run": avg * called, "pct": pct})
    if not by_op:
        raise Kd2EdgeError("the op-profiling section has no 'Summary by node type' rows; save the tool's whole "
                           "output (see docs/phones.md)")
    timings = re.search(r"Timings \(microseconds\):\s*(.*)", section)
    stats = _stats(timings[1]) if timings else {}
    return {"source": "benchmark_model --enable_op_profiling=true", "runs": int(stats["count"]) if "count" in stats
            else None, "ms_per_run": stats["avg"] / 1000 if "avg" in stats else None,
            "by_op": sorted(by_op, key=lambda o: -o["ms_per_run"]),
            "by_node": sorted(nodes, key=lambda n: -n["pct"])[:top]}


def _ms(v):
    return None if v is None else v / 1000.0


def log_row(parsed: dict, meta: dict | None = None, device_name: str | None = None) -> dict:
    """A bench.csv row from parse_log's numbers (+ the artifact's meta.json when given)."""
    timed, warm = parsed.get("timed", {}), parsed.get("warmup", {})
    threads = parsed.get("num_threads")
    shape = parsed.get("input_shape")
    graph = parsed.get("graph") or ""
    notes = ["imported from TFLite benchmark_model"]
    if threads is None:
        notes.append("num_threads not in the log (the tool's default)")
    if "median" not in timed:
        notes.append("this benchmark_model build prints no percentiles: p50 unknown")
    row = {
        # an artifact folder's model.tflite is named by its folder; any other file by its own name
        "artifact": (Path(graph).parent.name if Path(graph).name == "model.tflite" else Path(graph).stem) or "unknown",
        "target": "tflite", "precision": None, "runtime": "litert", "runtime_version": "benchmark_model",
        "threads": int(threads) if threads and threads.lstrip("-").isdigit() else None,
        "batch": int(shape.split(",")[0]) if shape and shape.split(",")[0].strip().isdigit() else None,
        "model_mb": parsed["model_mb"] * 1e6 / 2 ** 20 if "model_mb" in parsed else None,  # tool: 1e6 bytes
        "load_ms": parsed.get("init_ms", _ms(parsed.get("init_us"))), "first_ms": _ms(parsed.get("first_us")),
        "warmup": int(warm["count"]) if "count" in warm else None,
        "runs": int(timed["count"]) if "count" in timed else None,
        "mean_ms": _ms(timed.get("avg", parsed.get("avg_us"))), "std_ms": _ms(timed.get("std")),
        "min_ms": _ms(timed.get("min")), "max_ms": _ms(timed.get("max")), "p50_ms": _ms(timed.get("median")),
        "p90_ms": None, "p99_ms": None, "p5_ms": _ms(timed.get("p5")), "p95_ms": _ms(timed.get("p95")),
        "peak_rss_mb": parsed.get("peak_mem_mb"), "mem_delta_mb": parsed.get("mem_delta_mb"),
    }
    if parsed.get("op_profile"):
        from kd2edge.bench.profile import top_text

        row.update(profile=parsed["op_profile"], profile_top=top_text(parsed["op_profile"]))
    if meta:
        row.update(artifact=meta.get("name") or row["artifact"], target=meta.get("target", "tflite"),
                   precision=meta.get("precision"))
        par = meta.get("parity") or {}
        if par.get("top1") is not None:
            row.update(n_eval=par.get("n"), top1=par["top1"], student_top1=par.get("top1_pytorch"),
                       agree_student=par.get("agreement"), delta_student=-par["drop"] if par.get("drop") is not None
                       else None, max_logit_diff=par.get("max_abs_logit_diff"), sqnr_db=par.get("sqnr_db"))
            notes.append("accuracy columns: the export's parity check of this same model file (host), "
                         "benchmark_model measures latency only")
    name = device_name or "unknown device"
    row.update(device_id="import-" + hashlib.sha256(name.encode()).hexdigest()[:8], cpu=name, board=name,
               arch=None, cores=None, isa=None, os=None, python=None, governor=None, runtimes="benchmark_model",
               source="benchmark_model", status="ok",
               created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), note="; ".join(notes))
    return row


def import_log(path, artifact=None, device_name: str | None = None, out=None,
               write: bool = True) -> dict:
    """Parse a saved benchmark_model log and append its row to `out`/bench.csv (and a JSON beside it)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise Kd2EdgeError(f"benchmark_model log not found: {path}")
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        raise Kd2EdgeError(f"cannot read {path}: {e}") from None
    meta = None
    if artifact is not None:
        from kd2edge.artifact import read_folder

        meta = read_folder(artifact)["meta"]
    row = log_row(parse_log(text), meta, device_name)
    row["path"] = str(path)
    if write:
        from kd2edge.bench.reports import write_reports

        device = {k: row[k] for k in ("device_id", "cpu", "board", "arch", "cores", "isa", "os", "python")}
        write_reports([row], device, out or run_folder("bench"), source=f"benchmark_model log {path.name}")
    return row

