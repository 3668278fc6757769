#!/usr/bin/env bash
# The bench protocols for the record (issue 12): `--protocol mlperf` (>= 1,024 queries and >= 60 s, p90, accuracy
# gate) on the int8 ONNX and int8 TFLite artifacts of the shared CIFAR-10 ResNet-20, with --profile, then a
# 3-minute `--sustained` run of the int8 TFLite. Prints the machine's ISA and load average around each run;
# rows go to $OUT/results (bench.csv, bench-*.json, sustained-*.png). ~8 min on 2 cores (+ ~3 min export).
# Usage: bash benchmarks/bench_protocol.sh [OUT]   (OUT default: /tmp/kd2edge-bench-protocol; exports reused)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
OUT=${1:-/tmp/kd2edge-bench-protocol}
THREADS=${THREADS:-1}
cd "$ROOT"  # models/ (known teacher names) and data/ are found from the checkout
kd2edge() { "$PY" -m kd2edge "$@"; }
machine() { echo "# $(date -u +%FT%TZ) loadavg: $(cut -d' ' -f1-3 /proc/loadavg); $("$PY" -c 'from kd2edge.bench.fingerprint import fingerprint as f; d = f(); print(d["cpu"], d["cores"], "cores, ISA:", " ".join(d["isa"]))')"; }

if ! ls -d "$OUT"/exports/*-onnx-int8 "$OUT"/exports/*-tflite-int8 >/dev/null 2>&1; then
  kd2edge export cifar10-resnet20 --teacher cifar10-resnet56 -t onnx -t tflite --precision int8 --out "$OUT/exports"
fi
ONNX=$(ls -d "$OUT"/exports/*-onnx-int8 | head -1)
TFL=$(ls -d "$OUT"/exports/*-tflite-int8 | head -1)
machine
kd2edge bench "$ONNX" "$TFL" --threads "$THREADS" --protocol mlperf --profile --out "$OUT/results"
machine
kd2edge bench "$TFL" --threads "$THREADS" --sustained 3 --out "$OUT/results"
machine
