"""`kd2edge bench --protocol mlperf`, `--sustained`, `--profile`, the fingerprint in every row, and the one-line
error where a runtime cannot be imported: real artifacts (tests/conftest.py bench_artifacts), short durations."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from kd2edge import Kd2EdgeError
from kd2edge.bench import bench
from kd2edge.bench import sensors
from kd2edge.bench.protocols import PROTOCOLS, accuracy_gate, get_protocol, timing_budget
from kd2edge.bench.sustained import DRIFT_LIMIT, drift_columns
from kd2edge.cli import ProtocolChoice

FINGERPRINT = ("device_id", "cpu", "arch", "cores", "isa", "os", "python", "governor", "runtimes")


def _cli(*args, code: str = ""):
    """`kd2edge bench ARGS` in a fresh interpreter, after `code` (e.g. an import blocker)."""
    script = code + "\nimport sys\nfrom kd2edge.cli import main\nsys.argv = ['kd2edge', 'bench', *sys.argv[1:]]\nmain()\n"
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def _one_error_line(r) -> str:
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), r.stdout + r.stderr
    return lines[0]


# ---- registry, budget, gate ------------------------------------------------------------------------------------

def test_protocol_registry_is_the_cli_choice():
    assert [p.value for p in ProtocolChoice] == list(PROTOCOLS) and "mlperf" in PROTOCOLS
    mlperf = get_protocol("mlperf")
    assert (mlperf["min_queries"], mlperf["min_seconds"], mlperf["headline"], mlperf["accuracy_gate"]) == \
        (1024, 60.0, "p90_ms", 0.99)
    assert timing_budget(mlperf, None, None) == {"runs": 1024, "seconds": 60.0, "max_seconds": None}
    assert timing_budget(mlperf, None, None, 10, 0.5) == {"runs": 10, "seconds": 0.5, "max_seconds": None}
    with pytest.raises(Kd2EdgeError, match="unknown bench protocol 'mlpref'; valid: default, mlperf"):
        get_protocol("mlpref")
    with pytest.raises(Kd2EdgeError, match="--runs/--seconds do not apply to --protocol mlperf"):
        timing_budget(mlperf, 100, None)
    with pytest.raises(Kd2EdgeError, match="use --runs/--seconds with the default protocol"):
        timing_budget(get_protocol("default"), None, None, 10)


def test_accuracy_gate_on_known_numbers():
    g = accuracy_gate(0.99, {"top1": 90.0, "student_top1": 91.0})
    assert g["gate_top1_min"] == pytest.approx(90.09)
    assert accuracy_gate(0.99, {"top1": 90.09, "student_top1": 91.0})["gate"] == "pass"
    assert accuracy_gate(0.99, {"top1": 90.08, "student_top1": 91.0})["gate"] == "fail"
    assert accuracy_gate(0.99, {"top1": 90.0})["gate"] == "n/a" and accuracy_gate(None, {"top1": 1}) == {}


def test_drift_and_throttling_on_known_windows():
    def w(p50, temp=None):
        return {"p50_ms": p50, "p90_ms": p50 * 1.2, "temp_c": temp, "freq_mhz": None}

    steady = drift_columns([w(1.0, 50), w(1.05), w(1.08, 61)])
    assert steady["drift_pct"] == pytest.approx(8.0) and steady["throttled"] == "no"
    assert steady["temp_c_first"] == 50 and steady["temp_c_last"] == 61
    hot = drift_columns([w(1.0), w(1.3), w(1.0 + DRIFT_LIMIT + 0.01)])
    assert hot["throttled"] == "yes" and hot["last_p90_ms"] == pytest.approx(1.332)
    assert drift_columns([w(1.0)])["throttled"] is None  # one window: nothing to compare


def test_sensors_read_sysfs(tmp_path):
    for i, (kind, temp) in enumerate([("acpitz", "41000"), ("x86_pkg_temp", "57500"), ("iwlwifi", "bad")]):
        (tmp_path / f"thermal_zone{i}").mkdir()
        (tmp_path / f"thermal_zone{i}" / "type").write_text(kind + "\n")
        (tmp_path / f"thermal_zone{i}" / "temp").write_text(temp + "\n")
    assert sensors.temperature_c(str(tmp_path / "thermal_zone*")) == 57.5
    for i, (khz, gov) in enumerate([("1800000", "ondemand"), ("600000", "ondemand")]):
        d = tmp_path / f"cpu{i}" / "cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_cur_freq").write_text(khz)
        (d / "scaling_governor").write_text(gov)
    assert sensors.frequency_mhz(str(tmp_path / "cpu[0-9]*/cpufreq")) == 1200.0
    assert sensors.governor(str(tmp_path / "cpu[0-9]*/cpufreq")) == "ondemand"
    assert sensors.temperature_c(str(tmp_path / "none*")) is None and sensors.frequency_mhz(str(tmp_path / "x")) is None


# ---- bad values: one error line ----------------------------------------------------------------------------------

def test_bad_protocol_and_sustained_values_are_one_line(bench_artifacts, tmp_path):
    art = bench_artifacts["tflite-int8"]
    assert "unknown bench protocol 'nope'; valid: default, mlperf" in _one_error_line(
        _cli(art, "--protocol", "nope", "--out", tmp_path))
    for bad in ("0", "-2"):
        assert "--sustained must be > 0 minutes" in _one_error_line(_cli(art, "--sustained", bad, "--out", tmp_path))
    assert "--runs/--seconds do not apply" in _one_error_line(
        _cli(art, "--protocol", "mlperf", "--runs", 5, "--out", tmp_path))
    assert "leave out --runs/--seconds/--protocol" in _one_error_line(
        _cli(art, "--sustained", 0.1, "--protocol", "mlperf", "--out", tmp_path))
    assert not (tmp_path / "bench.csv").exists()


# ---- real artifacts ----------------------------------------------------------------------------------------------

def test_mlperf_protocol_with_profile_on_real_artifacts(bench_artifacts, tmp_path):
    arts = [bench_artifacts["onnx-int8"], bench_artifacts["tflite-int8"]]
    rows = bench(arts, threads=1, warmup=3, protocol="mlperf", min_queries=80, min_seconds=0.5, profile=True,
                 out=tmp_path, progress=False)
    for r in rows:
        assert r["protocol"] == "mlperf" and r["runs"] >= 80 and r["duration_s"] >= 0.5 and r["queries_ok"]
        assert r["headline"] == "p90" and r["headline_ms"] == r["p90_ms"] and r["warmup"] == 3
        assert r["gate_top1_min"] == pytest.approx(0.99 * r["student_top1"])
        assert r["gate"] == ("pass" if r["top1"] >= 0.99 * r["student_top1"] else "fail")
        assert all(r[k] not in (None, "") for k in FINGERPRINT), {k: r.get(k) for k in FINGERPRINT}
        assert "onnxruntime" in r["runtimes"] and "numpy" in r["runtimes"]
    onnx, tflite = rows
    prof = onnx["profile"]
    assert prof["runs"] == 200 and sum(o["pct"] for o in prof["by_op"]) == pytest.approx(100)
    assert [o["ms_per_run"] for o in prof["by_op"]] == sorted((o["ms_per_run"] for o in prof["by_op"]), reverse=True)
    assert any("Conv" in o["op"] for o in prof["by_op"][:3])  # a ResNet spends its time in convolutions
    assert sum(o["nodes"] for o in prof["by_op"] if "Conv" in o["op"]) >= 19 and len(prof["by_node"]) == 10
    assert onnx["profile_top"].startswith(prof["by_op"][0]["op"])
    assert "no per-operator profile" in tflite["profile"]["missing"]
    assert "--enable_op_profiling=true" in tflite["profile_top"]
    saved = list(csv.DictReader((tmp_path / "bench.csv").read_text().splitlines()))
    assert [s["protocol"] for s in saved] == ["mlperf", "mlperf"] and saved[0]["gate"] in ("pass", "fail")
    assert float(saved[0]["duration_s"]) >= 0.5 and saved[0]["headline"] == "p90" and "profile" not in saved[0]
    assert all(s[k] for s in saved for k in FINGERPRINT)
    (report,) = tmp_path.glob("bench-*.json")
    results = json.loads(report.read_text())["results"]
    assert results[0]["profile"]["by_op"] == prof["by_op"] and results[0]["governor"] == onnx["governor"]


def test_sustained_windows_drift_and_plot(bench_artifacts, tmp_path):
    rows = bench([bench_artifacts["tflite-int8"]], threads=1, warmup=2, sustained=0.05, out=tmp_path,
                 progress=False)
    (r,) = rows
    windows = r["windows"]
    assert len(windows) == 3 and r["window_s"] == pytest.approx(1.0) and r["duration_s"] >= 3.0  # 3 s: 1 s windows
    assert sum(w["runs"] for w in windows) == r["runs"] and all(w["p50_ms"] <= w["p90_ms"] for w in windows)
    assert r["drift_pct"] == pytest.approx((windows[-1]["p50_ms"] / windows[0]["p50_ms"] - 1) * 100)
    assert r["throttled"] == ("yes" if r["drift_pct"] > 10 else "no")
    exposed = sensors.temperature_c() is not None
    assert (windows[0]["temp_c"] is not None) == exposed
    assert exposed or "CPU temperature not exposed by this OS" in r["note"]
    assert Path(r["plot"]).stat().st_size > 1000 and Path(r["plot"]).parent == tmp_path
    (saved,) = csv.DictReader((tmp_path / "bench.csv").read_text().splitlines())
    assert saved["throttled"] == r["throttled"] and "windows" not in saved and saved["sustained_min"] == "0.05"
    (report,) = tmp_path.glob("bench-*.json")
    assert len(json.loads(report.read_text())["results"][0]["windows"]) == 3


BLOCK = textwrap.dedent('''
    import importlib.abc, platform, sys
    BLOCKED = set(sys.argv.pop(1).split(","))
    if sys.argv[1] == "--machine":  # the platform this bench pretends to run on
        platform.machine = (lambda m: lambda: m)(sys.argv[2])
        del sys.argv[1:3]

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, Block())
''')


def test_sustained_without_matplotlib_skips_the_plot_with_a_note(bench_artifacts, tmp_path):
    r = _cli("matplotlib", bench_artifacts["tflite-int8"], "--threads", 1, "--sustained", 0.02, "--window", 0.6,
             "--warmup", 1, "--out", tmp_path, code=BLOCK)
    assert r.returncode == 0, r.stdout + r.stderr
    out = " ".join(r.stdout.split())
    assert "sustained plot skipped: matplotlib is not installed (pip install 'kd2edge[plot]')" in out
    assert "drift first -> last window p50" in out and not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize("machine", ["x86_64", "armv7l"])
def test_missing_runtime_is_one_error_line(bench_artifacts, tmp_path, machine):
    blocked = "onnxruntime,ai_edge_litert,tflite_runtime"
    for kind, package in (("onnx-int8", "onnxruntime"), ("tflite-int8", "ai-edge-litert")):
        line = _one_error_line(_cli(blocked, "--machine", machine, bench_artifacts[kind], "--out", tmp_path,
                                    code=BLOCK))
        if machine == "armv7l":
            assert f"{package} cannot be installed on 32-bit Arm (armv7l" in line and "64-bit OS" in line
        else:
            assert f"{package} is not installed" in line and f"pip install {package}" in line
        assert "kd2edge[device]" in line
    both = _one_error_line(_cli(blocked, "--machine", machine, bench_artifacts["onnx-int8"],
                                bench_artifacts["tflite-int8"], "--out", tmp_path, code=BLOCK))
    assert ("no artifact could run here" in both) == (machine == "armv7l")
    assert not (tmp_path / "bench.csv").exists()


def test_sustained_plot_with_temperature_and_frequency(tmp_path):
    from kd2edge.plots import sustained_png

    windows = [{"start_min": i, "end_min": i + 1, "runs": 100, "p50_ms": 1.0 + 0.2 * i, "p90_ms": 1.5 + 0.2 * i,
                "temp_c": 55.0 + 8 * i, "freq_mhz": 2400.0 - 300 * i} for i in range(3)]
    png = sustained_png(windows, tmp_path / "s.png", title="a Pi 5 under load")
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
