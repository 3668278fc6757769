"""KD-aware QAT (`kd2edge export --int8 --qat-epochs N`): flags checked up front with one-line errors; a real
(tiny) QAT run of the shared resnet20 against the shared resnet56 exports verified ONNX and TFLite int8
artifacts whose meta.json says how they were quantized."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")


def test_qat_bad_input_one_line(teacher_path, monkeypatch, capsys):
    """QAT flags are checked before anything is loaded or trained."""
    from kd2edge import cli

    ckpt = teacher_path("resnet20")
    for args, expect in ((["-t", "tflite", "--int8", "--qat-epochs", "-1"], "--qat-epochs must be > 0"),
                         (["-t", "onnx", "--qat-epochs", "1"], "add --int8"),
                         (["-t", "coreml", "--int8", "--qat-epochs", "1"], "not coreml")):
        monkeypatch.setattr(sys, "argv", ["kd2edge", "export", str(ckpt), "--arch", "resnet20", *args])
        with pytest.raises(SystemExit) as e:
            cli.main()
        out = capsys.readouterr()
        text = (out.out + out.err).strip()
        assert e.value.code == 1 and len(text.splitlines()) == 1 and text.startswith("error: "), text
        assert expect in text, text



def test_qat_exports_verified_int8(teacher_path, cifar10_dir, tmp_path):
    from kd2edge.export import export

    rows = export(str(teacher_path("resnet20")), ["onnx", "tflite"], arch="resnet20", out=tmp_path,
                  precisions=["int8"], calib_images=32, eval_images=100, data_dir=cifar10_dir,
                  teacher=f"resnet56:{teacher_path('resnet56')}", qat_epochs=0.003, progress=False, command="pytest")
    assert [r["status"] for r in rows] == ["ok", "ok"], [r["reason"] for r in rows]
    for r in rows:
        assert r["agreement"] >= 95 and abs(r["drop"]) <= 3, r
        q = json.loads((Path(r["path"]) / "meta.json").read_text())["quantization"]
        assert q["method"] == "QAT" and q["qat"]["epochs"] == 0.003 and q["qat"]["steps"] >= 1
        assert q["qat"]["teacher"]["arch"] == "resnet56" and len(q["qat"]["teacher"]["sha256"]) == 64
        assert q["calibration"]["source"] == "cifar10 train"
