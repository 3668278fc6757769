"""`kd2edge bench`: maths on known arrays, device fingerprint, reports, errors, and real artifacts on real runtimes."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kd2edge import Kd2EdgeError
from kd2edge.artifact import TARGET_RUNTIME, read_folder
from kd2edge.bench import bench
from kd2edge.bench.fingerprint import fingerprint, parse_cpuinfo
from kd2edge.bench.reports import CSV_COLUMNS, csv_text, table_rows
from kd2edge.bench.stage import drift
from kd2edge.metrics import latency_stats
from kd2edge.runtimes import RUNTIMES, Session, load_session, older, version_tuple
from kd2edge.timing import time_runs

ROOT = Path(__file__).resolve().parents[1]


# ---- maths on known arrays -----------------------------------------------------------------------------------

def test_latency_percentiles_on_known_array():
    s = latency_stats(np.arange(1, 101) / 1000)  # 1..100 ms
    assert s["runs"] == 100 and s["min_ms"] == pytest.approx(1) and s["max_ms"] == pytest.approx(100)
    assert s["mean_ms"] == pytest.approx(50.5)
    assert s["p50_ms"] == pytest.approx(50.5) and s["p90_ms"] == pytest.approx(90.1)
    assert s["p99_ms"] == pytest.approx(99.01)
    assert s["std_ms"] == pytest.approx(np.sqrt((100 ** 2 - 1) / 12))
    one = latency_stats([0.002])
    assert one["p50_ms"] == one["p99_ms"] == pytest.approx(2.0) and one["std_ms"] == 0


def test_drift_on_known_arrays():
    y = np.array([0, 1, 2, 3])
    student = np.eye(4)[[0, 1, 2, 0]] * 2.0  # 3/4 right
    teacher = np.eye(4)[[0, 1, 2, 3]] * 1.0  # all right
    art = student.copy()
    art[1] = [0.0, 0.5, 1.5, 0.0]  # flips sample 1 to class 2; |diff| = 0, 1.5, 1.5, 0 on that row
    d = drift(art, y, student, teacher)
    assert d["n_eval"] == 4 and d["top1"] == 50.0
    assert d["student_top1"] == 75.0 and d["agree_student"] == 75.0 and d["delta_student"] == -25.0
    assert d["max_logit_diff"] == pytest.approx(1.5) and d["mean_logit_diff"] == pytest.approx(3.0 / 16)
    assert d["teacher_top1"] == 100.0 and d["agree_teacher"] == 50.0 and d["delta_teacher"] == -50.0
    assert d["sqnr_db"] == pytest.approx(10 * np.log10(4 * 4.0 / (1.5 ** 2 * 2)))
    assert set(drift(art, y)) == {"n_eval", "top1", "tied_top1"}  # no references, no drift fields
    assert d["tied_top1"] == 0 and drift(np.zeros((4, 4)), y)["tied_top1"] == 4  # every row a tie


def _session(dtype, run=lambda x: x, **kw):
    return Session("test", "0", 1, "x", [None, 2, 2, 3], np.dtype(dtype), "y", np.dtype(dtype), run, **kw)


def test_int8_quantization_of_inputs_and_outputs():
    px = np.array([0, 1, 128, 255], dtype=np.uint8).reshape(1, 1, 4, 1)
    q = _session(np.int8, input_quant=(1.0, -128)).prepare(px)
    assert q.dtype == np.int8 and q.ravel().tolist() == [-128, -127, 0, 127]
    q2 = _session(np.int8, input_quant=(2.0, 0)).prepare(px)  # round(x / 2), clipped to int8
    assert q2.ravel().tolist() == [0, 0, 64, 127]
    f = _session(np.float32).prepare(px)
    assert f.dtype == np.float32 and f.ravel().tolist() == [0, 1, 128, 255]
    nchw = _session(np.float32, layout="NCHW").prepare(np.zeros((2, 4, 5, 3), np.uint8))
    assert nchw.shape == (2, 3, 4, 5)
    out = _session(np.int8, output_quant=(0.5, -55)).logits(np.array([[-55, 0, 72]], dtype=np.int8))
    assert out.dtype == np.float32 and out.tolist() == [[0.0, 27.5, 63.5]]
    with pytest.raises(Kd2EdgeError, match="without quantization"):
        _session(np.int8, name="a").prepare(px)
    # predict: prepare -> run -> logits, a fixed batch padded and cut again
    s = _session(np.int8, run=lambda x: x.reshape(len(x), -1)[:, :3], input_quant=(1.0, 0), output_quant=(2.0, 1),
                 fixed_batch=4)
    x = np.arange(5 * 12, dtype=np.uint8).reshape(5, 2, 2, 3)
    expected = (np.clip(x.reshape(5, -1)[:, :3], -128, 127).astype(np.float32) - 1) * 2
    np.testing.assert_array_equal(s.predict(x), expected)


def test_meta_quantization_must_match_the_model(bench_artifacts):
    art = read_folder(bench_artifacts["tflite-int8"])
    meta, model = art["meta"], art["model_path"]
    own = load_session("litert", model)
    assert own.input_quant == (meta["quantization"]["input"]["scale"], meta["quantization"]["input"]["zero_point"])
    bad = {**meta, "quantization": {**meta["quantization"], "input": {**meta["quantization"]["input"],
                                                                      "zero_point": 3}}}
    with pytest.raises(Kd2EdgeError, match="differs from the model's"):
        load_session("litert", model, meta=bad)


def test_onnx_int8_with_8_bit_weights_is_flagged_on_a_cpu_where_it_can_saturate(bench_artifacts, monkeypatch):
    """An ONNX int8 artifact with 8-bit weights (exported on a VNNI or Arm machine) run on x86 without VNNI: the
    session carries a note saying so and what to do; 7-bit artifacts, fp32 ones and saturation-free CPUs get none."""
    from kd2edge.runtimes import ort

    art, fp32 = read_folder(bench_artifacts["onnx-int8"]), read_folder(bench_artifacts["onnx"])
    eight_bit = {**art["meta"], "quantization": {**art["meta"]["quantization"], "reduce_range": False}}
    seven_bit = {**art["meta"], "quantization": {**art["meta"]["quantization"], "reduce_range": True}}
    monkeypatch.setattr(ort, "saturation_free", lambda: False)
    notes = load_session("onnxruntime", art["model_path"], meta=eight_bit).notes
    assert len(notes) == 1 and "can saturate" in notes[0] and "kd2edge export -t onnx --int8" in notes[0], notes
    assert load_session("onnxruntime", art["model_path"], meta=seven_bit).notes == []
    assert load_session("onnxruntime", fp32["model_path"], meta=fp32["meta"]).notes == []
    monkeypatch.setattr(ort, "saturation_free", lambda: True)
    assert load_session("onnxruntime", art["model_path"], meta=eight_bit).notes == []


def test_time_runs_counts_and_budget():
    calls = []
    run = lambda x: calls.append(1)  # noqa: E731
    r = time_runs(run, np.zeros(1), runs=7, seconds=None, warmup=3)
    assert r["runs"] == 7 and len(calls) == 10
    import time

    slow = lambda x: time.sleep(0.002)  # noqa: E731
    r = time_runs(slow, np.zeros(1), runs=None, seconds=0.03, warmup=0)
    total = r["runs"] * r["mean_ms"]  # time spent inside the runs
    assert r["min_ms"] >= 2.0 and total >= 0.9 * 30 and total - r["max_ms"] < 30  # stopped right after 30 ms
    r = time_runs(slow, np.zeros(1), runs=3, seconds=0.001, warmup=0)
    assert r["runs"] >= 3  # both given: at least 3 runs and at least the time
    fast = time_runs(run, np.zeros(1), runs=None, seconds=None, warmup=0)
    assert fast["runs"] >= 50  # the default: >= 50 runs and >= 1 s, like benchmark_model


# ---- device fingerprint ------------------------------------------------------------------------------------------

PI5 = """processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\n\nRevision\t: d04170\nModel\t: Raspberry Pi 5 Model B Rev 1.0
"""
X86 = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz\nflags\t\t: fpu sse avx2 fma avx512f avx512_vnni amx_int8\n"


def test_parse_cpuinfo_arm_and_x86():
    arm = parse_cpuinfo(PI5)
    assert arm["isa"] == ["NEON", "NEON FP16", "NEON dotprod"] and "0xd0b" in arm["cpu"]
    x86 = parse_cpuinfo(X86)
    assert x86["cpu"].startswith("Intel(R) Xeon") and x86["isa"] == ["AVX2", "FMA", "AVX-512", "AVX-512 VNNI", "AMX-INT8"]


def test_fingerprint_of_this_machine():
    fp = fingerprint()
    assert fp["cores"] == os.cpu_count() and fp["python"] == ".".join(map(str, sys.version_info[:3]))
    assert fp["device_id"] == fingerprint()["device_id"] and fp["device_id"].startswith(fp["arch"])
    assert "onnxruntime" in fp["runtimes"] and "numpy" in fp["runtimes"]
    if Path("/proc/cpuinfo").exists():
        flags = Path("/proc/cpuinfo").read_text()
        assert fp["cpu"] and fp["cpu"] in flags
        assert ("AVX2" in fp["isa"]) == (" avx2" in flags)


# ---- reports -----------------------------------------------------------------------------------------------------

def test_csv_appends_rows_and_keeps_old_ones():
    first = csv_text([{"device_id": "a", "artifact": "x", "p50_ms": 1.23456789, "note": ""}])
    both = csv_text([{"device_id": "b", "artifact": "y", "p50_ms": None, "extra_col": 3}], first)
    rows = list(csv.DictReader(both.splitlines()))
    assert [r["device_id"] for r in rows] == ["a", "b"] and rows[0]["p50_ms"] == "1.23457"
    assert rows[1]["p50_ms"] == "" and rows[1]["extra_col"] == "3" and rows[0]["extra_col"] == ""
    assert list(rows[0])[:len(CSV_COLUMNS)] == CSV_COLUMNS
    headers, cells = table_rows([{"artifact": "x", "p50_ms": 0.5}])
    assert cells[0][headers.index("p50 (ms)")] == "0.500" and cells[0][headers.index("top-1 (%)")] == ""


def test_registries_agree():
    assert set(TARGET_RUNTIME.values()) == set(RUNTIMES)


# ---- errors ------------------------------------------------------------------------------------------------------

def _cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "kd2edge", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=300)


def test_folder_errors(tmp_path):
    with pytest.raises(Kd2EdgeError, match="artifact folder not found"):
        read_folder(tmp_path / "nope")
    with pytest.raises(Kd2EdgeError, match="has no meta.json"):
        read_folder(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"format": "kd2edge.artifact", "target": "onnx"}))
    with pytest.raises(Kd2EdgeError, match="lacks runtime, model_file, precision, input, output"):
        read_folder(tmp_path)
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(Kd2EdgeError, match="not valid JSON"):
        read_folder(tmp_path)
    r = _cli("bench", tmp_path, "--out", tmp_path / "res")
    assert r.returncode == 1 and "not valid JSON" in r.stdout and "Traceback" not in r.stdout + r.stderr
    r = _cli("bench")
    assert r.returncode == 1 and "no artifact folders given" in r.stdout


def test_coreml_elsewhere_says_macos_and_others_still_run(bench_artifacts, tmp_path):
    if sys.platform == "darwin":
        pytest.skip("CoreML runs here")
    with pytest.raises(Kd2EdgeError, match="run only on macOS"):
        load_session("coreml", tmp_path / "model.mlpackage")
    art = tmp_path / "student-coreml"
    art.mkdir()
    (art / "model.mlpackage").mkdir()
    meta = json.loads((bench_artifacts["onnx"] / "meta.json").read_text())
    meta.pop("sha256")  # the onnx folder's checksums do not describe this hand-made folder
    (art / "meta.json").write_text(json.dumps({**meta, "target": "coreml", "runtime": "coreml",
                                               "model_file": "model.mlpackage", "name": "student-coreml"}))
    r = _cli("bench", art, "--out", tmp_path / "res")
    assert r.returncode == 1 and "run only on macOS" in r.stdout
    rows = bench([art, bench_artifacts["onnx"]], threads=1, runs=5, warmup=0, out=tmp_path / "res", progress=False)
    assert [r["status"] for r in rows] == ["skipped", "ok"] and "macOS" in rows[0]["note"] and rows[0]["p50_ms"] is None
    saved = list(csv.DictReader((tmp_path / "res" / "bench.csv").read_text().splitlines()))
    assert [s["artifact"] for s in saved] == [rows[1]["artifact"]]  # skipped rows stay out of the CSV


@pytest.mark.parametrize("kind, blocked, named", [("onnx", ["onnxruntime"], "onnxruntime is not installed"),
                                                   ("tflite", ["ai_edge_litert", "tflite_runtime"], "pip install ai-edge-litert")])
def test_runtime_not_installed_names_the_package(bench_artifacts, tmp_path, kind, blocked, named):
    code = ("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in blocked)
            + "from kd2edge.cli import main\nmain()\n")
    r = subprocess.run([sys.executable, "-c", code, "bench", str(bench_artifacts[kind]), "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and named in r.stdout and "Traceback" not in r.stderr


def test_version_compare():
    assert version_tuple("1.18.1") == (1, 18, 1) and version_tuple("2.3.0rc1") == (2, 3, 0) and version_tuple("x") == ()
    assert older("1.17.3", "1.18") and older("1.4.0", "99.0") and older("2.13.0", "2.14")
    assert not older("1.18", "1.18.0") and not older("1.18.0+cu118", "1.18") and not older("1.31.1", "1.18")


def test_min_runtime_of_exported_files(bench_artifacts, tmp_path, monkeypatch):
    """The exporter's tables on real files: known IR/opset and ops -> the documented minimums; past the tables ->
    the runtime that verified the file (known to load it)."""
    import onnx
    import onnxruntime
    from importlib.metadata import version

    from kd2edge.export import onnx as onnx_target, tflite as tflite_target

    model = bench_artifacts["onnx-int8"] / "model.onnx"
    proto = onnx.load(str(model))
    assert proto.ir_version == 10 and onnx_target.min_runtime(model) == {"onnxruntime": "1.18"}
    proto.ir_version = 11  # as onnx 1.18 writes
    onnx.save_model(proto, str(tmp_path / "ir11.onnx"))
    assert onnx_target.min_runtime(tmp_path / "ir11.onnx") == {"onnxruntime": onnxruntime.__version__}
    tfl = bench_artifacts["tflite-int8"] / "model.tflite"
    ops = tflite_target.model_ops(tfl)
    assert {"CONV_2D", "FULLY_CONNECTED", "QUANTIZE"} <= set(ops) and all(v >= 1 for v in ops.values())
    assert tflite_target.min_runtime(tfl) == {"ai-edge-litert": "1.4.0", "tflite-runtime": "2.13.0"}
    monkeypatch.setitem(tflite_target.KNOWN_OPS, "CONV_2D", ops["CONV_2D"] - 1)  # a newer op version than known
    assert tflite_target.min_runtime(tfl) == {"ai-edge-litert": version("ai-edge-litert")}


def _installed(kind):
    """(package, version) the bench would run `kind` artifacts with here."""
    if kind.startswith("onnx"):
        import onnxruntime

        return "onnxruntime", onnxruntime.__version__
    from importlib.metadata import version

    return "ai-edge-litert", version("ai-edge-litert")


@pytest.mark.parametrize("kind, package", [("onnx-int8", "onnxruntime"), ("tflite-int8", "ai-edge-litert")])
def test_runtime_older_than_min_runtime_is_one_error_line(bench_artifacts, tmp_path, kind, package):
    """meta.json's min_runtime (not covered by the sha256 record, which holds the model file and eval.npz) edited
    to a future version: the real CLI ends in one error line with the fix, before measuring anything."""
    src = Path(bench_artifacts[kind])
    meta = json.loads((src / "meta.json").read_text())
    assert package in meta["min_runtime"] and not older(_installed(kind)[1], meta["min_runtime"][package])
    art = tmp_path / "needs-future"
    shutil.copytree(src, art)
    (art / "meta.json").write_text(json.dumps({**meta, "min_runtime": {**meta["min_runtime"], package: "99.0"}}))
    out = tmp_path / "res"
    r = _cli("bench", art, bench_artifacts["onnx"], "--runs", 2, "--warmup", 0, "--out", out, env={"COLUMNS": "300"})
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("error:")]
    assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert lines == [f"error: {meta['name']} needs {package} >= 99.0 (meta.json min_runtime), this device has "
                     f"{package} {_installed(kind)[1]}; fix: pip install '{package}>=99.0'"], r.stdout
    assert not out.exists()  # refused before any measurement
    with pytest.raises(Kd2EdgeError, match=r"needs .* >= 99\.0"):  # export verification's path too
        load_session(meta["runtime"], art / meta["model_file"], meta=json.loads((art / "meta.json").read_text()))
    old = tmp_path / "written-before-min-runtime"  # no key: loads as before
    shutil.copytree(src, old)
    (old / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "min_runtime"}))
    (row,) = bench([old], threads=1, runs=3, warmup=0, write=False, progress=False)
    assert row["status"] == "ok" and row["n_eval"] == 100
    (art / "meta.json").write_text(json.dumps({**meta, "min_runtime": "1.18"}))
    with pytest.raises(Kd2EdgeError, match="min_runtime must map packages to versions"):
        bench([art], threads=1, runs=3, warmup=0, write=False, progress=False)


def test_eval_bundle_that_does_not_fit(bench_artifacts, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(bench_artifacts["onnx"], art)
    ev = dict(np.load(art / "eval.npz"))
    np.savez(art / "eval.npz", **{**ev, "x": np.zeros((4, 28, 28, 3), np.uint8), "y": ev["y"][:4]})
    with pytest.raises(Kd2EdgeError, match=r"images are 28x28x3 \(HxWxC\) but the model expects"):
        bench([art], threads=1, runs=3, warmup=0, write=False, progress=False, verify=False)
    np.savez(art / "eval.npz", **{**ev, "student_logits": ev["student_logits"][:, :5]})
    with pytest.raises(Kd2EdgeError, match="student_logits has shape .* but the model outputs 10 classes"):
        bench([art], threads=1, runs=3, warmup=0, write=False, progress=False, verify=False)
    (art / "model.onnx").unlink()
    r = _cli("bench", art, "--out", tmp_path)
    assert r.returncode == 1 and "model.onnx but it is missing" in r.stdout


# ---- real artifacts on real runtimes ------------------------------------------------------------------------------

def test_bench_real_artifacts(bench_artifacts, tmp_path):
    names = ["onnx", "onnx-int8", "tflite", "tflite-int8"]
    assert set(names) <= set(bench_artifacts), f"export made only {sorted(bench_artifacts)}"
    rows = bench([bench_artifacts[n] for n in names], threads=[1, 2], runs=30, warmup=2, out=tmp_path,
                 progress=False)
    assert [(r["artifact"].split("-", 2)[2], r["threads"]) for r in rows] == [(n, t) for n in names for t in (1, 2)]
    for r in rows:
        assert r["runs"] == 30 and r["batch"] == 1 and 0 < r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["n_eval"] == 100 and r["peak_rss_mb"] > 10 and r["load_ms"] > 0 and r["first_ms"] > 0
        assert r["model_mb"] == pytest.approx(os.path.getsize(Path(r["path"]) / read_folder(r["path"])["meta"]
                                                              ["model_file"]) / 2 ** 20)
        assert r["student_top1"] > 85 and r["teacher_top1"] > 85 and r["device_id"] == fingerprint()["device_id"]
        if r["precision"] == "fp32":
            assert r["agree_student"] == 100 and r["max_logit_diff"] < 1e-3 and r["delta_student"] == 0
        else:
            assert r["agree_student"] >= 95 and abs(r["delta_student"]) <= 3 and r["max_logit_diff"] > 1e-3
        assert r["agree_teacher"] > 85 and r["delta_teacher"] == pytest.approx(r["top1"] - r["teacher_top1"])
    saved = list(csv.DictReader((tmp_path / "bench.csv").read_text().splitlines()))
    assert len(saved) == 8 and saved[0]["device_id"] == rows[0]["device_id"] and saved[0]["isa"] == rows[0]["isa"]
    (js,) = tmp_path.glob("bench-*.json")
    report = json.loads(js.read_text())
    assert report["format"] == "kd2edge.bench" and len(report["results"]) == 8 and report["device"]["cores"]
    assert (tmp_path / "bench.png").stat().st_size > 1000


def test_cli_bench_with_own_dataset_and_seconds(bench_artifacts, tmp_path, cifar10_test):
    ds = tmp_path / "mine.npz"
    np.savez(ds, x_test=cifar10_test.x[-40:], y_test=cifar10_test.y[-40:])
    r = _cli("bench", bench_artifacts["tflite-int8"], "--threads", 1, "--seconds", 0.3, "--warmup", 1,
             "--dataset", ds, "--out", tmp_path / "res", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    (row,) = json.loads(r.stdout)
    assert row["dataset_n"] == 40 and row["dataset_top1"] > 70 and row["runs"] > 10 and row["threads"] == 1
    from ai_edge_litert.interpreter import Interpreter

    signature = Interpreter(str(bench_artifacts["tflite"] / "model.tflite")).get_input_details()[0]["shape_signature"]
    r = _cli("bench", bench_artifacts["tflite"], "--batch", 4, "--runs", 5, "--out", tmp_path / "res", "--json")
    if signature[0] == -1:  # dynamic batch: timed at batch 4
        assert r.returncode == 0 and json.loads(r.stdout)[0]["batch"] == 4
    else:  # a fixed-batch model must refuse (resizing it silently gives wrong logits)
        assert r.returncode == 1 and f"has a fixed batch of {signature[0]}" in r.stdout
