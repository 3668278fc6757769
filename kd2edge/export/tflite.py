"""TFLite (LiteRT): litert-torch conversion; int8 = full-integer post-training quantization through PT2E
(litert-torch's PT2EQuantizer: int8 activations, symmetric per-channel int8 weights) calibrated on
training images.

Input: raw pixels 0..255, NHWC, batch 1 (a dynamic batch axis converts, but XNNPACK then fails to resize
it past the sample batch for our ResNets' option-A shortcuts; the interpreter can be resized only within that). fp32 takes float32; int8 takes int8 and returns int8:
`real = scale * (q - zero_point)` with the parameters read from the interpreter and recorded in meta.json.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np

from kd2edge import Kd2EdgeError, require
from kd2edge.export.graph import deployable, op_error, sample_input

RUNTIME = "litert"
MODEL_FILE = "model.tflite"
LAYOUT = "NHWC"
PRECISIONS = ("fp32", "int8")
INT8 = ("int8",)


# The builtin ops (at their highest version) our fp32 and int8 ResNet exports emit. TF Lite added each of these op
# versions by release 2.0 (tensorflow/lite/tools/versioning/runtime_version.cc; the converter's own
# `min_runtime_version` metadata in our files says 2.0.0), and ai-edge-litert 1.4.0 and tflite-runtime 2.13.0 /
# 2.14.0 run our int8 files (docs/phones.md): a model with these ops only gets MIN_RUNTIME, any other op the
# ai-edge-litert that verifies it here.
KNOWN_OPS = {"ADD": 1, "CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "DEQUANTIZE": 2, "FULLY_CONNECTED": 5, "MEAN": 1,
             "PAD": 2, "QUANTIZE": 1, "STRIDED_SLICE": 1, "TRANSPOSE": 2}
MIN_RUNTIME = {"ai-edge-litert": "1.4.0", "tflite-runtime": "2.13.0"}

CALIB_OBSERVERS = ("histogram", "minmax")  # activation observers (benchmarks/calibration.py)


def quantizer_for(observer: str = "histogram", float_layers=()):
    """litert-torch's PT2EQuantizer (per-tensor asymmetric int8 activations, per-channel symmetric int8
    weights); `minmax` swaps its activation HistogramObserver for a MinMaxObserver; the ops called by the
    modules `float_layers` (kd2edge.export.float_layers) are left unannotated, i.e. float."""
    import dataclasses

    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

    config = get_symmetric_quantization_config(is_per_channel=True)
    if observer == "minmax":
        from torchao.quantization.pt2e import MinMaxObserver

        act = dataclasses.replace(config.input_activation,
                                  observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2 ** -12))
        config = dataclasses.replace(config, input_activation=act, output_activation=act)
    elif observer != "histogram":
        raise Kd2EdgeError(f"unknown activation observer {observer!r}; valid: {', '.join(CALIB_OBSERVERS)}")
    if not float_layers:
        return PT2EQuantizer().set_global(config)
    from kd2edge.export.float_layers import in_layers

    class SkippingQuantizer(PT2EQuantizer):
        def _annotate_for_static_quantization_config(self, model):
            return self._annotate_all_static_patterns(model, self.global_config,
                                                      lambda n: not in_layers(n, float_layers))

    return SkippingQuantizer().set_global(config)


def pt2e_int8(net, x, calib, fold_quantize: bool = False, observer: str = "histogram", float_layers=()):
    """PT2E: export at the sample's batch -> prepare with litert-torch's quantizer (int8 activations,
    symmetric per-channel int8 weights) -> calibrate image by image on raw pixels -> convert."""
    import torch
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = quantizer_for(observer, float_layers)
    graph = torch.export.export(net, (x,)).module()  # batch 1, like the artifact
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for img in calib:
            prepared(torch.as_tensor(img[None]).float())
    quantized = move_exported_model_to_eval(convert_pt2e(prepared, fold_quantize=fold_quantize))
    # The graph was exported from the eval-mode network and prepare_pt2e folded its batch norms into the convs:
    # it has no train/eval-dependent op left (move_exported_model_to_eval changes nothing; checked on our
    # ResNets), but a GraphModule starts with training=True and litert-torch warns "converted in training mode"
    # on that flag alone. `.eval()` is refused on exported graphs, so the flag is cleared directly.
    for m in quantized.modules():
        m.training = False
    return quantized, QuantConfig(pt2e_quantizer=quantizer)


def convert(model, preprocessing: dict, path: Path, precision: str, calib, qat=None, float_layers=()) -> dict:
    """`qat`: (prepared PT2E graph after kd2edge.export.qat, its quantizer, record) for int8 instead of PTQ;
    `float_layers`: module paths (kd2edge.export.float_layers) that int8 PTQ leaves in float."""
    torch = require("torch", "export")
    litert_torch = require("litert_torch", "export")
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")  # its own per-step log; we show a progress bar
    if precision not in PRECISIONS:
        raise Kd2EdgeError(f"tflite cannot export precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    c, h, w = preprocessing.get("input_size") or [3, *calib.shape[1:3]]
    net = deployable(model, preprocessing, channels_last=True)
    x = sample_input(calib, channels_last=True, n=1)
    try:
        exported = torch.export.export(net, (x,))
    except Exception as e:
        raise op_error("tflite", e) from None
    try:
        if precision == "fp32":
            edge = litert_torch.convert(net, (x,))
        else:
            qnet, config = pt2e_int8(net, x, calib, float_layers=float_layers) if qat is None else _from_qat(qat)
            edge = litert_torch.convert(qnet, (x,), quant_config=config)
        edge.export(str(path))
    except Kd2EdgeError:
        raise
    except Exception as e:
        raise op_error("tflite", e, exported) from None
    from kd2edge.runtimes import load_session

    session = load_session(RUNTIME, path, threads=1)  # what the device will run: its I/O and int8 parameters
    qin, qout = (_quant(session.input_quant, session.input_dtype), _quant(session.output_quant, session.output_dtype))
    quantization = None
    if precision == "int8":
        quantization = {"scheme": "PT2E full-integer: int8 activations ("
                                  + ("histogram" if qat is None else "QAT moving-average")
                                  + ", asymmetric), int8 weights "
                                  "(per-channel, symmetric)", "input": qin, "output": qout}
        if float_layers:
            quantization["float_layers"] = {"layers": list(float_layers)}
    return {"input": {"name": session.input_name, "shape": [session.fixed_batch, h, w, c],
                      "layout": LAYOUT, "dtype": session.input_dtype.name, "range": [0, 255]},
            "output": {"name": session.output_name, "shape": [None, None], "dtype": session.output_dtype.name},
            "quantization": quantization, "min_runtime": min_runtime(path),
            "tool_versions": {"litert_torch": getattr(litert_torch, "__version__", _version("litert-torch")),
                              "ai_edge_litert": _version("ai-edge-litert"), "torchao": _version("torchao")}}


def model_ops(path) -> dict:
    """{builtin op name: highest version} of a .tflite file's operator codes."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.ModelT.InitFromPackedBuf(bytearray(Path(path).read_bytes()), 0)
    ops = {}
    for code in model.operatorCodes or []:
        name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), f"op {code.builtinCode}")
        ops[name] = max(ops.get(name, 0), code.version)
    return ops


def min_runtime(path) -> dict:
    """meta.json `min_runtime`: MIN_RUNTIME when every op is in KNOWN_OPS at most at its version, else the
    ai-edge-litert that verifies the model here."""
    if all(v <= KNOWN_OPS.get(op, 0) for op, v in model_ops(path).items()):
        return dict(MIN_RUNTIME)
    return {"ai-edge-litert": _version("ai-edge-litert")}


def _from_qat(qat):
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    prepared, quantizer, _ = qat
    return convert_pt2e(copy.deepcopy(prepared), fold_quantize=False), QuantConfig(pt2e_quantizer=quantizer)


def _quant(q, dtype) -> dict | None:
    return {"scale": q[0], "zero_point": q[1], "dtype": dtype.name} if q else None


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def embed_metadata(path, meta: dict) -> None:
    """Add the metadata as a `kd2edge` entry of the model's flatbuffer metadata table (a named buffer)."""
    import json

    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    path = Path(path)
    model = schema.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)
    buf = schema.BufferT()
    buf.data = np.frombuffer(json.dumps(meta, default=str).encode(), dtype=np.uint8)
    model.buffers = list(model.buffers or []) + [buf]
    entry = schema.MetadataT()
    entry.name, entry.buffer = "kd2edge", len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name not in (b"kd2edge", "kd2edge")] + [entry]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    tmp = path.with_name(f".{path.name}.meta.tmp")
    tmp.write_bytes(builder.Output())
    tmp.replace(path)


def weight_qmax() -> int:
    """The int8 weight grid's largest level: litert-torch's weights are per-channel symmetric in -127..127."""
    return 127
