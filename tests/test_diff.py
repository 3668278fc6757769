"""`kd2edge diff`: per-layer SQNR of real artifacts (resnet20 exported to ONNX and TFLite, fp32 and int8,
the session's bench_artifacts) against their PyTorch checkpoint; a copy of the ONNX int8 artifact with ONE
layer's weight scale corrupted must be caught at that layer."""
from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from kd2edge import Kd2EdgeError  # noqa: E402
from kd2edge.export.diff import diff  # noqa: E402

N = 16


def test_corrupted_scale_is_named(bench_artifacts, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(bench_artifacts["onnx-int8"], broken)
    model = broken / "model.onnx"
    proto = onnx.load(str(model))
    hit = [t for t in proto.graph.initializer if t.name == "net.layer2.0.conv2.weight_scale"]
    assert len(hit) == 1, [t.name for t in proto.graph.initializer if "scale" in t.name][:10]
    scale = onnx.numpy_helper.to_array(hit[0]) * 0.25  # that conv's output shrinks 4x: -2.5 dB, no clipping
    hit[0].CopyFrom(onnx.numpy_helper.from_array(scale.astype(np.float32), hit[0].name))
    onnx.save_model(proto, str(model))

    r = diff(broken, images=N, out=tmp_path / "d")
    first = r["first_below"]
    assert first is not None and first["pytorch"].startswith(("layer2.0.bn2 ", "layer2.0.conv2 ")), first
    assert first["sqnr_db"] < 5
    assert all(x["sqnr_db"] >= r["threshold_db"] for x in r["layers"][:first["depth"]])
    saved = json.loads((tmp_path / "d" / "diff.json").read_text())
    assert saved["first_below"]["pytorch"] == first["pytorch"]
    assert (tmp_path / "d" / "diff.png").stat().st_size > 1000

    healthy = diff(bench_artifacts["onnx-int8"], images=N, out=tmp_path / "h")
    assert healthy["first_below"] is None and healthy["unmatched"] == 0
    d = first["depth"]
    assert [x["pytorch"] for x in healthy["layers"][:d]] == [x["pytorch"] for x in r["layers"][:d]]


@pytest.mark.parametrize("name", ["onnx", "tflite", "tflite-int8"])
def test_layers_match_pytorch(bench_artifacts, tmp_path, name):
    r = diff(bench_artifacts[name], images=N, out=tmp_path)
    names = [x["pytorch"] for x in r["layers"]]
    # every conv (BN folded), residual add and the head is matched, in execution order
    for layer in ("layer1.0.bn2 (batch_norm)", "layer2.0.shortcut (pad)", "layer3.2.bn2 (batch_norm)",
                  "linear (linear)"):
        assert layer in names, (layer, names)
    assert names.index("layer1.0.bn2 (batch_norm)") < names.index("layer3.2.bn2 (batch_norm)")
    assert names[-1] == "linear (linear)"
    assert r["first_below"] is None, r["first_below"]
    if r["precision"] == "fp32":
        assert r["parity"] and min(x["sqnr_db"] for x in r["layers"]) > 100
    else:
        assert 20 < min(x["sqnr_db"] for x in r["layers"]) < 45


def test_bad_input_one_line(bench_artifacts, tmp_path, monkeypatch, capsys):
    from kd2edge import cli

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["kd2edge", "diff", *map(str, args)])
        with pytest.raises(SystemExit) as e:
            cli.main()
        out = capsys.readouterr()
        text = (out.out + out.err).strip()
        assert e.value.code == 1 and len(text.splitlines()) == 1 and text.startswith("error: "), text
        return text

    (tmp_path / "empty").mkdir()
    assert "has no meta.json" in run(tmp_path / "empty")
    moved = tmp_path / "moved"
    shutil.copytree(bench_artifacts["onnx"], moved)
    meta = json.loads((moved / "meta.json").read_text())
    meta["source"]["checkpoint"] = str(tmp_path / "gone.th")
    (moved / "meta.json").write_text(json.dumps(meta))
    text = run(moved)
    assert "checkpoint" in text and "gone.th" in text
    with pytest.raises(Kd2EdgeError, match="--images"):
        diff(bench_artifacts["onnx"], images=0)

