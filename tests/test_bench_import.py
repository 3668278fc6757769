"""`kd2edge bench --import`: a recorded TFLite benchmark_model log becomes the same bench.csv row."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kd2edge import Kd2EdgeError
from kd2edge.bench.reports import CSV_COLUMNS
from kd2edge.bench.log_import import import_log, log_row, parse_log

LOG = Path(__file__).parent / "data" / "benchmark_model_pixel7_int8.log"

OLD_LOG = """STARTING!
Num threads: [1]
Graph: [/data/local/tmp/mobilenet.tflite]
Loaded model /data/local/tmp/mobilenet.tflite
Initialized session in 0.896ms
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=215 first=12231 curr=2106 min=2065 max=12231 avg=2331.42 std=746

Running benchmark for at least 100 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=459 first=2143 curr=2101 min=2056 max=2656 avg=2177.1 std=124

Inference timings in us: Init: 896, First inference: 12231, Warmup (avg): 2331.42, Inference (avg): 2177.1
Memory footprint delta from the start of the tool (MB): init=3.1 overall=4.5
"""

FAILED_LOG = """INFO: Loaded model ./model.tflite
ERROR: tensorflow/lite/kernels/batch_matmul.cc:353 lhs_data->type == rhs_data->type was not true.
ERROR: Node number 57 (BATCH_MATMUL) failed to prepare.
ERROR: Failed to allocate tensors!
ERROR: Benchmarking failed.
"""


def test_parse_recorded_log():
    p = parse_log(LOG.read_text())
    assert p["graph"] == "/data/local/tmp/resnet20-12fca82f-tflite-int8/model.tflite" and p["num_threads"] == "4"
    assert p["warmup"]["count"] == 1871 and p["timed"]["count"] == 3904 and p["timed"]["median"] == 246
    assert p["init_us"] == 5873 and p["first_us"] == 1512 and p["avg_us"] == 254.61 and p["init_ms"] == 5.873
    assert p["model_mb"] == 0.326144 and p["peak_mem_mb"] == 6.97266 and p["mem_delta_mb"] == 2.51953


def test_row_from_recorded_log_fills_the_bench_columns():
    row = log_row(parse_log(LOG.read_text()), device_name="Pixel 7 (Tensor G2)")
    assert row["artifact"] == "resnet20-12fca82f-tflite-int8" and row["threads"] == 4 and row["runtime"] == "litert"
    assert row["runs"] == 3904 and row["warmup"] == 1871
    assert row["p50_ms"] == pytest.approx(0.246) and row["mean_ms"] == pytest.approx(0.25461)
    assert row["min_ms"] == pytest.approx(0.224) and row["max_ms"] == pytest.approx(1.204)
    assert row["std_ms"] == pytest.approx(0.038) and row["p95_ms"] == pytest.approx(0.305)
    assert row["p90_ms"] is None and row["p99_ms"] is None  # benchmark_model prints p5/median/p95 only
    assert row["first_ms"] == pytest.approx(1.512) and row["load_ms"] == pytest.approx(5.873)
    assert row["model_mb"] == pytest.approx(0.326144e6 / 2 ** 20) and row["peak_rss_mb"] == pytest.approx(6.97266)
    assert row["cpu"] == "Pixel 7 (Tensor G2)" and row["device_id"].startswith("import-")
    assert row["source"] == "benchmark_model"
    assert set(row) - set(CSV_COLUMNS) == {"p5_ms", "p95_ms", "mem_delta_mb"}  # the same columns as kd2edge bench


def test_old_format_without_percentiles():
    row = log_row(parse_log(OLD_LOG))
    assert row["threads"] == 1 and row["runs"] == 459 and row["p50_ms"] is None
    assert row["mean_ms"] == pytest.approx(2.1771) and row["peak_rss_mb"] is None and row["mem_delta_mb"] == 4.5
    assert "p50 unknown" in row["note"] and row["artifact"] == "mobilenet"


def test_bad_logs_fail_clearly(tmp_path):
    with pytest.raises(Kd2EdgeError, match="BATCH_MATMUL"):
        parse_log(FAILED_LOG)
    with pytest.raises(Kd2EdgeError, match="does not look like TFLite benchmark_model output"):
        parse_log("hello\nworld\n")
    with pytest.raises(Kd2EdgeError, match="log not found"):
        import_log(tmp_path / "missing.log")


def test_cli_import_appends_the_same_csv(tmp_path):
    art = tmp_path / "resnet20-tflite-int8"
    art.mkdir()
    (art / "model.tflite").write_bytes(b"\0" * 16)
    (art / "meta.json").write_text(json.dumps({
        "format": "kd2edge.artifact", "name": "resnet20-tflite-int8", "target": "tflite", "runtime": "litert",
        "model_file": "model.tflite", "precision": "int8", "input": {}, "output": {},
        "parity": {"n": 1000, "top1": 91.2, "top1_pytorch": 91.6, "drop": 0.4, "agreement": 98.7,
                   "max_abs_logit_diff": 1.9, "sqnr_db": 30.1}}))
    env = {**os.environ}
    r = subprocess.run([sys.executable, "-m", "kd2edge", "bench", str(art), "--import", str(LOG), "--device-name",
                        "Pixel 7", "--out", str(tmp_path / "res")], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Pixel 7" in r.stdout
    (row,) = csv.DictReader((tmp_path / "res" / "bench.csv").read_text().splitlines())
    assert row["artifact"] == "resnet20-tflite-int8" and row["precision"] == "int8" and row["p50_ms"] == "0.246"
    assert row["top1"] == "91.2" and row["delta_student"] == "-0.4" and "parity check" in row["note"]
    r = subprocess.run([sys.executable, "-m", "kd2edge", "bench", "--import", str(tmp_path / "nope.log"), "--out",
                        str(tmp_path / "res")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "log not found" in r.stdout
