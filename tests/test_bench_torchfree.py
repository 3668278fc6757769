"""The device path never imports torch: the whole bench path, run for real with torch made unimportable."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent('''
    import importlib.abc, sys

    BLOCKED = {"torch", "torchvision", "torchao", "litert_torch"}

    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked: the device path must not import torch")
            return None

    sys.meta_path.insert(0, NoTorch())
''')

RUN = BLOCKER + textwrap.dedent('''
    import json
    import kd2edge, kd2edge.cli, kd2edge.bench, kd2edge.bench.reports, kd2edge.bench.fingerprint
    import kd2edge.bench.log_import, kd2edge.runtimes, kd2edge.runtimes.ort, kd2edge.runtimes.litert
    import kd2edge.runtimes.coreml, kd2edge.artifact, kd2edge.metrics, kd2edge.files, kd2edge.data, kd2edge.plots
    import kd2edge.bench.protocols, kd2edge.bench.sustained, kd2edge.bench.profile, kd2edge.bench.sensors
    try:
        import torch  # noqa: F401
        raise SystemExit("torch was importable")
    except ImportError:
        pass
    sys.argv = ["kd2edge", "bench", *sys.argv[1:]]
    kd2edge.cli.main()
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print("LEAKED=" + json.dumps(leaked))
''')


def test_bench_runs_with_torch_unimportable(bench_artifacts, tmp_path):
    arts = [str(bench_artifacts[k]) for k in ("onnx-int8", "tflite-int8")]
    r = subprocess.run([sys.executable, "-c", RUN, *arts, "--threads", "1", "--runs", "20", "--warmup", "2",
                        "--out", str(tmp_path), "--json", "--profile"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out, leaked = r.stdout.rsplit("LEAKED=", 1)
    assert json.loads(leaked) == []
    rows = json.loads(out)
    assert [row["runtime"] for row in rows] == ["onnxruntime", "litert"]
    assert all(row["runs"] == 20 and row["top1"] > 80 and row["agree_teacher"] > 80 for row in rows)
    assert rows[0]["profile"]["by_op"] and rows[1]["profile"]["missing"]  # onnxruntime's profiler, torch-free
    assert (tmp_path / "bench.csv").exists()


def test_blocker_really_blocks_torch():
    r = subprocess.run([sys.executable, "-c", BLOCKER + "import kd2edge.zoo"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0 and "blocked" in r.stderr  # zoo needs torch: the blocker is not a no-op
