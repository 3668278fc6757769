"""Hostile input and faults through the real CLI (subprocess): no code runs from a file, no silent wrong
result, no traceback, nothing left behind. Malicious files are built here, never committed."""
from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kd2edge import Kd2EdgeError

ROOT = Path(__file__).resolve().parents[1]


class Evil:
    """Unpickling this runs `touch marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def cli(*args, cwd=None, env=None, timeout=300):
    """`python -m kd2edge ARGS` -> (exit code, combined output, last line)."""
    p = subprocess.run([sys.executable, "-m", "kd2edge", *map(str, args)], capture_output=True, text=True,
                       cwd=cwd or ROOT, env={**os.environ, "COLUMNS": "250", **(env or {})}, timeout=timeout)
    text = (p.stdout + p.stderr).strip()
    lines = text.splitlines()
    return p.returncode, text, lines[-1] if lines else ""


def assert_error(args, *needles, code=1, **kw) -> str:
    rc, text, last = cli(*args, **kw)
    assert "Traceback" not in text, text
    assert rc == code, text
    assert last.startswith("error: "), text
    for n in needles:
        assert n.lower() in last.lower(), (n, last)
    return last


# --- 1. no code runs from a file -------------------------------------------------------------------------

def py2_cifar_batch(n: int = 4) -> bytes:
    """A batch pickled as the official CIFAR-10 files are (Python 2, protocol 2, str keys read as bytes,
    numpy.core.multiarray._reconstruct)."""
    def s(b: bytes) -> bytes:  # SHORT_BINSTRING / BINSTRING: a Python 2 str
        return (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<i", len(b))) + b

    data = np.arange(n * 3072, dtype=np.uint8).tobytes()
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + s(b"b") + b"\x87R"
             + b"(K\x01K" + bytes([n]) + b"M\x00\x0c\x86cnumpy\ndtype\n" + s(b"u1") + b"K\x00K\x01\x87R"
             + b"(K\x03" + s(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89" + s(data) + b"tb")
    labels = b"](" + b"".join(b"K" + bytes([i % 10]) for i in range(n)) + b"e"
    return (b"\x80\x02}(" + s(b"batch_label") + s(b"testing batch 1 of 1") + s(b"labels") + labels
            + s(b"data") + array + b"u.")


def test_cifar_reader_loads_official_and_materialized_formats(tmp_path, cifar10_dir):
    from kd2edge.data import _unpickle, load_dataset

    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    (d / "test_batch").write_bytes(py2_cifar_batch())
    ds = load_dataset("cifar10", "test", tmp_path)
    assert ds.x.shape == (4, 32, 32, 3) and ds.y.tolist() == [0, 1, 2, 3]
    assert ds.x[0, 0, 0, 0] == 0 and ds.x[0, 0, 1, 0] == 1  # channel-major rows, as the official files
    for proto in (2, 4, 5):  # bytes keys, numpy._core names, protocol-5 _frombuffer
        (d / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]},
                                                    protocol=proto) if proto > 2 else py2_cifar_batch(2))
        assert load_dataset("cifar10", "test", tmp_path).y.tolist() in ([1, 2], [0, 1])
    real = load_dataset("cifar10", "test", cifar10_dir)  # the materialized files in ./data
    assert len(real) == 10000 and real.classes[0] == "airplane"
    assert set(_unpickle(cifar10_dir / "cifar-10-batches-py" / "batches.meta")) >= {"label_names"}


@pytest.mark.parametrize("where", ["test_batch", "batches.meta", "inside"])
def test_malicious_cifar_batch_never_runs(tmp_path, where):
    from kd2edge.data import load_dataset

    marker = tmp_path / "MARKER"
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    good = {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}
    (d / "test_batch").write_bytes(pickle.dumps(good))
    if where == "inside":  # hidden in a list inside an otherwise valid batch
        (d / "test_batch").write_bytes(pickle.dumps({**good, "filenames": [b"a.png", Evil(marker)]}))
    else:
        (d / where).write_bytes(pickle.dumps({"label_names": Evil(marker)} if where == "batches.meta" else Evil(marker)))
    with pytest.raises(Kd2EdgeError, match="contains code or objects a CIFAR batch must not .*posix.system"):
        load_dataset("cifar10", "test", tmp_path)
    assert not marker.exists()


def test_malicious_cifar_batch_through_cli(tmp_path, teacher_path):
    marker = tmp_path / "MARKER"
    d = tmp_path / "evil" / "cifar-10-batches-py"
    d.mkdir(parents=True)
    (d / "test_batch").write_bytes(pickle.dumps(Evil(marker)))
    assert_error(["eval", teacher_path("resnet20"), "--arch", "resnet20", "--data-dir", d.parent, "--out",
                  tmp_path / "o"], "contains code or objects")
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_malicious_resume_state_never_runs(tmp_path, cifar10_dir):
    """A planted <out>.partial/state.pt: `--resume` (and `kd2edge run`, which always resumes) refuses it."""
    import torch

    marker = tmp_path / "MARKER"
    out = tmp_path / "run"
    partial = tmp_path / "run.partial"
    partial.mkdir()
    torch.save({"student": {}, "epoch": 1, "payload": Evil(marker)}, partial / "state.pt")
    last = assert_error(["distill", "--method", "ce", "--epochs", "1", "--limit-train", "128", "--data-dir",
                         cifar10_dir, "--out", out, "--resume"], "contains code or objects a resume state must not",
                        "GLOBAL posix.system", "--overwrite")
    assert "weights_only" not in last
    assert not marker.exists() and not out.exists()
    (partial / "state.pt").write_bytes((partial / "state.pt").read_bytes()[:200])  # truncated
    assert_error(["distill", "--method", "ce", "--epochs", "1", "--limit-train", "128", "--data-dir", cifar10_dir,
                  "--out", out, "--resume"], "cannot read resume state", "truncated")


def test_malicious_checkpoint_refusal_is_plain(tmp_path):
    import torch

    marker = tmp_path / "MARKER"
    ckpt = tmp_path / "student[best].pt"
    torch.save({"state_dict": {}, "x": Evil(marker)}, ckpt)
    last = assert_error(["eval", ckpt, "--arch", "resnet8", "--out", tmp_path / "o"],
                        "contains code or objects a checkpoint must not", "student[best].pt")
    assert "weights_only" not in last and not marker.exists()
    last = assert_error(["distill", "--teacher", "cifar10-resnet99", "--out", tmp_path / "d"],
                        "cifar10-resnet99", "known: cifar10-resnet20")
