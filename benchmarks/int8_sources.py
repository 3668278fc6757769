"""Issue 14: where does a student's int8 error come from -- weights or activations, and which layer?

Simulated int8 in PyTorch, in the targets' scheme: BatchNorms folded, conv/linear weights per output channel
symmetric (round to nearest, scale = max|w| / 127), and the input of every conv/linear layer quantized to 8 bits
per tensor (asymmetric MinMax over the same 256 training images `kd2edge export` calibrates on). Each row turns
some of that on and reports, on all 10,000 CIFAR-10 test images, top-1, agreement with the fp32 student and the
logit SQNR (class-centred, as benchmarks/int8_flips.py). The simulation leaves out what a converter adds (ONNX
quantizes the logits too; TFLite uses histogram ranges), so compare its rows with each other, and its "all" row
with the real artifacts (benchmarks/export.md). `--adaround` adds the rows for learned rounding
(kd2edge.export.rounding) of the weights.

    .venv/bin/python benchmarks/int8_sources.py CKPT [--arch A] [--per-layer] [--adaround] [--tag T]

JSON + a markdown table -> benchmarks/results/int8_sources[-TAG].{json,md}. No timing here.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from int8_flips import sqnr_db  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--arch")
    ap.add_argument("--data-dir")
    ap.add_argument("--per-layer", action="store_true", help="one layer's weights / input at a time, and all but it")
    ap.add_argument("--adaround", action="store_true", help="also learned rounding of the weights")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()

    import torch

    from kd2edge.checkpoint import load_model
    from kd2edge.data import load_dataset
    from kd2edge.export.graph import deployable
    from kd2edge.export.qat import fold_bn
    from kd2edge.export.rounding import DEFAULTS, _run, adaround, grid, layer_order
    from kd2edge.export.stage import calibration_pick

    torch.set_num_threads(2)
    model, info = load_model(args.checkpoint, args.arch)
    prep = info["preprocessing"]
    train = load_dataset("cifar10", "train", args.data_dir)
    test = load_dataset("cifar10", "test", args.data_dir)
    calib = train.x[calibration_pick(train.y, 256)]  # what `kd2edge export` calibrates on by default

    def nchw(x):
        return torch.as_tensor(x).permute(0, 3, 1, 2).float().contiguous()

    xc, xt, y = nchw(calib), nchw(test.x), test.y
    net = deployable(fold_bn(model, "int8_sources"), prep, channels_last=False)
    names = [n for n in dict(layer_order(net, xc)) if n != "normalize"]
    ranges = _run(net, xc, names)

    def weights_rtn(src, only=None):
        out = copy.deepcopy(src)
        for n, m in out.named_modules():
            if n in names and (only is None or n in only):
                scale, ws = grid(m.weight.detach(), 127)
                m.weight.data = torch.round(ws) * scale
        return out

    def logits(m, active):
        box = []
        hook = m.register_forward_hook(lambda mod, i, o: box.append(o.detach()))
        try:
            _run(m, xt, list(active), {n: ranges[n] for n in active}, batch=1000)
        finally:
            hook.remove()
        return torch.cat(box).numpy()

    ref = logits(net, [])
    rows = []

    def row(what, m, active):
        z = logits(m, active)
        rows.append({"what": what, "top1": float((z.argmax(1) == y).mean() * 100),
                     "agreement": float((z.argmax(1) == ref.argmax(1)).mean() * 100), "sqnr_db": sqnr_db(ref, z)})
        r = rows[-1]
        print(f"{what:48s} top-1 {r['top1']:.2f}  agreement {r['agreement']:.2f}  SQNR {r['sqnr_db']:.1f} dB", flush=True)

    q_all = weights_rtn(net)
    row("all int8 (weights + layer inputs)", q_all, names)
    row("weights only", q_all, [])
    row("layer inputs only", net, names)
    if args.per_layer:
        for n in names:
            short = n[len("net."):]
            row(f"weights of {short} only", weights_rtn(net, {n}), [])
            row(f"input of {short} only", net, [n])
        for n in names:
            short = n[len("net."):]
            q = weights_rtn(net, set(names) - {n})
            row(f"all but the weights of {short}", q, names)
            row(f"all but the input of {short}", q_all, [m for m in names if m != n])
    if args.adaround:
        pick = calibration_pick(train.y, DEFAULTS["images"], seed=1)  # as kd2edge export --rounding adaround
        rounded, _ = adaround(model, prep, train.x[pick], 127, range_images=calib)
        a_net = deployable(rounded, prep, channels_last=False)
        row("adaround: all int8", a_net, names)
        row("adaround: weights only", a_net, [])

    out = ROOT / "benchmarks" / "results" / f"int8_sources{'-' + args.tag if args.tag else ''}"
    record = {"checkpoint": str(args.checkpoint), "sha256": info["sha256"], "arch": info["arch"],
              "test_images": int(len(y)), "calibration_images": int(len(calib)), "rows": rows}
    out.with_suffix(".json").write_text(json.dumps(record, indent=2))
    lines = ["| simulated int8 | top-1 | agreement (%) | logit SQNR (dB) |", "|---|---:|---:|---:|"]
    lines += [f"| {r['what']} | {r['top1']:.2f} | {r['agreement']:.2f} | {r['sqnr_db']:.1f} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}.json / .md")


if __name__ == "__main__":
    main()
