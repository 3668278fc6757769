"""Real artifact folders for the bench tests and ci/device_check.sh (needs torch: run it in the main venv).

The artifacts come from `kd2edge.export.export` (the export stage) and nowhere else: a target that fails to
export fails the tests that bench it.

    python tests/bench_artifacts.py OUT_DIR STUDENT_TH TEACHER_TH [--eval-images N]
"""
from __future__ import annotations

import sys
from pathlib import Path


def export_artifacts(out, student, teacher, student_arch="resnet20", teacher_arch="resnet56",
                     eval_images: int = 100, calib_images: int = 32, targets=("onnx", "tflite"),
                     precisions=("fp32", "int8")) -> dict:
    """{artifact folder name: path} for each precision of each target; raises when any export fails."""
    from kd2edge.export import export

    rows = export(str(student), list(targets), arch=student_arch, out=Path(out), calib_images=calib_images,
                  eval_images=eval_images, teacher=f"{teacher_arch}:{teacher}", precisions=list(precisions),
                  progress=False)
    failed = [f"{r['target']} {r['precision']}: {r['status']}: {r['reason']}" for r in rows if r["status"] != "ok"]
    if failed:
        raise RuntimeError("export failed: " + "; ".join(failed))
    return {Path(r["path"]).name: Path(r["path"]) for r in rows}


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
