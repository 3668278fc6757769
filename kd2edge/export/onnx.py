"""ONNX: torch's dynamo exporter (weights inside the file, dynamic batch axis), onnxsim, and
onnxruntime static quantization (QDQ, per-channel int8 weights, per-tensor uint8 activations) for int8.

uint8 activations because onnxruntime fuses a QDQ Conv into its integer kernels for uint8 activations on every
CPU, but for int8 activations only on ARM (`session.qdqisint8allowed`): on x86 an int8-activation graph runs its
convolutions in float between Q/DQ pairs, slower than the fp32 graph (benchmarks/export.md, "ONNX int8 activations").
On x86 without VNNI, u8 x s8 pairs are summed in 16 bits and can saturate (onnxruntime's VPMADDUBSW path); the
export's own parity check on such a machine sees it.

Input: float32 raw pixels 0..255, NHWC; the graph normalizes. int8 keeps float I/O (the Q/DQ pairs sit
inside the graph), so the artifact's quantization record has no input/output parameters.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from kd2edge import Kd2EdgeError, require
from kd2edge.export.graph import deployable, op_error, sample_input
from kd2edge.onnx_graph import (CALIB_METHODS, OPSET, activations_to_uint8, export_graph, quantize_graph,  # noqa: F401
                                weights_to_7bit)
from kd2edge.runtimes.ort import saturation_free

RUNTIME = "onnxruntime"
MODEL_FILE = "model.onnx"
LAYOUT = "NHWC"
PRECISIONS = ("fp32", "int8")
INT8 = ("int8",)
ACTIVATIONS = "uint8"  # of int8 PTQ graphs (the module docstring says why)
# The oldest onnxruntime that implements each (highest ONNX IR version, highest default-domain opset), from ONNX
# Runtime's published table (onnxruntime.ai/docs/reference/compatibility.html, "ONNX opset support"; it ends at
# 1.20, which adds nothing past 1.18). Our files are IR 10 / opset 18 -> 1.18: onnxruntime 1.18.1 loads them and
# 1.17.3 refuses them ("Unsupported model IR version: 10, max supported IR version: 9"), docs/phones.md.
ORT_SUPPORTS = {"1.10": (8, 15), "1.11": (8, 16), "1.12": (8, 17), "1.14": (8, 18), "1.15": (8, 19),
                "1.16": (9, 19), "1.17": (9, 20), "1.18": (10, 21)}


def min_runtime(path) -> dict:
    """meta.json `min_runtime` of a saved model: the first onnxruntime in ORT_SUPPORTS that covers its IR version
    and opset; past the table, the onnxruntime that verifies it here (known to load it)."""
    onnx = require("onnx", "export")
    import onnxruntime

    proto = onnx.load(str(path), load_external_data=False)
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=1)
    fits = [v for v, (ir, ops) in ORT_SUPPORTS.items() if proto.ir_version <= ir and opset <= ops]
    return {"onnxruntime": fits[0] if fits else onnxruntime.__version__}


def _export_fp32(model, preprocessing, path: Path, calib) -> None:
    export_graph(deployable(model, preprocessing, channels_last=True), sample_input(calib, channels_last=True), path,
                 on_error=lambda e, exported=None: op_error("onnx", e, exported))


def _quantize(fp32_path: Path, path: Path, calib, method: str = "minmax", float_layers=(),
              reduce_range: bool | None = None) -> list[str]:
    """Static QDQ quantization (uint8 activations, int8 weights); the nodes of `float_layers` (module paths,
    kd2edge.export.float_layers) stay float. Returns the names of those nodes."""
    from kd2edge.export.float_layers import onnx_nodes

    exclude = (lambda proto: onnx_nodes(proto, float_layers)) if float_layers else None
    # reduce_range None: 7-bit weights where this CPU's u8 x s8 kernels could saturate (x86 without VNNI), so that
    # verification here measures the model, not the kernel's overflow (resnet20 on an AVX2-only EPYC: 8-bit weights
    # 96.1% agreement)
    if reduce_range is None:
        reduce_range = not saturation_free()
    return quantize_graph(fp32_path, path, calib, method, activations=ACTIVATIONS, exclude=exclude,
                          reduce_range=reduce_range)


def _export_qat(qat, path: Path, calib, reduce_range: bool = False) -> None:
    """The QAT graph (kd2edge.export.qat, litert-torch's int8 scheme = onnxruntime's QDQ scheme: per-channel
    symmetric weights, per-tensor asymmetric activations) converted to Q/DQ ops and exported as is; with
    `reduce_range`, its weights re-rounded to 7 bits (as PTQ does on x86 without VNNI)."""
    import copy

    torch = require("torch", "export")
    onnx = require("onnx", "export")
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    qnet = convert_pt2e(copy.deepcopy(qat[0]), fold_quantize=False)
    x = sample_input(calib, channels_last=True)
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        exported = torch.export.export(qnet, (x,), dynamic_shapes=({0: batch},))
        program = torch.onnx.export(exported, (x,), dynamo=True, external_data=False, opset_version=OPSET,
                                    input_names=["pixels"], output_names=["logits"], verbose=False)
    except Exception as e:
        raise op_error("onnx", e) from None
    proto = program.model_proto
    activations_to_uint8(proto)  # PT2E's int8 activations as uint8, exactly: fused on x86 too
    if reduce_range:
        weights_to_7bit(proto)
    onnx.checker.check_model(proto)
    onnx.save_model(proto, str(path), save_as_external_data=False)


def convert(model, preprocessing: dict, path: Path, precision: str, calib, qat=None, float_layers=()) -> dict:
    """`qat`: (prepared PT2E graph after kd2edge.export.qat, its quantizer, record) for int8 instead of PTQ;
    `float_layers`: module paths (kd2edge.export.float_layers) that int8 PTQ leaves in float."""
    path = Path(path)
    c, h, w = preprocessing.get("input_size") or [3, *calib.shape[1:3]]
    # 7-bit weights where this CPU's u8 x s8 kernels could saturate (x86 without VNNI; see _quantize)
    reduce = precision == "int8" and not saturation_free()
    if precision == "fp32":
        _export_fp32(model, preprocessing, path, calib)
        quantization = None
    elif precision == "int8" and qat is not None:
        _export_qat(qat, path, calib, reduce)
        seven = ", re-rounded to a 7-bit range after QAT" if reduce else ""
        quantization = {"scheme": "PT2E QAT exported as QDQ: activations moving-average, asymmetric (PT2E's int8 "
                                  "stored as uint8 with zero point + 128, the same values), int8 weights "
                                  f"(per-channel, symmetric{seven})",
                        "input": None, "output": None, "reduce_range": reduce}
    elif precision == "int8":
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            fp32 = Path(tmp) / "fp32.onnx"
            _export_fp32(model, preprocessing, fp32, calib)
            nodes = _quantize(fp32, path, calib, float_layers=float_layers, reduce_range=reduce)
        quantization = {"scheme": f"onnxruntime static QDQ, {ACTIVATIONS} activations (MinMax, asymmetric), "
                                  f"int8 weights (per-channel, symmetric{', 7-bit range' if reduce else ''})",
                        "input": None, "output": None, "reduce_range": reduce}
        if float_layers:
            quantization["float_layers"] = {"layers": list(float_layers), "nodes": nodes}
    else:
        raise Kd2EdgeError(f"onnx cannot export precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    import onnx
    import onnxruntime
    import onnxsim

    return {"input": {"name": "pixels", "shape": [None, h, w, c], "layout": LAYOUT, "dtype": "float32",
                      "range": [0, 255]},
            "output": {"name": "logits", "shape": [None, None], "dtype": "float32"},
            "quantization": quantization, "min_runtime": min_runtime(path),
            "tool_versions": {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                              "onnxsim": onnxsim.__version__, "opset": OPSET}}


def embed_metadata(path, meta: dict) -> None:
    onnx = require("onnx", "export")
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for k, v in {"kd2edge": json.dumps(meta, default=str), "classes": json.dumps(meta.get("classes")),
                 "preprocessing": json.dumps(meta.get("preprocessing"))}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "kd2edge"
    tmp = f"{path}.meta.tmp"
    onnx.save_model(proto, tmp)
    os.replace(tmp, path)


def weight_qmax() -> int:
    """The int8 weight grid's largest level here: 127, or 64 where PTQ uses 7-bit weights (x86 without VNNI;
    onnxruntime's reduced symmetric range is -64..64)."""
    return 127 if saturation_free() else 64
