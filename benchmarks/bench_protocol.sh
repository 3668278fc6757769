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
SHARED=${KD2EDGE_SHARED:-$ROOT/../shared}
THREADS=${THREADS:-1}
kd2edge() { "$PY" -m kd2edge "$@"; }
machine() { echo "# $(date -u +%FT%TZ) loadavg: $(cut -d' ' -f1-3 /proc/loadavg); $("$PY" -c 'from kd2edge.bench.fingerprint import fingerprint as f; d = f(); print(d["cpu"], d["cores"], "cores, ISA:", " ".join(d["isa"]))')"; }

ONNX=$OUT/exports/resnet20-12fca82f-onnx-int8
TFL=$OUT/exports/resnet20-12fca82f-tflite-int8
if [ ! -e "$ONNX/meta.json" ] || [ ! -e "$TFL/meta.json" ]; then
  kd2edge export "$SHARED/weights/cifar10/resnet20-12fca82f.th" --arch resnet20 --teacher cifar10-resnet56 \
    -t onnx -t tflite --precision int8 --out "$OUT/exports"
fi
machine
kd2edge bench "$ONNX" "$TFL" --threads "$THREADS" --protocol mlperf --profile --out "$OUT/results"
machine
kd2edge bench "$TFL" --threads "$THREADS" --sustained 3 --out "$OUT/results"
machine
