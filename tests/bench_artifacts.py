"""Real artifact folders for the bench tests and ci/device_check.sh (needs torch: run it in the main venv).

ONNX and TFLite artifacts come from `kd2edge.export.export` (the export stage). Where a target of the export
stage fails, a TFLite artifact is built here with the verified converter routes of /work/shared/TOOLCHAIN.md
(litert-torch; PT2E int8 with int8 I/O), following docs/CONTRACTS.md, so the bench is still tested on a
real interpreter and a real int8 model.

    python tests/bench_artifacts.py OUT_DIR STUDENT_TH TEACHER_TH [--eval-images N]
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np


def export_artifacts(out, student, teacher, student_arch="resnet20", teacher_arch="resnet56",
                     eval_images: int = 100, calib_images: int = 32, targets=("onnx", "tflite"),
                     precisions=("fp32", "int8")) -> dict:
    """{artifact folder name: path} for each precision of each target."""
    from kd2edge.export import export

    out = Path(out)
    rows = export(str(student), list(targets), arch=student_arch, out=out, calib_images=calib_images,
                  eval_images=eval_images, teacher=f"{teacher_arch}:{teacher}", precisions=list(precisions),
                  progress=False)
    found = {Path(r["path"]).name: Path(r["path"]) for r in rows if r["status"] == "ok"}
    like = next(iter(found.values()), None)  # any finished artifact of this checkpoint: its eval.npz is reused
    for r in rows:
        if r["status"] != "ok" and r["target"] == "tflite" and like is not None:
            print(f"export of tflite {r['precision']} failed ({r['reason']}); building it here", file=sys.stderr)
            p = build_tflite(like, Path(r["path"]), r["precision"], student, student_arch, calib_images)
            found[p.name] = p
    return found


def build_tflite(like: Path, dest: Path, precision: str, student, arch: str, calib_images: int) -> Path:
    """A TFLite artifact beside `like` (an ONNX artifact of the same checkpoint: its eval.npz is reused)."""
    import litert_torch
    import torch

    from kd2edge.batches import Normalizer
    from kd2edge.checkpoint import load_model
    from kd2edge.data import load_dataset

    model, info = load_model(str(student), arch)
    prep = info["preprocessing"]
    net = torch.nn.Sequential(Normalizer(prep["mean"], prep["std"], channels_last=True), model).eval()
    bundle = dict(np.load(like / "eval.npz"))
    x = torch.as_tensor(bundle["x"][:1]).float()
    tmp = dest.parent / f".{dest.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if precision == "fp32":
        edge = litert_torch.convert(net, (x,))
    else:
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        prepared = prepare_pt2e(torch.export.export(net, (x,)).module(), quantizer)
        calib = load_dataset("cifar10", "train").x[:calib_images]
        with torch.no_grad():
            for img in calib:
                prepared(torch.as_tensor(img[None]).float())
        edge = litert_torch.convert(convert_pt2e(prepared, fold_quantize=False), (x,),
                                    quant_config=QuantConfig(pt2e_quantizer=quantizer))
    edge.export(str(tmp / "model.tflite"))
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(tmp / "model.tflite"))
    i, o = it.get_input_details()[0], it.get_output_details()[0]

    def q(d):
        s, z = d["quantization"]
        return {"scale": float(s), "zero_point": int(z), "dtype": np.dtype(d["dtype"]).name} if s else None

    meta = json.loads((like / "meta.json").read_text())
    meta.update(name=dest.name, target="tflite", runtime="litert", model_file="model.tflite", precision=precision,
                input={"name": i["name"], "shape": [1, 32, 32, 3], "layout": "NHWC",
                       "dtype": np.dtype(i["dtype"]).name, "range": [0, 255]},
                output={"name": o["name"], "shape": [None, int(o["shape"][-1])], "dtype": np.dtype(o["dtype"]).name},
                quantization=None if precision == "fp32" else {
                    "scheme": "PT2E int8 (tests/bench_artifacts.py)", "input": q(i), "output": q(o),
                    "calibration": {"images": calib_images, "source": "cifar10 train"}},
                command="tests/bench_artifacts.py build_tflite")
    meta.pop("parity", None)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    shutil.copy(like / "eval.npz", tmp / "eval.npz")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("student")
    ap.add_argument("teacher")
    ap.add_argument("--eval-images", type=int, default=100)
    ap.add_argument("--targets", default="onnx,tflite")
    ap.add_argument("--precisions", default="fp32,int8")
    a = ap.parse_args()
    made = export_artifacts(a.out, a.student, a.teacher, eval_images=a.eval_images, targets=a.targets.split(","),
                            precisions=a.precisions.split(","))
    for name, path in sorted(made.items()):
        print(path)
    sys.exit(0 if made else 1)
