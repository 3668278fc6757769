"""The Python API (`from kd2edge import distill, export, bench, run, evaluate`) on real CIFAR-10 and the shared
teachers, tiny budgets: each returns what its command's --json prints; exports keep converter output off the
terminal (export.log)."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kd2edge import bench, distill, evaluate, export, run


@pytest.fixture(scope="module")
def student(tmp_path_factory, cifar10_dir, teacher_path):
    out = tmp_path_factory.mktemp("api") / "student"
    return distill({"student": "resnet8", "student_kwargs": {"width": 8}}, sets=["batch_size=128"],
                   teacher=str(teacher_path("resnet20")), teacher_arch="resnet20", epochs=1, limit_train=256,
                   data_dir=str(cifar10_dir), out=out)


def test_import_kd2edge_stays_torch_free():
    code = "import kd2edge, sys; kd2edge.bench; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_distill(student):
    assert Path(student["checkpoint"]).is_file()
    assert 0 < student["metrics"]["last"]["top1"] <= 100 and student["metrics"]["student"]["params"] > 0


def test_evaluate_matches_cli_json(tmp_path, cifar10_dir, teacher_path):
    from typer.testing import CliRunner

    from kd2edge.cli import app

    args = dict(arch="resnet20", data_dir=cifar10_dir, limit=200, latency=False)
    r = evaluate(teacher_path("resnet20"), out=tmp_path / "api", **args)
    res = CliRunner().invoke(app, ["eval", str(teacher_path("resnet20")), "--arch", "resnet20", "--data-dir",
                                   str(cifar10_dir), "--limit", "200", "--no-latency", "--out", str(tmp_path / "cli"),
                                   "--json"])
    assert res.exit_code == 0, res.output
    cli = json.loads(res.stdout)  # stderr has the input-contract line
    assert set(r) == set(cli) and r["top1"] == cli["top1"] and r["n"] == 200
    assert (tmp_path / "api" / "eval.json").is_file()


NOISE = [re.compile(p, re.M) for p in (
    r"Running MIL", r"\d+%\|", r"it/s\]",  # coremltools MIL passes (tqdm bars)
    r"^[IWEF]\d{4} ", r"absl::", r"INFO: ",  # absl / TFLite C++ logging
    r"Warning", r"training mode")]  # torch and litert-torch warnings


def test_export_writes_converter_output_to_export_log(student, tmp_path, capfd, cifar10_dir):
    rows = export(student["checkpoint"], "tflite", precisions=["int8"], out=tmp_path, eval_images=100,
                  max_drop=100, data_dir=cifar10_dir)
    rows += export(student["checkpoint"], "coreml", precisions=["fp32"], out=tmp_path, eval_images=100,
                   data_dir=cifar10_dir)
    err = capfd.readouterr().err
    assert [r["status"] for r in rows] == ["ok", "ok"], rows
    noise = [p.pattern for p in NOISE if p.search(err)]
    assert not noise, f"converter output reached the terminal ({noise}):\n{err[-2000:]}"
    logs = {r["target"]: (Path(r["path"]) / "export.log").read_text() for r in rows}
    assert "Running MIL" in logs["coreml"] or "%|" in logs["coreml"]  # it was captured, not lost
    assert "training mode" not in logs["tflite"]  # the int8 graph is marked eval (kd2edge.export.tflite)


def test_bench(bench_artifacts, tmp_path):
    rows = bench(bench_artifacts["onnx-int8"], threads=1, runs=3, warmup=0, out=tmp_path)
    (row,) = rows
    assert row["status"] == "ok" and row["p50_ms"] > 0 and row["agree_teacher"] is not None
    assert (tmp_path / "bench.csv").is_file()


def test_run_from_a_dict(tmp_path, cifar10_dir, teacher_path):
    report = run({"name": "api", "teacher": str(teacher_path("resnet20")), "teacher_arch": "resnet20",
                  "data_dir": str(cifar10_dir), "student": "resnet8", "student_kwargs": {"width": 8},
                  "baseline": False, "distill": {"epochs": 1, "limit_train": 256, "batch_size": 128},
                  "export": {"targets": ["onnx"], "int8": False, "eval_images": 100, "teacher": False},
                  "bench": {"threads": [1], "runs": 3, "warmup": 1}, "report": {"max_latency_ms": 1000}},
                 out=tmp_path / "run")
    assert report["verdict"]["rows"][0]["ship"] == "student-onnx"
    assert json.loads((tmp_path / "run" / "report.json").read_text())["verdict"] == report["verdict"]


def test_bench_cli_table_fits_100_columns(bench_artifacts, tmp_path):
    """Not a terminal: the table is laid out at 100 columns, no line longer, no header or name cut short."""
    from typer.testing import CliRunner

    from kd2edge.cli import app

    res = CliRunner().invoke(app, ["bench", *map(str, bench_artifacts.values()), "--threads", "1", "--runs", "3",
                                   "--warmup", "0", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "Δ vs student / teacher:" in res.output  # the legend under the table
    assert max(len(line) for line in res.output.splitlines()) <= 100, res.output
    assert "…" not in res.output, res.output
