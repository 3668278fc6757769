"""`kd2edge export --int8 --rounding adaround`: learned rounding puts every weight on the converter's int8 grid,
lowers a layer's output error against round-to-nearest, the converters keep the learned integers exactly, and
bad combinations are one-line errors. Real data (shared resnet20, CIFAR-10 training images); few iterations."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")


def test_rounding_bad_input_one_line(teacher_path, monkeypatch, capsys):
    """Checked before anything is loaded: needs int8, an onnx/tflite target, and PTQ."""
    from test_cli_errors import one_line_error

    ckpt = teacher_path("resnet20")
    for args, expect in ((["-t", "onnx", "--rounding", "adaround"], "add --int8"),
                         (["-t", "coreml", "--int8", "--rounding", "adaround"], "not coreml"),
                         (["-t", "tflite", "--int8", "--rounding", "adaround", "--qat-epochs", "1"], "drop --qat-epochs")):
        text = one_line_error(monkeypatch, capsys, "export", ckpt, "--arch", "resnet20", *args)
        assert expect in text, text


@pytest.fixture(scope="module")
def r20(teacher_path, cifar10_dir):
    from kd2edge.checkpoint import load_model
    from kd2edge.data import load_dataset

    model, info = load_model(teacher_path("resnet20"), "resnet20")
    train = load_dataset("cifar10", "train", cifar10_dir)
    calib = train.x[np.random.default_rng(0).choice(len(train), 64, replace=False)]
    return model, info["preprocessing"], calib


def test_learned_rounding_beats_nearest_on_a_layer(r20):
    """The first convolution of resnet20 on real (normalized) images: the learned rounding's output error is
    below round-to-nearest's, and its weights are on the grid with each channel's largest weight kept."""
    import torch

    from kd2edge.export.rounding import _learn, grid

    model, prep, calib = r20
    conv = model.conv1
    x = (torch.as_tensor(calib).permute(0, 3, 1, 2).float() / 255 - torch.tensor(prep["mean"]).view(1, 3, 1, 1)) \
        / torch.tensor(prep["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        target = conv(x)
    w = conv.weight.detach().clone()
    scale, ws = grid(w, 127)
    learned, frac = _learn(conv, x, target, 127, seed=0)

    def err(weight):
        with torch.no_grad():
            return float(((torch.nn.functional.conv2d(x, weight, None, 1, 1) - target) ** 2).sum())

    assert err(learned) < 0.9 * err(torch.round(ws) * scale)
    q = learned / scale
    assert torch.allclose(q, q.round(), atol=1e-3) and q.abs().max() <= 127 + 1e-3
    assert torch.equal(q.abs().flatten(1).amax(1).round(), torch.full((w.shape[0],), 127.0))  # the scale survives
    assert 0 < frac < 0.5 and (q.round() - ws).abs().max() < 1 + 1e-4  # up or down, never further


@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_converter_keeps_the_learned_integers(target, r20, tmp_path, monkeypatch):
    """The int8 weights inside the artifact are exactly the learned ones (the converter's own scale and
    round-to-nearest reproduce them), and the artifact still agrees with the float student."""
    import torch

    import kd2edge.export.rounding as rounding
    from kd2edge.export.graph import deployable
    from kd2edge.export.targets import get_target

    monkeypatch.setitem(rounding.DEFAULTS, "iters", 40)
    model, prep, calib = r20
    mod = get_target(target)
    rounded, record = rounding.adaround(model, prep, calib, mod.weight_qmax())
    assert record["layers"] == 20 and record["qmax"] == mod.weight_qmax()  # 19 convolutions + the classifier
    assert 0 < np.mean(list(record["rounded_other_way"].values())) < 0.5
    mod.convert(rounded, prep, tmp_path / mod.MODEL_FILE, "int8", calib)
    learned = {}  # shape -> [(learned integers, each channel's largest |w| / the layer's)]
    for m in rounded.modules():
        if isinstance(m, torch.nn.Conv2d):
            w = m.weight.detach()
            scale, ws = rounding.grid(w, mod.weight_qmax())
            peak = w.abs().flatten(1).amax(1)
            learned.setdefault(tuple(w.shape), []).append((ws.round().to(torch.int8).numpy(), (peak / peak.max()).numpy()))
    stored = _int8_conv_weights(target, tmp_path / mod.MODEL_FILE)
    assert len(stored) == 19
    odd = total = 0
    for w in stored:  # TFLite keeps OHWI: back to OIHW
        w = w if target == "onnx" else w.transpose(0, 3, 1, 2)
        same = [((w == q).reshape(len(w), -1).all(1), rel) for q, rel in learned[w.shape]]
        match, rel = max(same, key=lambda t: t[0].sum())
        # every channel as learned, except near-dead ones (largest |w| < 5% of the layer's) whose scale TFLite
        # raises so that their folded bias fits int32
        assert match.all() or (target == "tflite" and (rel[~match] < 0.05).all()), (w.shape, np.flatnonzero(~match))
        odd, total = odd + int((~match).sum()), total + len(match)
    assert odd <= 0.05 * total, (odd, total)  # resnet20 on TFLite: 21 of 688
    x = torch.as_tensor(calib[:32]).float()
    with torch.no_grad():
        ref = deployable(model, prep)(x).argmax(1)
        out = deployable(rounded, prep)(x).argmax(1)
    assert (ref == out).float().mean() >= 0.9  # on the grid, in float: still the same net


def _int8_conv_weights(target: str, path: Path) -> list[np.ndarray]:
    """The 4-D int8 weight tensors of the saved model (3x3 and 1x1 convolutions; the normalize conv is 3x1x1x1)."""
    if target == "onnx":
        import onnx
        from onnx import numpy_helper

        g = onnx.load(str(path)).graph
        arrays = [numpy_helper.to_array(t) for t in g.initializer]
    else:
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(path))
        arrays = []
        for d in it.get_tensor_details():
            try:
                arrays.append(it.get_tensor(d["index"]))
            except ValueError:  # activations: no data before invoke
                pass
    return [a for a in arrays if a.dtype == np.int8 and a.ndim == 4 and a.shape[1] * a.shape[-1] > 3]


def test_export_records_the_rounding(teacher_path, cifar10_dir, tmp_path, monkeypatch):
    import kd2edge.export.rounding as rounding
    from kd2edge.export import export

    monkeypatch.setitem(rounding.DEFAULTS, "iters", 20)
    monkeypatch.setitem(rounding.DEFAULTS, "images", 64)
    rows = export(str(teacher_path("resnet20")), ["onnx"], arch="resnet20", out=tmp_path, precisions=["int8"],
                  calib_images=32, eval_images=100, data_dir=cifar10_dir, rounding="adaround", keep_float=["last"],
                  progress=False, command="pytest")
    assert rows[0]["status"] == "ok", rows[0]["reason"]
    assert rows[0]["agreement"] >= 95, rows[0]
    q = json.loads((Path(rows[0]["path"]) / "meta.json").read_text())["quantization"]
    r = q["rounding"]
    assert q["method"] == "PTQ" and r["rounding"] == "adaround" and r["images"] == 64 and r["iters_per_layer"] == 20
    assert r["skipped"] == ["linear"] and r["layers"] == 19  # the classifier kept float is not rounded
