"""CoreML: an ML program (`.mlpackage`) converted from a torch ExportedProgram, fp32 or fp16; `w8` =
8-bit per-channel symmetric weights (coremltools linear_quantize_weights); `w8a8` = int8 weights and
activations, quantized torch-side with PT2E (the TFLite int8 quantizer, calibrated on training images)
because calibrating activations on the ML program itself needs the macOS runtime.

Input: float32 raw pixels 0..255, NHWC, batch 1. On macOS the artifact is verified with the CoreML
runtime; elsewhere the saved ML program is evaluated op by op with numpy (kd2edge.export.mil_eval).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from kd2edge import Kd2EdgeError, require
from kd2edge.export.graph import deployable, op_error, sample_input

RUNTIME = "coreml"
MODEL_FILE = "model.mlpackage"
LAYOUT = "NHWC"
PRECISIONS = ("fp32", "fp16", "w8", "w8a8")
INT8 = ("w8", "w8a8")
MIN_DEPLOYMENT = "iOS17"
# The OS releases of a Core ML deployment target (Core ML ships with the OS): meta.json `min_runtime`.
DEPLOYMENT_OS = {"iOS16": {"macOS": "13.0", "iOS": "16.0"}, "iOS17": {"macOS": "14.0", "iOS": "17.0"},
                 "iOS18": {"macOS": "15.0", "iOS": "18.0"}}
# coremltools 9.0 builds a silently wrong W8A8 model with this pass when a reshape sits between two
# quantize nodes of different scales (see TOOLCHAIN.md): never run it.
UNSAFE_PASSES = ("common::int_op_canonicalization",)


def convert(model, preprocessing: dict, path: Path, precision: str, calib) -> dict:
    torch = require("torch", "export")
    ct = require("coremltools", "export")
    if precision not in PRECISIONS:
        raise Kd2EdgeError(f"coreml cannot export precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    c, h, w = preprocessing.get("input_size") or [3, *calib.shape[1:3]]
    net = deployable(model, preprocessing, channels_last=True)
    x = sample_input(calib, channels_last=True, n=1)
    if precision == "w8a8":
        # PT2E with folded int8 weights: coremltools' own torch quantizers need torch.ao APIs that
        # torch 2.14 removed; its frontend converts quantized_decomposed q/dq ops to MIL quantize/dequantize.
        from kd2edge.export.tflite import pt2e_int8

        net, _ = pt2e_int8(net, x, calib, fold_quantize=True)
    try:
        exported = torch.export.export(net, (x,)).run_decompositions({})
    except Exception as e:
        raise op_error("coreml", e) from None
    pipeline = ct.PassPipeline.DEFAULT
    for name in UNSAFE_PASSES:
        if name in pipeline.passes:
            pipeline.remove_passes([name])
    try:
        mlmodel = ct.convert(exported, convert_to="mlprogram", pass_pipeline=pipeline,
                             minimum_deployment_target=getattr(ct.target, MIN_DEPLOYMENT),
                             compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
                             # new TensorType objects per call: convert mutates them (TOOLCHAIN.md)
                             inputs=[ct.TensorType(name="pixels", shape=(1, h, w, c), dtype=np.float32)],
                             outputs=[ct.TensorType(name="logits", dtype=np.float32)])
    except Exception as e:
        raise op_error("coreml", e, exported) from None
    if precision == "w8":
        cfg = ct.optimize.coreml.OptimizationConfig(global_config=ct.optimize.coreml.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=0))
        mlmodel = ct.optimize.coreml.linear_quantize_weights(mlmodel, config=cfg)
    mlmodel.save(str(path))
    schemes = {"w8": "int8 weights (linear_symmetric, per-channel), fp32 activations",
               "w8a8": "int8 weights (symmetric, per-channel) and int8 activations (PT2E histogram, asymmetric)"}
    return {"input": {"name": "pixels", "shape": [1, h, w, c], "layout": LAYOUT, "dtype": "float32",
                      "range": [0, 255]},
            "output": {"name": "logits", "shape": [None, None], "dtype": "float32"},
            "quantization": {"scheme": schemes[precision], "input": None, "output": None}
            if precision in schemes else None,
            "compute_precision": "float16" if precision == "fp16" else "float32",
            "min_runtime": dict(DEPLOYMENT_OS[MIN_DEPLOYMENT]),
            "tool_versions": {"coremltools": ct.__version__, "minimum_deployment_target": MIN_DEPLOYMENT}}


def reference_session(path):
    """Off macOS: a Session that evaluates the saved ML program with numpy (check `numpy-mil`)."""
    from kd2edge.export.mil_eval import evaluate_program, load_program
    from kd2edge.runtimes import Session

    ct = require("coremltools", "export")
    program = load_program(path)

    def run(x):
        return evaluate_program(program, {"pixels": x})["logits"]

    return Session("numpy-mil", ct.__version__, None, "pixels", [None, None, None, None], np.dtype(np.float32),
                   "logits", np.dtype(np.float32), run)


def embed_metadata(path, meta: dict) -> None:
    """Write author/version/description and the whole meta as user_defined_metadata into the package."""
    ct = require("coremltools", "export")
    model = ct.models.MLModel(str(path), skip_model_load=True)
    model.short_description = f"kd2edge {meta['name']}: raw pixels 0..255 NHWC -> logits"
    model.version = str(meta["format_version"])
    model.user_defined_metadata["kd2edge"] = json.dumps(meta, default=str)
    model.user_defined_metadata["classes"] = json.dumps(meta.get("classes"))
    path = Path(path)
    tmp = path.parent / f".meta-{path.name}"  # coremltools insists on the .mlpackage suffix
    model.save(str(tmp))
    shutil.rmtree(path)
    tmp.rename(path)
