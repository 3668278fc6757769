#!/usr/bin/env bash
# One-time setup: a venv with every extra, CIFAR-10 in ./data, teachers in ./models.
# Uses ../shared (this workplace's offline copies) when present, else downloads (needs internet).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".[all]"
SHARED=${KD2EDGE_SHARED:-../shared}
mkdir -p data models
if [ -f "$SHARED/data/cifar10/materialize.py" ]; then
  .venv/bin/python "$SHARED/data/cifar10/materialize.py" data >/dev/null
else
  .venv/bin/python -c "from kd2edge.data import load_dataset; load_dataset('cifar10', 'train', 'data', download=True)"
fi
for d in cifar10 cifar100; do
  if [ -d "$SHARED/weights/$d" ] && [ ! -e "models/$d" ]; then ln -s "$(cd "$SHARED/weights/$d" && pwd)" "models/$d"; fi
done
.venv/bin/python -m kd2edge.pretrained fetch cifar10-resnet56 >/dev/null
echo "setup done: .venv, data/cifar-10-batches-py, models/"
