"""Intermediate tensors ("taps") of an artifact and of its PyTorch student, for `kd2edge diff`.

Artifact side, per runtime, in execution order, as float32 NCHW (4-D) or as is:
- onnxruntime: a copy of the model whose intermediate tensors are extra graph outputs. In a QDQ (int8) graph
  the taps are the DequantizeLinear outputs of activations -- the int8 values the next layer consumes, back
  in float -- plus the float outputs (logits); the float tensors that only feed a QuantizeLinear are not
  taps (the runtime never materializes them). In a float graph every float node output is a tap. Making a
  tensor a graph output keeps onnxruntime from fusing Q/DQ pairs around it, so the int8 arithmetic runs as
  float on dequantized values: equal to the fused integer kernels up to requantization rounding.
- litert: Interpreter(experimental_preserve_all_tensors=True), every op's output tensor after one invoke
  per image (the int8 models have batch 1), dequantized with its scale and zero point, NHWC -> NCHW.

PyTorch side: the student behind its normalization (kd2edge.export.graph.deployable, what every converter
starts from) traced by torch.export; an fx Interpreter records every node's output, named by the module
that called it (node meta nn_module_stack) and the aten op.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np

FLOAT = 1  # onnx.TensorProto.FLOAT


def _onnx_taps(proto):
    """[(tensor name, label)] of the taps of an ONNX graph, in node order."""
    import onnx

    inits = {i.name for i in proto.graph.initializer}
    consts = {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    producer = {o: n for n in proto.graph.node for o in n.output}
    outputs = [o.name for o in proto.graph.output]
    qdq = any(n.op_type == "QuantizeLinear" for n in proto.graph.node)
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.output]}
    taps = []
    for n in proto.graph.node:
        for o in n.output:
            if qdq:
                if n.op_type == "DequantizeLinear" and n.input[0] not in inits | consts:
                    q = producer.get(n.input[0])
                    src = producer.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
                    taps.append((o, f"{src.op_type if src else 'Input'} {q.input[0] if q is not None else o} q8"))
                elif o in outputs:
                    taps.append((o, n.op_type))
            elif types.get(o) == FLOAT and n.op_type not in ("Constant", "DequantizeLinear"):
                taps.append((o, n.op_type))
    return taps


def onnx_runner(model_path):
    """(labels, run): run(x float32 NHWC) -> list of arrays, one per tap."""
    import onnx
    import onnxruntime as ort

    proto = onnx.load(str(model_path))
    taps = _onnx_taps(proto)
    have = {o.name for o in proto.graph.output}
    for name, _ in taps:
        if name not in have:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(name, FLOAT, None))
    with tempfile.TemporaryDirectory() as tmp:  # the session keeps the graph; the copy can go
        path = Path(tmp) / "taps.onnx"
        onnx.save_model(proto, str(path))
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    names = [t[0] for t in taps]

    def run(x):
        return sess.run(names, {in_name: x.astype(np.float32)})

    return [label if label.endswith(" q8") else f"{label} {name}" for name, label in taps], run


def tflite_runner(model_path, session):
    """(labels, run) for a .tflite file; `session` (kd2edge.runtimes) quantizes the input."""
    from kd2edge.runtimes.litert import interpreter_class

    Interpreter = interpreter_class()[0]
    interp = Interpreter(model_path=str(model_path), num_threads=1, experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    details = {d["index"]: d for d in interp.get_tensor_details()}
    in_idx = interp.get_input_details()[0]["index"]
    taps = []
    for op in interp._get_ops_details():
        if op["op_name"] in ("DELEGATE", "QUANTIZE", "DEQUANTIZE"):  # the XNNPACK delegate node repeats the ops
            # it took over; (de)quantize ops only re-encode the tensor before them
            continue
        for t in op["outputs"]:
            d = details.get(int(t))
            if d is not None and np.dtype(d["dtype"]).kind in "fiu" and np.dtype(d["dtype"]) not in (
                    np.dtype(np.int32), np.dtype(np.int64)):
                taps.append((int(t), f"{op['op_name']} {_tflite_name(d['name'])}"))

    def one(img):
        interp.set_tensor(in_idx, session.prepare(img[None]))
        interp.invoke()
        outs = []
        for t, _ in taps:
            a = interp.get_tensor(t)
            q = details[t]["quantization_parameters"]
            if a.dtype.kind in "iu" and len(q["scales"]):
                a = (a.astype(np.float32) - q["zero_points"].reshape(-1)[0]) * q["scales"].reshape(-1)[0]
            a = np.asarray(a, np.float32)
            outs.append(a.transpose(0, 3, 1, 2) if a.ndim == 4 else a)
        return outs

    def run(x):
        per = [one(img) for img in x]
        return [np.concatenate([p[i] for p in per]) for i in range(len(taps))]

    return [label for _, label in taps], run


def _tflite_name(name: str) -> str:
    """litert-torch's tensor name (module classes and attributes) -> the student's module path."""
    last = name.split(";;")[-1].split(";")[0]
    parts = [seg.rsplit("_", 1)[-1] if "." in seg else seg for seg in last.split("/")[1:]]
    path = ".".join(parts[1:] if parts[:1] == ["net"] else parts)
    return path or "student"


def torch_runner(model, preprocessing, sample):
    """(labels, run): run(x float32 NHWC raw pixels) -> every float node output of the PyTorch graph."""
    import torch

    from kd2edge.export.graph import deployable

    net = deployable(model, preprocessing, channels_last=True)
    batch = torch.export.Dim("batch", min=1, max=65536)
    gm = torch.export.export(net, (torch.as_tensor(sample).float(),), dynamic_shapes=({0: batch},)).module()
    nodes = [n for n in gm.graph.nodes if n.op == "call_function"]
    labels = {n.name: _torch_label(n) for n in nodes}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if n.name in labels and isinstance(out, torch.Tensor) and out.is_floating_point() and out.dim() in (2, 4):
                self.seen[n.name] = out.detach().numpy().copy()
            return out

    def run(x):
        rec = Recorder(gm)
        rec.seen = {}
        with torch.no_grad():
            rec.run(torch.as_tensor(x).float())
        return rec.seen

    return labels, run


def _torch_label(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    path = str(list(stack.values())[-1][0]) if stack else ""
    path = re.sub(r"^L\['self'\]\.?", "", path)
    path = path[4:] if path.startswith("net.") else ("<student>" if path == "net" else (path or "<input>"))
    op = getattr(node.target, "__name__", str(node.target)).split(".")[0]
    return f"{path} ({op})"
