"""`kd2edge distill` on the command line: YAML config, flags overriding it, one-line errors."""
import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def kd2edge(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "kd2edge", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_bad_inputs_are_one_line_errors(tmp_path):
    p = kd2edge("distill", "--method", "kd", "--student", "resnet8")
    assert p.returncode == 1 and "method 'kd' needs a teacher" in p.stdout and "Traceback" not in p.stderr
    p = kd2edge("distill", "--method", "fitnet")
    assert p.returncode == 2 and "'fitnet' is not one of 'ce', 'kd', 'dkd', 'hybrid'" in p.stdout + p.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: ce\nepoch: 3\n")
    p = kd2edge("distill", "--config", str(bad))
    assert p.returncode == 1 and "unknown distill config key(s): epoch" in p.stdout
    p = kd2edge("distill", "--teacher", str(tmp_path / "missing.th"), "--teacher-arch", "resnet56",
                "--limit-train", "64", "--out", str(tmp_path / "x"))
    assert p.returncode == 1 and "file not found" in p.stdout and "Traceback" not in p.stderr


def test_yaml_config_with_flag_override(tmp_path, cifar10_dir):
    cfg = {"method": "kd", "student": "resnet8", "student_kwargs": {"width": 8}, "epochs": 3, "limit_train": 256,
           "limit_val": 200, "batch_size": 128, "latency": False, "progress": False, "data_dir": str(cifar10_dir)}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    p = kd2edge("distill", "--config", str(tmp_path / "c.yaml"), "--method", "ce", "--epochs", "1",
                "--set", "label_smoothing=0.1", "--set", "cutout=8", "--set", "epochs=2",
                "--set", "alpha={kind: linear, start: 1, end: 0}", "--out", str(tmp_path / "run"), "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(p.stdout[p.stdout.index("{"):])
    resolved = json.loads((Path(r["run_dir"]) / "config.json").read_text())
    assert resolved["method"] == "ce" and resolved["student_kwargs"] == {"width": 8}
    assert resolved["epochs"] == 1  # a flag overrides --set, which overrides the file
    assert resolved["label_smoothing"] == 0.1 and resolved["cutout"] == 8
    assert resolved["alpha"] == {"kind": "linear", "start": 1, "end": 0}
    p = kd2edge("distill", "--set", "epoch=3", "--method", "ce")
    assert p.returncode == 1 and "unknown distill config key(s): epoch" in p.stdout
