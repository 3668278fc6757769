"""A PyTorch module as an ONNX file, and onnxruntime's static quantization of it: what the ONNX export target
(kd2edge.export.onnx, int8 artifacts) and the int8 distillation teacher (kd2edge.distill.teacher_int8) share.

    export_graph(net, x, path)                       fp32, input "pixels" shaped like x (dynamic batch), simplified
    quantize_graph(path, out, calib, "minmax", ...)  static QDQ: per-channel int8 weights, int8/uint8 activations
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from kd2edge import Kd2EdgeError, require

OPSET = 18
CALIB_METHODS = ("minmax", "percentile", "entropy")  # onnxruntime's CalibrationMethod (benchmarks/calibration.py)


def export_graph(net, x, path: Path, on_error=None) -> None:
    """`net` (eval mode) as an fp32 ONNX file with input "pixels" shaped like `x` (dynamic batch), simplified.
    `on_error(exc, exported_program_or_None)` gives the exception to raise when torch cannot export it."""
    torch = require("torch", "export")
    onnx = require("onnx", "export")
    onnxsim = require("onnxsim", "export")

    def fail(e, exported=None):
        if on_error is not None:
            return on_error(e, exported)
        return Kd2EdgeError(f"torch cannot export the model to ONNX: {str(e).strip().splitlines()[0]}")

    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        exported = torch.export.export(net, (x,), dynamic_shapes=({0: batch},))
    except Exception as e:
        raise fail(e) from None
    try:
        program = torch.onnx.export(exported, (x,), dynamo=True, external_data=False, opset_version=OPSET,
                                    input_names=["pixels"], output_names=["logits"], verbose=False)
    except Exception as e:
        raise fail(e, exported) from None
    proto = program.model_proto
    simplified, ok = onnxsim.simplify(proto)
    if ok:
        proto = simplified
    onnx.checker.check_model(proto)
    onnx.save_model(proto, str(path), save_as_external_data=False)


class Calibration:
    """onnxruntime CalibrationDataReader over input arrays (raw uint8 pixels or normalized floats), 32 per batch."""

    def __init__(self, name: str, calib, batch: int = 32):
        self.batches = iter([{name: calib[i:i + batch].astype("float32")} for i in range(0, len(calib), batch)])

    def get_next(self):
        return next(self.batches, None)


def quantize_graph(fp32_path: Path, path: Path, calib, method: str = "minmax", activations: str = "int8",
                   reduce_range: bool = False, exclude=None) -> list[str]:
    """Static QDQ quantization of the ONNX file at `fp32_path` into `path`, calibrated on `calib` (the graph's
    input). `activations` "uint8": onnxruntime's x86 kernels (VNNI / AVX2 u8 x s8) run the graph ~3x faster than
    with int8 activations. `reduce_range`: 7-bit weights (x86 without VNNI, where u8 x s8 pairs can saturate).
    `exclude(model_proto)` names nodes that stay float; returns those names."""
    q = require("onnxruntime.quantization", "export")
    onnx = require("onnx", "export")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        nodes = exclude(onnx.load(str(pre))) if exclude else []
        q.quantize_static(str(pre), str(path), Calibration("pixels", calib), quant_format=q.QuantFormat.QDQ,
                          nodes_to_exclude=nodes, reduce_range=reduce_range,
                          activation_type={"int8": q.QuantType.QInt8, "uint8": q.QuantType.QUInt8}[activations],
                          per_channel=True, weight_type=q.QuantType.QInt8,
                          calibrate_method={"minmax": q.CalibrationMethod.MinMax,
                                            "percentile": q.CalibrationMethod.Percentile,
                                            "entropy": q.CalibrationMethod.Entropy}[method],
                          extra_options={"CalibTensorRangeSymmetric": False})
    return nodes
