#!/usr/bin/env bash
# Device check: `kd2edge bench` from a separate venv holding ONLY `pip install ".[device]"` (no torch),
# on real artifact folders that the main venv exports (ONNX int8 + TFLite int8 of a real CIFAR-10 ResNet-20,
# with resnet56 teacher logits in eval.npz). Also imports a real published benchmark_model log (tests/data).
# Usage: bash ci/device_check.sh   (after setup.sh; ~1-2 min; exits non-zero on any failure)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
MAIN_PY=${MAIN_PY:-$ROOT/.venv/bin/python}
BASE_PY=${PYTHON:-python3}
SHARED=${KD2EDGE_SHARED:-$ROOT/../shared}
STUDENT=$SHARED/weights/cifar10/resnet20-12fca82f.th
TEACHER=$SHARED/weights/cifar10/resnet56-4bfd9763.th
for f in "$STUDENT" "$TEACHER" "$ROOT/data/cifar-10-batches-py/test_batch"; do
  [ -e "$f" ] || { echo "device check: missing $f (run setup.sh; set KD2EDGE_SHARED)" >&2; exit 1; }
done
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kd2edge-device-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
start=$SECONDS

# 1. artifacts from the main venv (torch + converters), in the background while the device venv installs
KD2EDGE_DATA="$ROOT/data" "$MAIN_PY" tests/bench_artifacts.py "$WORK/exports" "$STUDENT" "$TEACHER" \
  --eval-images 100 --precisions int8 >"$WORK/export.log" 2>&1 &
export_pid=$!

# 2. the device venv: only the device extra
"$BASE_PY" -m venv "$WORK/device"
DEV="$WORK/device/bin"
"$DEV/pip" install -q --disable-pip-version-check "$ROOT[device]" >"$WORK/pip.log" 2>&1 || { tail -20 "$WORK/pip.log"; exit 1; }
"$DEV/python" - <<'EOF'
import importlib.util, sys
present = [m for m in ("torch", "torchvision", "litert_torch") if importlib.util.find_spec(m)]
sys.exit(f"device venv has {present}: the device extra must not pull torch" if present else 0)
EOF

wait "$export_pid" || { tail -20 "$WORK/export.log"; echo "device check: export failed" >&2; exit 1; }
ls -d "$WORK"/exports/*-onnx-int8 "$WORK"/exports/*-tflite-int8 >/dev/null
echo "device check: artifacts and device venv ready after $((SECONDS - start)) s"

# 3. kd2edge bench there, from another folder (a device has no checkout)
cd "$WORK"
"$DEV/kd2edge" bench exports/*-onnx-int8 exports/*-tflite-int8 --threads 1 --runs 50 --warmup 5 \
  --out "$WORK/results" --json >"$WORK/bench.json"
"$DEV/kd2edge" bench --import "$ROOT/tests/data/benchmark_model_am62x_xnnpack.log" --device-name "TI AM62x EVM" \
  --out "$WORK/results" >/dev/null
"$DEV/python" - "$WORK" <<'EOF'
import csv, json, sys
from pathlib import Path
work = Path(sys.argv[1])
rows = json.loads((work / "bench.json").read_text())
assert [r["runtime"] for r in rows] == ["onnxruntime", "litert"], rows
for r in rows:
    assert r["runs"] == 50 and r["p50_ms"] > 0 and r["top1"] > 85 and r["agree_student"] >= 95, r
    assert r["agree_teacher"] > 85 and "teacher_top1" in r, r
saved = list(csv.DictReader((work / "results" / "bench.csv").read_text().splitlines()))
assert len(saved) == 3 and saved[-1]["source"] == "benchmark_model", saved
for r in rows:
    print(f"  {r['artifact']:<32} {r['runtime']:<12} p50 {r['p50_ms']:.3f} ms  top-1 {r['top1']:.1f}  "
          f"agree student {r['agree_student']:.1f}  agree teacher {r['agree_teacher']:.1f}")
EOF
echo "device check OK: kd2edge bench ran from a torch-free venv (.[device] only) in $((SECONDS - start)) s"
