"""TFLite (LiteRT): litert-torch conversion; int8 = full-integer post-training quantization through PT2E
(litert-torch's PT2EQuantizer: int8 activations, symmetric per-channel int8 weights) calibrated on
training images.

Input: raw pixels 0..255, NHWC, batch 1 (a dynamic batch axis converts, but XNNPACK then fails to resize
it past the sample batch for our ResNets' option-A shortcuts; the interpreter can be resized only within that). fp32 takes float32; int8 takes int8 and returns int8:
`real = scale * (q - zero_point)` with the parameters read from the interpreter and recorded in meta.json.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kd2edge import Kd2EdgeError, require
from kd2edge.targets import deployable, op_error, sample_input

RUNTIME = "litert"
MODEL_FILE = "model.tflite"
LAYOUT = "NHWC"
PRECISIONS = ("fp32", "int8")
INT8 = ("int8",)


def pt2e_int8(net, x, calib, fold_quantize: bool = False):
    """PT2E: export at the sample's batch -> prepare with litert-torch's quantizer (int8 activations,
    symmetric per-channel int8 weights) -> calibrate image by image on raw pixels -> convert."""
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    graph = torch.export.export(net, (x,)).module()  # batch 1, like the artifact
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for img in calib:
            prepared(torch.as_tensor(img[None]).float())
    return convert_pt2e(prepared, fold_quantize=fold_quantize), QuantConfig(pt2e_quantizer=quantizer)


def convert(model, preprocessing: dict, path: Path, precision: str, calib) -> dict:
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
            qnet, config = pt2e_int8(net, x, calib)
            edge = litert_torch.convert(qnet, (x,), quant_config=config)
        edge.export(str(path))
    except Kd2EdgeError:
        raise
    except Exception as e:
        raise op_error("tflite", e, exported) from None
    details = io_details(path)
    qin, qout = details["input"], details["output"]
    quantization = None
    if precision == "int8":
        quantization = {"scheme": "PT2E full-integer: int8 activations (histogram, asymmetric), int8 weights "
                                  "(per-channel, symmetric)",
                        "input": qin["quantization"], "output": qout["quantization"]}
    return {"input": {"name": qin["name"], "shape": [qin["shape"][0], h, w, c],
                      "layout": LAYOUT, "dtype": qin["dtype"], "range": [0, 255]},
            "output": {"name": qout["name"], "shape": [None, qout["shape"][-1]], "dtype": qout["dtype"]},
            "quantization": quantization,
            "tool_versions": {"litert_torch": getattr(litert_torch, "__version__", _version("litert-torch")),
                              "ai_edge_litert": _version("ai-edge-litert"), "torchao": _version("torchao")}}


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def interpreter(path, threads: int | None = None):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise Kd2EdgeError("ai_edge_litert is not installed; install it with: pip install 'kd2edge[device]'") from None
    return Interpreter(model_path=str(path), num_threads=threads)


def io_details(path) -> dict:
    """Name, shape, dtype and (for int8) {scale, zero_point, dtype} of the single input and output."""
    it = interpreter(path)

    def one(d):
        scale, zp = d["quantization"]
        dtype = np.dtype(d["dtype"]).name
        q = {"scale": float(scale), "zero_point": int(zp), "dtype": dtype} if scale else None
        return {"name": d["name"], "shape": [int(v) for v in d["shape"]], "dtype": dtype, "quantization": q}

    ins, outs = it.get_input_details(), it.get_output_details()
    if len(ins) != 1 or len(outs) != 1:
        raise Kd2EdgeError(f"{path}: expected one input and one output, got {len(ins)} and {len(outs)}")
    return {"input": one(ins[0]), "output": one(outs[0])}


def quantize_input(x_uint8, q: dict | None) -> np.ndarray:
    """Raw pixels -> the artifact's input tensor: float32, or int8 via q = round(x / scale) + zero_point."""
    x = np.asarray(x_uint8, dtype=np.float32)
    if not q:
        return x
    info = np.iinfo(q["dtype"])
    return np.clip(np.round(x / q["scale"]) + q["zero_point"], info.min, info.max).astype(q["dtype"])


def dequantize_output(y, q: dict | None) -> np.ndarray:
    if not q:
        return np.asarray(y, dtype=np.float32)
    return (q["scale"] * (np.asarray(y, dtype=np.float32) - q["zero_point"])).astype(np.float32)


def run(path, x_uint8, meta: dict | None = None, batch: int = 250):
    """Logits of the artifact on uint8 NHWC images, with the int8 parameters in `meta` (else the file's)."""
    qrec = (meta or {}).get("quantization") or {}
    qin, qout = qrec.get("input"), qrec.get("output")
    it = interpreter(path)
    inp, outp = it.get_input_details()[0], it.get_output_details()[0]
    fixed = int(inp["shape"][0]) if inp["shape_signature"][0] != -1 else None
    step = fixed or batch
    out, current = [], None
    for i in range(0, len(x_uint8), step):
        xb = quantize_input(x_uint8[i:i + step], qin)
        n = len(xb)
        if fixed and n < fixed:  # pad the last batch of a fixed-batch model
            xb = np.concatenate([xb, np.repeat(xb[-1:], fixed - n, axis=0)])
        if xb.shape != current:
            it.resize_tensor_input(inp["index"], xb.shape)
            it.allocate_tensors()
            current = xb.shape
        it.set_tensor(inp["index"], xb)
        it.invoke()
        out.append(dequantize_output(it.get_tensor(outp["index"])[:n], qout))
    return np.concatenate(out), "runtime"


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


def read_metadata(path) -> dict | None:
    """The `kd2edge` metadata entry of a .tflite file (None when absent)."""
    import json

    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(bytearray(Path(path).read_bytes()), 0)
    for i in range(model.MetadataLength()):
        m = model.Metadata(i)
        if m.Name() == b"kd2edge":
            return json.loads(model.Buffers(m.Buffer()).DataAsNumpy().tobytes())
    return None
