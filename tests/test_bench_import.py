"""`kd2edge bench --import`: real published TFLite benchmark_model logs (tests/data, each citing its source on
its first line) become the same bench.csv row, with the op profile of --enable_op_profiling=true."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from kd2edge import Kd2EdgeError
from kd2edge.bench.log_import import _NODE_ROW, OP_PROFILE_HEADER, import_log, log_row, parse_log, parse_op_profile
from kd2edge.bench.reports import CSV_COLUMNS

DATA = Path(__file__).parent / "data"
AM62X = DATA / "benchmark_model_am62x_xnnpack.log"  # TI AM62x board, INFO: format with p5/median/p95
RISCV = DATA / "benchmark_model_riscv64_op_profiling.log"  # older format, --enable_op_profiling=true
MI11_PROFILE = DATA / "benchmark_model_mi11_nnapi_op_profile.log"  # a phone's op profile (NNAPI delegate)
MI11_FAILED = DATA / "benchmark_model_mi11_nnapi_failed.log"  # a phone's failed run


def test_every_log_cites_its_source():
    for log in DATA.glob("*.log"):
        first = log.read_text().splitlines()[0]
        assert first.startswith("# source: https://github.com/") and "/blob/" in first, log.name


def test_parse_am62x_log():
    p = parse_log(AM62X.read_text())
    assert p["graph"] == "/usr/share/oob-demo-assets/models/ssd_mobilenet_v2_coco.tflite"
    assert p["num_threads"] == "4"  # not printed by this build: read from the command line at the top of the log
    assert p["warmup"]["count"] == 1 and p["timed"]["count"] == 50 and p["timed"]["median"] == 899281
    assert p["init_us"] == 614333 and p["first_us"] == 905463 and p["avg_us"] == 899641 and p["init_ms"] == 614.333
    assert p["model_mb"] == 67.3128 and p["mem_delta_mb"] == 150.141 and "peak_mem_mb" not in p
    assert "op_profile" not in p


def test_row_from_am62x_log_fills_the_bench_columns():
    row = log_row(parse_log(AM62X.read_text()), device_name="TI AM62x EVM (4x Cortex-A53)")
    assert row["artifact"] == "ssd_mobilenet_v2_coco" and row["threads"] == 4 and row["runtime"] == "litert"
    assert row["runs"] == 50 and row["warmup"] == 1
    assert row["p50_ms"] == pytest.approx(899.281) and row["mean_ms"] == pytest.approx(899.641)
    assert row["min_ms"] == pytest.approx(898.007) and row["max_ms"] == pytest.approx(906.121)
    assert row["std_ms"] == pytest.approx(1.549) and row["p5_ms"] == pytest.approx(898.333)
    assert row["p95_ms"] == pytest.approx(904.305)
    assert row["p90_ms"] is None and row["p99_ms"] is None  # benchmark_model prints p5/median/p95 only
    assert row["first_ms"] == pytest.approx(905.463) and row["load_ms"] == pytest.approx(614.333)
    assert row["model_mb"] == pytest.approx(67.3128e6 / 2 ** 20) and row["peak_rss_mb"] is None
    assert row["cpu"] == "TI AM62x EVM (4x Cortex-A53)" and row["device_id"].startswith("import-")
    assert row["source"] == "benchmark_model" and row["runtimes"] == "benchmark_model"
    assert set(row) - set(CSV_COLUMNS) == {"p5_ms", "p95_ms", "mem_delta_mb"}  # the same columns as kd2edge bench


def test_old_format_with_op_profiling():
    """Percentiles absent; the op-profiling sections' own `count=` lines must not be read as the latency."""
    p = parse_log(RISCV.read_text())
    assert p["warmup"] == {"count": 1, "curr": 3512391} and p["timed"]["count"] == 50
    assert p["timed"]["avg"] == 2.95034e6 and p["num_threads"] == "4"
    row = log_row(p)
    assert row["runs"] == 50 and row["warmup"] == 1 and row["p50_ms"] is None and "p50 unknown" in row["note"]
    assert row["mean_ms"] == pytest.approx(2950.34) and row["mem_delta_mb"] == 46.0859
    assert row["artifact"] == "mobilenet_v1_1.0_224"
    prof = row["profile"]
    assert prof["runs"] == 50 and prof["ms_per_run"] == pytest.approx(2949.9)
    assert [(o["op"], o["nodes"]) for o in prof["by_op"]] == [
        ("CONV_2D", 15), ("DEPTHWISE_CONV_2D", 13), ("AVERAGE_POOL_2D", 1), ("SOFTMAX", 1), ("SQUEEZE", 1)]
    assert prof["by_op"][0]["ms_per_run"] == 2651.853 and prof["by_op"][0]["pct"] == 89.897
    assert sum(o["pct"] for o in prof["by_op"]) == pytest.approx(100, abs=0.01)
    assert row["profile_top"].startswith("CONV_2D 89.9%, DEPTHWISE_CONV_2D 10.1%")
    assert len(prof["by_node"]) == 10 and prof["by_node"][0] == {
        "node": "[MobilenetV1/MobilenetV1/Conv2d_5_pointwise/Relu6]:10", "op": "CONV_2D", "ms_per_run": 277.374,
        "pct": 9.403}


def test_run_order_rows_add_up_to_the_summary():
    """Every Run Order row is read (with its [start] column): per op type they sum to the summary table."""
    text = RISCV.read_text()
    order = text.split(OP_PROFILE_HEADER)[1].split("Top by Computation Time")[0]
    sums, rows = defaultdict(float), 0
    for line in order.splitlines():
        if m := _NODE_ROW.match(line):
            sums[m[1].strip()] += float(m[4]) * int(m[8])
            rows += 1
    assert rows == 31  # "Number of nodes executed: 31"
    for o in parse_op_profile(text)["by_op"]:
        assert sums[o["op"]] == pytest.approx(o["ms_per_run"], abs=0.01), o


def test_phone_op_profile_with_a_delegate():
    prof = parse_op_profile(MI11_PROFILE.read_text())  # the profile sections alone (no latency lines published)
    assert prof["runs"] == 50 and prof["ms_per_run"] == pytest.approx(164.609)
    assert [o["op"] for o in prof["by_op"]] == ["TfLiteNnapiDelegate", "STRIDED_SLICE", "TRANSPOSE",
                                                "RESIZE_NEAREST_NEIGHBOR"]
    assert prof["by_op"][0] == {"op": "TfLiteNnapiDelegate", "nodes": 3, "ms_per_run": 152.261, "pct": 92.504}
    assert prof["by_node"][0]["op"] == "TfLiteNnapiDelegate" and prof["by_node"][0]["pct"] == 50.878
    assert "ModifyGraphWithDelegate" not in {o["op"] for o in prof["by_op"]}  # init profile is not a run's
    with pytest.raises(Kd2EdgeError, match="does not look like TFLite benchmark_model output"):
        parse_log(MI11_PROFILE.read_text())  # latency import needs the 'Inference timings' line
    with pytest.raises(Kd2EdgeError, match="--enable_op_profiling=true"):
        parse_op_profile(AM62X.read_text())


def test_bad_logs_fail_clearly(tmp_path):
    with pytest.raises(Kd2EdgeError, match="ANEURALNETWORKS_BAD_DATA"):
        parse_log(MI11_FAILED.read_text())
    with pytest.raises(Kd2EdgeError, match="does not look like TFLite benchmark_model output"):
        parse_log("hello\nworld\n")
    with pytest.raises(Kd2EdgeError, match="log not found"):
        import_log(tmp_path / "missing.log")


def test_cli_import_appends_the_same_csv(tmp_path):
    art = tmp_path / "ssd-tflite-int8"
    art.mkdir()
    (art / "model.tflite").write_bytes(b"\0" * 16)
    (art / "meta.json").write_text(json.dumps({
        "format": "kd2edge.artifact", "name": "ssd-tflite-int8", "target": "tflite", "runtime": "litert",
        "model_file": "model.tflite", "precision": "int8", "input": {}, "output": {},
        "parity": {"n": 1000, "top1": 91.2, "top1_pytorch": 91.6, "drop": 0.4, "agreement": 98.7,
                   "max_abs_logit_diff": 1.9, "sqnr_db": 30.1}}))
    r = subprocess.run([sys.executable, "-m", "kd2edge", "bench", str(art), "--import", str(AM62X), "--device-name",
                        "TI AM62x", "--out", str(tmp_path / "res")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "TI AM62x" in r.stdout
    (row,) = csv.DictReader((tmp_path / "res" / "bench.csv").read_text().splitlines())
    assert row["artifact"] == "ssd-tflite-int8" and row["precision"] == "int8" and row["p50_ms"] == "899.281"
    assert row["top1"] == "91.2" and row["delta_student"] == "-0.4" and "parity check" in row["note"]
    r = subprocess.run([sys.executable, "-m", "kd2edge", "bench", "--import", str(RISCV), "--out",
                        str(tmp_path / "res"), "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    (imported,) = json.loads(r.stdout)
    assert imported["profile"]["by_op"][0]["op"] == "CONV_2D"  # the op profile travels in the JSON
    saved = list(csv.DictReader((tmp_path / "res" / "bench.csv").read_text().splitlines()))
    assert saved[-1]["profile_top"].startswith("CONV_2D 89.9%") and "profile" not in saved[-1]
    r = subprocess.run([sys.executable, "-m", "kd2edge", "bench", "--import", str(tmp_path / "nope.log"), "--out",
                        str(tmp_path / "res")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "log not found" in r.stdout
