"""`kd2edge export --int8 --keep-float first|last`: the named layers of the int8 ONNX / TFLite artifacts stay
float (checked in the saved graphs), meta.json says which, and bad combinations are one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

R20_LAYERS = ["normalize", "net.conv1", "net.linear"]


def test_keep_float_bad_input_one_line(teacher_path, monkeypatch, capsys):
    """Checked before anything is loaded: needs int8, an onnx/tflite target, and PTQ."""
    from test_cli_errors import one_line_error

    ckpt = teacher_path("resnet20")
    for args, expect in ((["-t", "onnx", "--keep-float", "first"], "add --int8"),
                         (["-t", "coreml", "--int8", "--keep-float", "last"], "not coreml"),
                         (["-t", "onnx", "--int8", "--keep-float", "last", "--qat-epochs", "1"], "drop --qat-epochs")):
        text = one_line_error(monkeypatch, capsys, "export", ckpt, "--arch", "resnet20", *args)
        assert expect in text, text


def test_layers_found_in_execution_order():
    from kd2edge.export.float_layers import check, module_paths
    from kd2edge.zoo import create_model

    assert check(["last", "first", "last"]) == ["first", "last"]
    assert module_paths(create_model("resnet20"), ["first", "last"]) == R20_LAYERS
    assert module_paths(create_model("mobilenetv2"), ["last"]) == ["net.classifier"]
    assert module_paths(create_model("mobilenetv2"), ["first"]) == ["normalize", "net.features.0.0"]


def _float_consumers(proto, weight):
    """op types of the nodes that read initializer `weight` directly (float) or through DequantizeLinear (int8)."""
    deq = {n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear" and weight in n.input}
    direct = [n.op_type for n in proto.graph.node if weight in n.input and n.op_type != "QuantizeLinear"]
    return direct, deq


@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_keep_float_exports_float_layers(target, teacher_path, cifar10_dir, tmp_path):
    from kd2edge.export import export

    rows = export(str(teacher_path("resnet20")), [target], arch="resnet20", out=tmp_path, precisions=["int8"],
                  calib_images=32, eval_images=100, data_dir=cifar10_dir, keep_float=["first", "last"],
                  progress=False, command="pytest")
    assert rows[0]["status"] == "ok", rows[0]["reason"]
    assert rows[0]["agreement"] >= 95, rows[0]
    folder = Path(rows[0]["path"])
    q = json.loads((folder / "meta.json").read_text())["quantization"]
    assert q["method"] == "PTQ" and q["float_layers"]["keep"] == ["first", "last"]
    assert q["float_layers"]["layers"] == R20_LAYERS
    if target == "onnx":
        import onnx

        proto = onnx.load(str(folder / "model.onnx"))
        for layer, op in (("net.conv1", "Conv"), ("net.linear", "Gemm")):
            direct, deq = _float_consumers(proto, f"{layer}.weight")
            assert op in direct and not deq, (layer, direct, deq)  # float weight straight into the op
        inner = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"
                 and n.input[0].startswith("net.layer2.0.conv1.weight")]
        assert inner, "the layers in between stay int8"
    else:
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(folder / "model.tflite"))
        # first and last kept float: float pixels in, float logits out; int8 convolutions in between
        assert it.get_input_details()[0]["dtype"] == np.float32 and it.get_output_details()[0]["dtype"] == np.float32
        kinds = {(d["name"], str(d["dtype"])) for d in it.get_tensor_details()}
        assert any("int8" in k for _, k in kinds)
