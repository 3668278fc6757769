"""Bench reports: JSON per run, rows appended to `bench.csv` keyed by device, accuracy-vs-latency PNG, and the
terminal table. No torch. Every write is atomic (temp file beside the target, then rename)."""
from __future__ import annotations

import csv
import io
import time
from pathlib import Path

from kd2edge import Kd2EdgeError
from kd2edge.files import write_json, write_text

# CSV columns in order: device first (the key), then the artifact, latency, accuracy and drift.
CSV_COLUMNS = [
    "device_id", "cpu", "board", "arch", "cores", "isa", "os", "python", "governor", "runtimes", "source", "status",
    "created", "artifact", "target", "precision", "runtime", "runtime_version", "threads", "batch", "model_mb",
    "protocol", "headline", "headline_ms", "load_ms", "first_ms", "warmup", "runs", "duration_s",
    "mean_ms", "std_ms", "min_ms", "max_ms", "p50_ms", "p90_ms", "p99_ms",
    "peak_rss_mb", "n_eval", "top1", "tied_top1", "student_top1", "agree_student", "delta_student", "max_logit_diff",
    "mean_logit_diff", "sqnr_db", "teacher_top1", "agree_teacher", "delta_teacher", "gate", "gate_top1_min",
    "sustained_min", "window_s", "first_p50_ms", "last_p50_ms", "drift_pct", "throttled",
    "temp_c_first", "temp_c_last", "freq_mhz_first", "freq_mhz_last", "profile_top",
    "dataset", "dataset_n", "dataset_top1", "note", "path",
]
# kept in the JSON only (lists and nested records do not fit a CSV cell)
JSON_ONLY = ("windows", "profile")
# The terminal table (fits 100 columns; every other column is in bench.csv and the JSON): (header, key, format).
TABLE = [("artifact", "artifact", "{}"), ("threads", "threads", "{}"), ("p50 (ms)", "p50_ms", "{:.3f}"),
         ("top-1 (%)", "top1", "{:.2f}"), ("Δ vs student (pt)", "delta_student", "{:+.2f}"),
         ("same class as teacher (%)", "agree_teacher", "{:.2f}"), ("Δ vs teacher (pt)", "delta_teacher", "{:+.2f}"),
         ("gate", "gate", "{}")]
OPTIONAL = {"gate"}  # shown only when a row has it (--protocol mlperf)
LEGEND = ("Δ vs student / teacher: artifact top-1 minus the PyTorch student's / teacher's on the same images "
          "(points); same class as teacher: share of images where the artifact and the PyTorch teacher agree; "
          "gate: the mlperf protocol's accuracy gate; p90/p99, load time, RSS and the rest: bench.csv and the JSON.")


def table_rows(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted cells for one row per artifact run ('' where a value is missing)."""
    table = [c for c in TABLE if c[1] not in OPTIONAL or any(r.get(c[1]) not in (None, "") for r in rows)]
    cells = []
    for r in rows:
        line = []
        for _, key, fmt in table:
            v = r.get(key)
            line.append("" if v is None or v == "" else fmt.format(v))
        cells.append(line)
    return [h for h, _, _ in table], cells


def csv_text(rows: list[dict], existing: str = "") -> str:
    """`existing` CSV text with `rows` appended; columns are CSV_COLUMNS plus any extra keys, old rows kept."""
    old = list(csv.DictReader(io.StringIO(existing))) if existing.strip() else []
    columns = list(CSV_COLUMNS)
    for r in [*old, *rows]:
        columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    columns = [c for c in columns if c not in JSON_ONLY]
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in [*old, *rows]:
        w.writerow({k: _cell(r.get(k)) for k in columns})
    return buf.getvalue()


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return " ".join(map(str, v))
    return v


def existing_csv(path) -> str:
    """The text of an existing bench.csv ('' if none), checked: a damaged file is a one-line error (checked
    before measuring, and never overwritten)."""
    path = Path(path)
    if not path.exists():
        return ""
    try:
        text = path.read_text(encoding="utf-8")
        rows = list(csv.reader(io.StringIO(text)))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise Kd2EdgeError(f"{path} is not a readable bench CSV ({e}); move it away or choose another --out") from None
    if rows and "device_id" not in rows[0]:
        raise Kd2EdgeError(f"{path} is not a bench CSV (its header lacks device_id); move it away or choose "
                           "another --out")
    return text


def append_csv(rows: list[dict], path) -> Path:
    return write_text(path, csv_text(rows, existing_csv(path)))


def write_reports(rows: list[dict], device: dict, out, source: str = "kd2edge bench") -> dict:
    """bench-<device>-<time>.json, rows appended to bench.csv, and bench.png (accuracy vs p50) when possible."""
    out = Path(out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    paths = {"json": out / f"bench-{device['device_id']}-{stamp}.json", "csv": out / "bench.csv"}
    for r in rows:  # sustained runs: one latency-over-time plot each (the path goes into the JSON and CSV)
        if r.get("windows"):
            from kd2edge.bench.sustained import plot as sustained_plot

            name = f"sustained-{r['artifact']}-t{r['threads']}-{stamp}.png"
            png, note = sustained_plot(r, out / name)
            r["plot"] = str(png) if png else None
            if note:
                r["note"] = "; ".join(x for x in (r.get("note"), note) if x)
    write_json(paths["json"], {"format": "kd2edge.bench", "format_version": 1, "source": source,
                               "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": device, "results": rows})
    append_csv([r for r in rows if r.get("status") != "skipped"], paths["csv"])
    png = plot(out / "bench.png", rows)
    if png:
        paths["png"] = png
    return paths


def detail_lines(rows: list[dict]) -> list[str]:
    """Lines under the table: the protocol's headline and accuracy gate, sustained windows, op profiles."""
    from kd2edge.bench import profile, sustained

    lines = []
    for r in rows:
        if r.get("status") != "ok":
            continue
        if r.get("protocol") not in (None, "default"):
            lines.append(f"{r['protocol']} {r['artifact']} threads={r['threads']}: {r['headline']} "
                         f"{r['headline_ms']:.3f} ms over {r['runs']} queries in {r['duration_s']:.1f} s "
                         f"(asked: >= {r['min_queries']} and >= {r['min_seconds']:g} s); accuracy gate "
                         f"{r['gate'].upper()}: {r['gate_note']}")
        if r.get("windows"):
            lines += sustained.summary_lines(r)
            lines.append(f"  plot: {r['plot']}" if r.get("plot") else "  plot: skipped (see note)")
        if r.get("profile"):
            lines += profile.summary_lines(r)
    return lines


def plot(path, rows: list[dict]) -> Path | None:
    """Top-1 vs p50 latency of this run, one point per artifact at its fewest threads (matplotlib optional)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    from kd2edge.plots import scatter_png

    best: dict = {}
    for r in rows:
        if r.get("p50_ms") is None or r.get("top1") is None:
            continue
        if r["artifact"] not in best or (r["threads"] or 0) < (best[r["artifact"]]["threads"] or 0):
            best[r["artifact"]] = r
    if not best:
        return None
    points = [{"p50_ms": r["p50_ms"], "top1": r["top1"], "name": r["artifact"]} for r in best.values()]
    threads = sorted({r["threads"] for r in best.values()}, key=str)
    return scatter_png(points, path, title=f"Accuracy vs latency on {rows[0].get('cpu', 'this device')} "
                                           f"(batch {rows[0].get('batch')}, threads {', '.join(map(str, threads))})")
