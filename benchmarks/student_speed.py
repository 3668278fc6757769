"""Training speed of zoo students side by side in ONE process on this CPU (issue 11: a student has to learn
much per CPU-second; depthwise nets are few MACs but run far from a CPU's peak).

Each row is `kd2edge distill`'s own training step as the time-budget planner measures it
(`kd2edge.distill.budget.probe_student_rate`: SGD step on real CIFAR-10 training images, batch 256,
channels-last), in bf16 autocast where this CPU has AVX-512 BF16 / AMX (what `amp: auto` picks) and in fp32.
Students are interleaved round by round so a change in machine load hits all alike; the median of the rounds
is reported, with params, MACs and the effective GMAC/s (3 x forward MACs per trained image).

    .venv/bin/python benchmarks/student_speed.py fastcnn shufflenetv2 mobilenetv2 resnet8 --rounds 3
    .venv/bin/python benchmarks/student_speed.py fastcnn 'fastcnn:{"widths": [48, 96, 192]}'   # size knobs as JSON
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("KD2EDGE_DATA", ROOT / "data"))


def _time_budget_module():
    spec = importlib.util.spec_from_file_location("tb", Path(__file__).with_name("time_budget.py"))
    tb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tb)
    return tb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("students", nargs="+", help='zoo names, each optionally with size knobs: NAME:{"knob": value}')
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per row and round (after one warm-up)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--tag", default="student_speed")
    args = ap.parse_args()

    from kd2edge.batches import Normalizer
    from kd2edge.data import STATS, load_dataset
    from kd2edge.distill.budget import probe_student_rate
    from kd2edge.distill.config import bf16_supported
    from kd2edge.files import write_json
    from kd2edge.zoo import count_macs, count_params, create_model

    tb = _time_budget_module()
    train = load_dataset("cifar10", "train", DATA_DIR, limit=args.batch_size)
    x = torch.from_numpy(train.x)
    normalizer = Normalizer(STATS["cifar10"]["mean"], STATS["cifar10"]["std"], channels_last=True)
    precisions = (["bf16"] if bf16_supported() else []) + ["fp32"]
    nets = {}
    for name in args.students:
        arch, sep, knobs = name.partition(":{")  # not tv:<name>'s colon
        torch.manual_seed(0)
        m = create_model(arch, **(json.loads("{" + knobs) if sep else {}))
        nets[name] = {"model": m.to(memory_format=torch.channels_last), "params": count_params(m),
                      "macs": count_macs(m)}
    machine = {**tb.cpu_isa(), "threads": torch.get_num_threads(), "loadavg_before": tb.loadavg()}
    rates = {(n, p): [] for n in nets for p in precisions}
    for r in range(args.rounds):
        for name, net in nets.items():
            for p in precisions:
                ips = probe_student_rate(net["model"], None, normalizer, x, args.batch_size, p == "bf16", "cpu",
                                         10, steps=args.steps)
                rates[(name, p)].append(ips)
                print(f"round {r}: {name[:30]:30s} {p}: {ips:8.0f} img/s", flush=True)
    machine["loadavg_after"] = tb.loadavg()
    rows = []
    for name, net in nets.items():
        row = {"student": name, "params": net["params"], "macs": net["macs"]}
        for p in precisions:
            ips = statistics.median(rates[(name, p)])
            row[f"{p}_img_s"] = round(ips, 1)
            row[f"{p}_img_s_rounds"] = [round(v, 1) for v in rates[(name, p)]]
            row[f"{p}_gmac_s"] = round(3 * net["macs"] * ips / 1e9, 1)
        rows.append(row)
    print(f"\n{'student':30s} {'params':>9s} {'MACs':>7s} " + " ".join(f"{p + ' img/s':>11s} {p + ' GMAC/s':>12s}"
                                                                  for p in precisions))
    for row in rows:
        print(f"{row['student'][:30]:30s} {row['params']:9,d} {row['macs'] / 1e6:6.2f}M " + " ".join(
            f"{row[p + '_img_s']:11,.0f} {row[p + '_gmac_s']:12.1f}" for p in precisions))
    print(f"machine: {machine}")
    out = ROOT / "benchmarks/results" / f"{args.tag}.json"
    write_json(out, {"command": "benchmarks/student_speed.py " + " ".join(args.students) +
                     f" --rounds {args.rounds} --steps {args.steps}", "batch_size": args.batch_size,
                     "machine": machine, "rows": rows, "torch": torch.__version__})  # temp file, then rename
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
