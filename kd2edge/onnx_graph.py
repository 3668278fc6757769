"""A PyTorch module as an ONNX file, and onnxruntime's static quantization of it: what the ONNX export target
(kd2edge.export.onnx, int8 artifacts) and the int8 distillation teacher (kd2edge.distill.teacher_int8) share.

    export_graph(net, x, path)                       fp32, input "pixels" shaped like x (dynamic batch), simplified
    quantize_graph(path, out, calib, "minmax", ...)  static QDQ: per-channel int8 weights, int8/uint8 activations
    activations_to_uint8(proto)                      int8 activation Q/DQ pairs -> uint8, exactly (QAT graphs)
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from kd2edge import Kd2EdgeError, require

OPSET = 18
CALIB_METHODS = ("minmax", "percentile", "entropy", "histogram")  # benchmarks/calibration.py; histogram: TFLite's observer


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
        own = {"entropy": entropy_ranges, "histogram": histogram_ranges}.get(method)  # ranges computed here
        ranges = own(pre, calib, Path(tmp)) if own else None
        q.quantize_static(str(pre), str(path), Calibration("pixels", calib), quant_format=q.QuantFormat.QDQ,
                          calibration_cache_path=ranges,
                          nodes_to_exclude=nodes, reduce_range=reduce_range,
                          activation_type={"int8": q.QuantType.QInt8, "uint8": q.QuantType.QUInt8}[activations],
                          per_channel=True, weight_type=q.QuantType.QInt8,
                          calibrate_method={"minmax": q.CalibrationMethod.MinMax,
                                            "percentile": q.CalibrationMethod.Percentile,
                                            "entropy": q.CalibrationMethod.Entropy,
                                            "histogram": q.CalibrationMethod.MinMax}[method],
                          extra_options={"CalibTensorRangeSymmetric": False})
    return nodes


def entropy_ranges(model_path: Path, calib, tmp: Path, num_bins: int = 2048, num_quantized_bins: int = 256) -> str:
    """Entropy (KL) calibration ranges of every tensor, as an onnxruntime calibration cache file in `tmp`.
    quantize_static cannot do this itself: it builds its entropy calibrator with 128 histogram bins and 128
    quantized bins, which leaves one candidate threshold, the min-max range (onnxruntime 1.31, create_calibrator;
    benchmarks/export.md). Here the histogram has `num_bins` bins, searched for the range whose `num_quantized_bins`
    levels lose the least information."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data

    calibrator = create_calibrator(model_path, augmented_model_path=str(tmp / "entropy-augmented.onnx"),
                                   calibrate_method=CalibrationMethod.Entropy,
                                   extra_options={"num_bins": num_bins, "num_quantized_bins": num_quantized_bins})
    calibrator.collect_data(Calibration("pixels", calib))
    out = tmp / "entropy-ranges.json"
    save_tensors_data(calibrator.compute_data(), out)
    return str(out)


class _Observers:
    """An onnxruntime histogram calibrator's collector that feeds every tensor to torchao's HistogramObserver,
    the activation observer of the TFLite int8 path (kd2edge.export.tflite): its range is the one whose 256
    levels reproduce the tensor's histogram with the least squared error."""

    def __init__(self):
        self.obs = {}

    def collect(self, arrays: dict) -> None:
        import torch
        from torchao.quantization.pt2e import HistogramObserver

        for name, chunks in arrays.items():
            obs = self.obs.setdefault(name, HistogramObserver(dtype=torch.quint8))
            for a in chunks:
                obs(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)))

    def ranges(self) -> dict:
        out = {}
        for name, obs in self.obs.items():
            lo, hi = obs._non_linear_param_search()
            out[name] = (np.float32(min(float(lo), 0.0)), np.float32(max(float(hi), 0.0)))
        return out


def histogram_ranges(model_path: Path, calib, tmp: Path) -> str:
    """Ranges of every tensor chosen as the TFLite path's HistogramObserver chooses them, as an onnxruntime
    calibration cache file (MinMax format) in `tmp`."""
    from onnxruntime.quantization.calibrate import (CalibrationMethod, TensorsData, create_calibrator,
                                                    save_tensors_data)

    calibrator = create_calibrator(model_path, augmented_model_path=str(tmp / "histogram-augmented.onnx"),
                                   calibrate_method=CalibrationMethod.Percentile)
    calibrator.collector = collector = _Observers()
    calibrator.collect_data(Calibration("pixels", calib))
    out = tmp / "histogram-ranges.json"
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, collector.ranges()), out)
    return str(out)


def _constants_and_readers(g) -> tuple[dict, dict]:
    """({name: array} of the graph's initializers and Constant nodes, {tensor name: [nodes reading it]})."""
    from onnx import numpy_helper

    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    readers: dict[str, list] = {}
    for n in g.node:
        for name in n.input:
            readers.setdefault(name, []).append(n)
    return consts, readers


def activations_to_uint8(proto) -> int:
    """Rewrite, in place, every QuantizeLinear of an activation with an int8 zero point (and the
    DequantizeLinear nodes reading it) to uint8 with zero point + 128: q_u8 = q_s8 + 128 on both sides, so the
    graph computes exactly the same values, and onnxruntime fuses it into integer kernels on x86 too (it fuses
    int8 activations only on ARM). Weights (QuantizeLinear of a constant) stay int8. Returns the number of
    activations rewritten."""
    from onnx import numpy_helper

    g = proto.graph
    consts, readers = _constants_and_readers(g)
    outputs = {o.name for o in g.output}
    changed = set()
    for q in [n for n in g.node if n.op_type == "QuantizeLinear" and len(n.input) == 3]:
        zp = consts.get(q.input[2])
        if q.input[0] in consts or zp is None or zp.dtype != np.int8 or q.output[0] in outputs \
                or any(a.name == "output_dtype" for a in q.attribute):
            continue
        dqs = readers.get(q.output[0], [])
        if not dqs or any(d.op_type != "DequantizeLinear" or len(d.input) != 3
                          or not np.array_equal(consts.get(d.input[2]), zp) for d in dqs):
            continue
        name = f"{q.output[0]}__zero_point_u8"
        g.initializer.append(numpy_helper.from_array((zp.astype(np.int16) + 128).astype(np.uint8), name))
        q.input[2] = name
        for d in dqs:
            d.input[2] = name
        changed.add(q.output[0])
    keep = [v for v in g.value_info if v.name not in changed]
    del g.value_info[:]
    g.value_info.extend(keep)
    return len(changed)


def weights_to_7bit(proto, qmax: int = 64, qmax8: int = 127) -> int:
    """Rewrite, in place, every QuantizeLinear of a constant float weight (symmetric, zero point 0; QAT graphs,
    where PT2E writes Q -> Clip(-127, 127) -> DQ) to the 7-bit range onnxruntime's `reduce_range` uses: the weight
    clipped where 8 bits clipped it, its scale (and that of the DequantizeLinear nodes reading it) times
    max|q| / `qmax`, so |q| <= `qmax` and x86 without VNNI cannot saturate. Initializers no node reads any more
    are dropped. Returns the number of weights rewritten."""
    from onnx import numpy_helper

    g = proto.graph
    consts, readers = _constants_and_readers(g)
    changed = 0
    for q in [n for n in g.node if n.op_type == "QuantizeLinear" and len(n.input) == 3]:
        w, scale, zp = (consts.get(name) for name in q.input)
        if w is None or scale is None or zp is None or w.dtype.kind != "f" or zp.dtype != np.int8 or zp.any():
            continue
        after = readers.get(q.output[0], [])
        if len(after) == 1 and after[0].op_type == "Clip":
            after = readers.get(after[0].output[0], [])
        if not after or any(d.op_type != "DequantizeLinear" for d in after):
            continue
        axis = next((a.i for a in q.attribute if a.name == "axis"), 1) % w.ndim
        shape = [-1 if scale.ndim and i == axis else 1 for i in range(w.ndim)]
        q8 = np.round(np.clip(w / scale.reshape(shape), -qmax8, qmax8))  # what 8 bits made of it
        reach = np.maximum(np.abs(q8).max(axis=tuple(i for i in range(w.ndim) if not scale.ndim or i != axis)), 1)
        new = (scale * np.maximum(reach / qmax, 1)).astype(scale.dtype)  # |q| <= qmax per channel
        clipped = np.clip(w, -qmax8 * scale.reshape(shape), qmax8 * scale.reshape(shape))
        if not np.array_equal(clipped, w):
            q.input[0] = _put(g, f"{q.output[0]}__weight_clipped", clipped.astype(w.dtype))
        q.input[1] = _put(g, f"{q.output[0]}__scale_7bit", new)
        for d in after:
            d.input[1] = q.input[1]
        changed += 1
    used = {name for n in g.node for name in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    return changed


def _put(g, name: str, array) -> str:
    """Set initializer `name` of graph `g` to `array` (replacing one of that name: rewrites may run twice)."""
    from onnx import numpy_helper

    keep = [t for t in g.initializer if t.name != name]
    del g.initializer[:]
    g.initializer.extend(keep)
    g.initializer.append(numpy_helper.from_array(array, name))
    return name
