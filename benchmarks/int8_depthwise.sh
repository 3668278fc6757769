#!/usr/bin/env bash
# Issue 14 item 4 + the --keep-float study: a depthwise student (mobilenetv2, width_mult 0.5) distilled from the
# shared resnet56, exported fp32 + int8 (ONNX, TFLite; PTQ, QAT, --keep-float) and verified on ALL 10,000 test
# images, its int8 TFLite benched. One step per call so each can run when the CPU is free:
#   bash benchmarks/int8_depthwise.sh distill|ptq|bench|qat|keepfloat [extra args]
# Every step appends its command, UTC start/end, wall seconds, load average and CPU ISA to
# benchmarks/results/int8_depthwise/steps.log; JSON rows go beside it. Artifacts: exports/int8dw/ (git-ignored).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
KD="${KD:-$ROOT/.venv/bin/kd2edge}"
RES="$ROOT/benchmarks/results/int8_depthwise"
RUN="${RUN:-runs/distill/mbv2-kd-r56}"
CKPT="$RUN/student.pt"
OUT="exports/int8dw"
BUDGET="${BUDGET:-15m}"
QAT_EPOCHS="${QAT_EPOCHS:-0.1}"
mkdir -p "$RES" "$OUT"
isa() { lscpu | grep -o 'avx512[a-z_0-9]*\|avx2\|amx[a-z_0-9]*' | sort -u | tr '\n' ' '; }
kd() { nice -n 19 "$KD" "$@"; }
step() {  # step NAME JSON_OUT command...
  local name="$1" json="$2"; shift 2
  local t0 l0; t0=$(date +%s); l0=$(cut -d' ' -f1-3 /proc/loadavg)
  echo "[$name] $(date -u +%FT%TZ) load $l0 isa $(isa) :: $*" >> "$RES/steps.log"
  if [ -n "$json" ]; then "$@" > "$json.tmp" && mv "$json.tmp" "$json"; else "$@"; fi
  echo "[$name] done $(date -u +%FT%TZ) wall $(( $(date +%s) - t0 )) s load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$RES/steps.log"
}
case "${1:-}" in
  distill)
    step distill "$RES/distill_stdout.txt" kd distill --teacher cifar10-resnet56 --student mobilenetv2 --time-budget "$BUDGET" --out "$RUN" \
      --json ;;
  ptq)  # fp32 + int8 PTQ, ONNX and TFLite, all 10,000 test images
    step ptq "$RES/ptq.json" kd export "$CKPT" -t onnx -t tflite --int8 --eval-images 10000 \
      --out "$OUT/ptq" --json ;;
  bench)  # the int8 (and fp32) TFLite at 1 and 2 threads
    step bench "$RES/bench.json" kd bench "$OUT/ptq/student-tflite-int8" "$OUT/ptq/student-tflite" \
      "$OUT/ptq/student-onnx-int8" "$OUT/ptq/student-onnx" --threads 1 --threads 2 --out "$RES/bench" --json ;;
  qat)  # KD-aware QAT, self-distilled (the fp32 student is the teacher), int8 ONNX + TFLite
    step qat "$RES/qat.json" kd export "$CKPT" -t onnx -t tflite --precision int8 --qat-epochs "$QAT_EPOCHS" \
      --teacher "$CKPT" --eval-images 10000 --out "$OUT/qat" --json ;;
  keepfloat)  # int8 PTQ with layers kept float: keepfloat TAG CHECKPOINT [export flags: -t, --arch, --keep-float]
    tag="$2"; ck="$3"; shift 3
    step "keepfloat-$tag" "$RES/keepfloat-$tag.json" kd export "$ck" --precision int8 "$@" --eval-images 10000 \
      --out "$OUT/keepfloat-$tag" --json ;;
  *) echo "usage: bash benchmarks/int8_depthwise.sh distill|ptq|bench|qat|keepfloat" >&2; exit 2 ;;
esac
