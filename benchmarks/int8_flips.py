"""Issue 14: which test images does int8 flip, and how much cleaner would int8 have to be for 99.5% agreement?

For a checkpoint and its exported int8 artifacts, on all 10,000 CIFAR-10 test images:
- the fp32 PyTorch logits and each image's top-1 margin (largest logit minus the second);
- per artifact: agreement with fp32, the flipped images' margins, and the logit SQNR (class-centred logits, so
  a shift common to all classes, which changes no prediction, does not count as error);
- the agreement the same logits keep under white Gaussian noise at a given SQNR (5 draws per level): the
  SQNR a quantizer would need, at the logits, for 99.5% agreement if its error were noise of that kind.

    .venv/bin/python benchmarks/int8_flips.py CKPT ARTIFACT_DIR [ARTIFACT_DIR ...] [--tag T]

JSON + a markdown table -> benchmarks/results/int8_flips[-TAG].{json,md}. No timing here.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NOISE_DB = (26, 28, 30, 32, 34, 36, 38, 40, 44)


def centred(z: np.ndarray) -> np.ndarray:
    return z - z.mean(1, keepdims=True)


def sqnr_db(ref: np.ndarray, other: np.ndarray) -> float:
    return float(10 * np.log10((centred(ref) ** 2).sum() / (centred(other - ref) ** 2).sum()))


def noise_agreement(f: np.ndarray, db: float, rng, draws: int = 5) -> float:
    sigma = np.sqrt((centred(f) ** 2).mean()) * 10 ** (-db / 20)
    return float(np.mean([(f + rng.normal(0, sigma, f.shape)).argmax(1) == f.argmax(1) for _ in range(draws)]) * 100)


def artifact_logits(folder: Path, x: np.ndarray) -> tuple[np.ndarray, dict]:
    from kd2edge.runtimes import load_session

    meta = json.loads((folder / "meta.json").read_text())
    model = next(p for p in (folder / "model.onnx", folder / "model.tflite") if p.exists())
    runtime = "onnxruntime" if model.suffix == ".onnx" else "litert"
    return load_session(runtime, model, 2, meta).predict(x), meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("artifacts", nargs="+", type=Path)
    ap.add_argument("--data-dir", default=os.environ.get("KD2EDGE_DATA", str(ROOT / "data")))
    ap.add_argument("--tag", default="")
    a = ap.parse_args()

    import torch

    from kd2edge.batches import Normalizer
    from kd2edge.checkpoint import load_model
    from kd2edge.data import load_dataset
    from kd2edge.distill.loop import predict_logits

    model, info = load_model(a.checkpoint)
    pre = info["preprocessing"]
    test = load_dataset("cifar10", "test", a.data_dir)
    f = predict_logits(model, Normalizer(pre["mean"], pre["std"], channels_last=True),
                       torch.from_numpy(test.x)).numpy().astype(np.float64)
    top2 = np.sort(f, 1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    rng = np.random.default_rng(0)
    out = {"checkpoint": a.checkpoint, "n": len(f), "fp32_top1": float((f.argmax(1) == test.y).mean() * 100),
           "margin_quantiles": {q: float(np.quantile(margin, q)) for q in (0.005, 0.01, 0.05)},
           "noise": {db: noise_agreement(f, db, rng) for db in NOISE_DB}, "artifacts": []}
    for folder in a.artifacts:
        q, meta = artifact_logits(folder, test.x)
        flip = q.argmax(1) != f.argmax(1)
        out["artifacts"].append({
            "artifact": str(folder), "target": meta.get("target"), "precision": meta.get("precision"),
            "agreement": float(100 - flip.mean() * 100), "flips": int(flip.sum()), "sqnr_db": sqnr_db(f, q),
            "top1": float((q.argmax(1) == test.y).mean() * 100),
            "flipped_margin_median": float(np.median(margin[flip])) if flip.any() else None,
            "flipped_margin_max": float(margin[flip].max()) if flip.any() else None,
            "flipped_wrong_in_fp32": int((f.argmax(1)[flip] != test.y[flip]).sum())})

    lines = [f"checkpoint `{a.checkpoint}`, fp32 top-1 {out['fp32_top1']:.2f}%, {out['n']} test images; "
             f"top-1 margin quantiles 0.5/1/5%: " + " / ".join(f"{v:.3f}" for v in out["margin_quantiles"].values()),
             "", "| artifact | top-1 | agreement | flips | flipped, fp32 already wrong | SQNR (dB) | flipped margin median / max |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in out["artifacts"]:
        lines.append(f"| {Path(r['artifact']).name} | {r['top1']:.2f} | {r['agreement']:.2f} | {r['flips']} | "
                     f"{r['flipped_wrong_in_fp32']} | {r['sqnr_db']:.1f} | {r['flipped_margin_median']:.3f} / "
                     f"{r['flipped_margin_max']:.3f} |")
    lines += ["", "| white noise on the fp32 logits, SQNR (dB) | " + " | ".join(str(d) for d in NOISE_DB) + " |",
              "|---|" + "---:|" * len(NOISE_DB),
              "| agreement (%) | " + " | ".join(f"{v:.2f}" for v in out["noise"].values()) + " |"]
    text = "\n".join(lines)
    print(text)
    name = "int8_flips" + (f"-{a.tag}" if a.tag else "")
    results = ROOT / "benchmarks/results"
    (results / f"{name}.json").write_text(json.dumps(out, indent=1))
    (results / f"{name}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
