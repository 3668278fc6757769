"""KD-aware QAT (`kd2edge export --int8 --qat-epochs N`): flags checked up front with one-line errors; a real
(tiny) QAT run of the shared resnet20 against the shared resnet56 exports verified ONNX and TFLite int8
artifacts whose meta.json says how they were quantized."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
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
    # ONNX: weights re-rounded to 7 bits where this CPU's onnxruntime kernels could saturate (x86 without VNNI);
    # re-rounding is idempotent and leaves the predictions nearly as they were
    import onnx
    import onnxruntime as ort

    from kd2edge.onnx_graph import weights_to_7bit
    from kd2edge.runtimes.ort import saturation_free

    onnx_dir = Path(next(r["path"] for r in rows if r["target"] == "onnx"))
    assert json.loads((onnx_dir / "meta.json").read_text())["quantization"]["reduce_range"] == (not saturation_free())
    model = onnx.load(str(onnx_dir / "model.onnx"))
    assert _widest_weight(model.graph) <= 64 if not saturation_free() else 64 < _widest_weight(model.graph) <= 128
    seven = onnx.ModelProto()
    seven.CopyFrom(model)
    assert weights_to_7bit(seven) >= 19 and _widest_weight(seven.graph) <= 64  # resnet20: 19 convolutions
    x = np.load(onnx_dir / "eval.npz")["x"][:100].astype(np.float32)
    sessions = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]) for m in (model, seven)]
    logits = [sess.run(None, {"pixels": x})[0] for sess in sessions]
    assert (logits[0].argmax(1) == logits[1].argmax(1)).mean() >= 0.9


def _widest_weight(g) -> int:
    """The largest |q| of the graph's quantized convolution weights (float constants read by QuantizeLinear)."""
    from kd2edge.onnx_graph import _constants_and_readers

    consts, _ = _constants_and_readers(g)
    return max(int(np.abs(np.round(consts[n.input[0]] / consts[n.input[1]].reshape(-1, 1, 1, 1))).max())
               for n in g.node if n.op_type == "QuantizeLinear" and consts.get(n.input[0]) is not None
               and consts[n.input[0]].ndim == 4)
