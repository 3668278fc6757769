"""Shared fixtures. The real CIFAR-10 and teachers come from ../shared (or $KD2EDGE_SHARED).

Outside CI a test that needs them is skipped when they are missing; in CI (CI=true) it fails.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KD2EDGE_SHARED", ROOT.parent / "shared"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        msg = f"{what} missing at {path} (run setup.sh; see README)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def benchmark_script():
    """load(name): the module of benchmarks/<name>.py (scripts, not a package), loaded once per name."""
    import importlib.util

    loaded = {}

    def load(name: str):
        if name not in loaded:
            spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
            loaded[name] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(loaded[name])
        return loaded[name]

    return load


@pytest.fixture(scope="session")
def cifar10_dir() -> Path:
    """Folder holding cifar-10-batches-py (materialized by setup.sh into ./data)."""
    d = Path(os.environ.get("KD2EDGE_DATA", ROOT / "data"))
    if not (d / "cifar-10-batches-py").exists() and (SHARED / "data/cifar10/materialize.py").exists():
        import subprocess
        import sys

        subprocess.run([sys.executable, str(SHARED / "data/cifar10/materialize.py"), str(d)], check=True,
                       capture_output=True)
    return _need(d / "cifar-10-batches-py", "CIFAR-10").parent


@pytest.fixture(scope="session")
def teacher_path():
    """Path of a shared CIFAR-10 teacher by arch name, e.g. teacher_path('resnet56')."""
    files = {"resnet20": "resnet20-12fca82f.th", "resnet32": "resnet32-d509ac18.th",
             "resnet44": "resnet44-014dd654.th", "resnet56": "resnet56-4bfd9763.th"}

    def get(arch: str) -> Path:
        return _need(SHARED / "weights/cifar10" / files[arch], f"teacher {arch}")

    return get


@pytest.fixture(scope="session")
def cifar100_teacher() -> Path:
    return _need(SHARED / "weights/cifar100/resnet56-cifar100.th", "CIFAR-100 teacher")


@pytest.fixture(scope="session")
def cifar10_test(cifar10_dir):
    from kd2edge.data import load_dataset

    return load_dataset("cifar10", "test", cifar10_dir)


@pytest.fixture(scope="session", autouse=True)
def _env(tmp_path_factory):
    """Keep tests from writing caches into the work tree."""
    os.environ.setdefault("KD2EDGE_CACHE", str(tmp_path_factory.mktemp("cache")))
    os.environ.setdefault("KD2EDGE_RUNS", str(tmp_path_factory.mktemp("runs")))  # default output folders
    yield


@pytest.fixture(scope="session")
def bench_artifacts(tmp_path_factory, cifar10_dir, teacher_path):
    """Real artifact folders (ONNX + TFLite, fp32 + int8) of the resnet20 teacher file used as a student, with
    eval.npz holding 100 CIFAR-10 test images and resnet56 teacher logits (see tests/bench_artifacts.py)."""
    from bench_artifacts import export_artifacts

    os.environ.setdefault("KD2EDGE_DATA", str(cifar10_dir))
    made = export_artifacts(tmp_path_factory.mktemp("exports"), teacher_path("resnet20"), teacher_path("resnet56"))
    return {name.split("-", 2)[2]: p for name, p in made.items()}  # keys: onnx, onnx-int8, tflite, tflite-int8
