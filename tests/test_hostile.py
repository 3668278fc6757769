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
    p = subprocess.run([sys.executable, "-m", "kd2edge", *map(str, args)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, cwd=cwd or ROOT,
                       env={**os.environ, "COLUMNS": "250", **(env or {})}, timeout=timeout)
    text = p.stdout.strip()  # stdout and stderr interleaved as a terminal shows them
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


# --- 2. the catalogue: bad inputs through the real CLI -----------------------------------------------------

def _write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def _file(c) -> Path:
    return _write(c["tmp"] / "a_file", "not a folder")


def _partial(c) -> Path:
    _write(c["out"].with_name("out.partial") / "state.pt", b"")
    return c["out"]


def _finished(c) -> Path:
    """A finished run folder trained with method ce (only its config.json and metrics.json matter here)."""
    import json

    from kd2edge.distill import resolve_config

    cfg = resolve_config({"method": "ce", "epochs": 1, "limit_train": 128, "data_dir": str(c["data"]),
                          "out": str(c["out"])})
    _write(c["out"] / "config.json", json.dumps(cfg))
    _write(c["out"] / "metrics.json", "{}")
    return c["out"]


def _images(c, classes: dict) -> Path:
    """An image folder root/train|test/<class>/ with `n` real 32x32 CIFAR-10 test images per class."""
    from PIL import Image

    from kd2edge.data import load_dataset

    x = load_dataset("cifar10", "test", c["data"], limit=8).x
    root = c["tmp"] / "imgs"
    for split in ("train", "test"):
        for name, n in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(x[i]).save(root / split / name / f"{i}.png")
    return root


def _npz(c, y) -> Path:
    path = c["tmp"] / "d.npz"
    np.savez(path, x=np.zeros((len(y), 32, 32, 3), np.uint8), y=np.asarray(y))
    return path


def _run_cfg(text: str):
    return lambda c: _write(c["tmp"] / "run.yaml", f"teacher: {c['t20']}\nteacher_arch: resnet20\n" + text)


D = ["distill", "--method", "ce", "--epochs", "1", "--limit-train", "128"]  # plus --data-dir and --out
CASES = [  # (id, args(c), needles of the last line, exit code); c: tmp, out, data, t20
    ("limit-train-0", lambda c: [*D, "--limit-train", "0"], ["limit_train", ">= 1", "got 0"], 1),
    ("limit-train-neg", lambda c: [*D, "--limit-train", "-5"], ["limit_train", "got -5"], 1),
    ("T-0", lambda c: [*D, "--method", "kd", "--teacher", c["t20"], "--set", "T=0"], ["T must be", "> 0"], 1),
    ("T-neg", lambda c: [*D, "--method", "kd", "--teacher", c["t20"], "--set", "T=-4"], ["T must be", "-4"], 1),
    ("T-schedule-neg", lambda c: [*D, "--method", "kd", "--teacher", c["t20"], "--set",
                                  "T={kind: linear, start: 4, end: -1}"], ["T.end", "> 0"], 1),
    ("lr-nan", lambda c: [*D, "--lr", "nan"], ["lr must be a number > 0", "nan"], 1),
    ("lr-neg", lambda c: [*D, "--lr", "-0.1"], ["lr must be a number > 0", "-0.1"], 1),
    ("lr-abc", lambda c: [*D, "--lr", "abc"], ["invalid value for '--lr'"], 2),
    ("set-lr-abc", lambda c: [*D, "--set", "lr=abc"], ["lr must be a number", "'abc'"], 1),
    ("alpha-2", lambda c: [*D, "--method", "kd", "--teacher", c["t20"], "--set", "alpha=2"],
     ["alpha must be", "[0, 1]", "2"], 1),
    ("epochs-0", lambda c: [*D, "--epochs", "0"], ["epochs must be an integer >= 1"], 1),
    ("batch-size-0", lambda c: [*D, "--batch-size", "0"], ["batch_size must be an integer >= 1"], 1),
    ("momentum-1.5", lambda c: [*D, "--set", "momentum=1.5"], ["momentum", "[0, 1)"], 1),
    ("threads-0", lambda c: [*D, "--set", "threads=0"], ["threads must be a positive integer or auto", "got 0"], 1),
    ("limit-val-0", lambda c: [*D, "--set", "limit_val=0"], ["limit_val"], 1),
    ("dkd-beta-neg", lambda c: [*D, "--method", "dkd", "--teacher", c["t20"], "--set", "beta=-1"], ["beta", ">= 0"], 1),
    ("labeled-0-ce", lambda c: [*D, "--set", "labeled_fraction=0"], ["nothing to learn"], 1),
    ("unknown-key", lambda c: [*D, "--set", "epoch=3"], ["unknown distill config key", "epochs"], 1),
    ("set-no-equals", lambda c: [*D, "--set", "epochs"], ["key=value"], 1),
    ("config-not-utf8", lambda c: [*D, "--config", _write(c["tmp"] / "c.yaml", b"lr: \xff\xfe\n")], ["not UTF-8"], 1),
    ("config-lr-abc", lambda c: [*D, "--config", _write(c["tmp"] / "c.yaml", "lr: abc\n")], ["lr must be", "'abc'"], 1),
    ("config-list", lambda c: [*D, "--config", _write(c["tmp"] / "c.yaml", "- a\n- b\n")], ["must hold a mapping"], 1),
    ("config-bad-yaml", lambda c: [*D, "--config", _write(c["tmp"] / "c.yaml", "a: [\n")], ["not valid YAML"], 1),
    ("config-missing", lambda c: [*D, "--config", c["tmp"] / "none.yaml"], ["not found"], 1),
    ("distill-out-file", lambda c: [*D, "--out", _file(c)], ["is an existing file"], 1),
    ("distill-out-under-file", lambda c: [*D, "--out", _file(c) / "x"], ["lies under", "which is a file"], 1),
    ("unknown-teacher", lambda c: [*D, "--method", "kd", "--teacher", "cifar10-resnet99"],
     ["cifar10-resnet99", "known: cifar10-resnet20"], 1),
    ("partial-kept", lambda c: [*D, "--out", _partial(c)], ["interrupted run (kept)", "--resume", "--overwrite"], 1),
    ("resume-finished-other-method", lambda c: [*D, "--method", "kd", "--teacher", "cifar10-resnet56", "--out",
                                                _finished(c), "--resume"], ["differs in", "method"], 1),
    ("resume-finished-more-epochs", lambda c: [*D, "--epochs", "3", "--out", _finished(c), "--resume"],
     ["differs in epochs"], 1),
    ("eval-num-classes-0", lambda c: ["eval", c["t20"], "--arch", "resnet20", "--num-classes", "0"],
     ["--num-classes must be an integer >= 1"], 1),
    ("eval-out-file", lambda c: ["eval", c["t20"], "--arch", "resnet20", "--out", _file(c)], ["existing file"], 1),
    ("eval-limit-0", lambda c: ["eval", c["t20"], "--arch", "resnet20", "--limit", "0"], ["--limit"], 1),
    ("eval-bracket-name", lambda c: ["eval", c["tmp"] / "student[best].pt"], ["student[best].pt", "not found"], 1),
    ("eval-corrupt-ckpt", lambda c: ["eval", _write(c["tmp"] / "bad.pt", b"\x80\x02junk" * 9), "--arch", "resnet20"],
     ["cannot read checkpoint"], 1),
    ("export-max-drop-neg", lambda c: ["export", c["t20"], "--arch", "resnet20", "--max-drop", "-5"],
     ["--max-drop must be a number >= 0", "-5"], 1),
    ("export-out-file", lambda c: ["export", c["t20"], "--arch", "resnet20", "--out", _file(c)], ["existing file"], 1),
    ("export-missing-ckpt", lambda c: ["export", c["tmp"] / "none.pt"], ["file not found"], 1),
    ("bench-out-file", lambda c: ["bench", c["tmp"] / "no-artifact", "--out", _file(c)], ["existing file"], 1),
    ("bench-threads-0", lambda c: ["bench", c["tmp"], "--threads", "0"], ["--threads must be >= 1"], 1),
    ("bench-batch-0", lambda c: ["bench", c["tmp"], "--batch", "0"], ["--batch"], 1),
    ("bench-seconds-neg", lambda c: ["bench", c["tmp"], "--seconds", "-1"], ["--seconds > 0"], 1),
    ("bench-missing-folder", lambda c: ["bench", c["tmp"] / "nothing"], ["nothing"], 1),
    ("bench-bad-meta", lambda c: ["bench", _write(c["tmp"] / "art" / "meta.json", "{not json").parent],
     ["meta.json"], 1),
    ("bench-corrupt-csv", lambda c: ["bench", c["tmp"] / "nothing", "--out",
                                     _write(c["tmp"] / "res" / "bench.csv", b"\xff\x00garbage").parent],
     ["bench.csv is not a readable bench CSV"], 1),
    ("bench-foreign-csv", lambda c: ["bench", c["tmp"] / "nothing", "--out",
                                     _write(c["tmp"] / "res" / "bench.csv", "a,b\n1,2\n").parent],
     ["not a bench CSV"], 1),
    ("single-class-folder", lambda c: [*D, "--dataset", _images(c, {"cat": 2})], ["1 class folder", "at least 2"], 1),
    ("empty-class-folder", lambda c: [*D, "--dataset", _images(c, {"cat": 2, "dog": 0})], ["dog", "hold no images"], 1),
    ("float-labels", lambda c: ["eval", c["t20"], "--arch", "resnet20", "--dataset", _npz(c, [0.5, 1.7])],
     ["labels y must be integers", "float"], 1),
    ("run-export-list", lambda c: ["run", _run_cfg("export: [onnx]\n")(c)], ["'export' must be a mapping"], 1),
    ("run-bench-threads-0", lambda c: ["run", _run_cfg("bench: {threads: [1, 0]}\n")(c)], ["bench.threads", "got 0"], 1),
    ("run-unknown-target", lambda c: ["run", _run_cfg("export: {targets: [tpu]}\n")(c)], ["export.targets", "tpu"], 1),
    ("run-distill-lr-abc", lambda c: ["run", _run_cfg("distill: {lr: abc}\n")(c)], ["lr must be", "'abc'"], 1),
    ("run-set-epochs-0", lambda c: ["run", _run_cfg("")(c), "--set", "distill.epochs=0"], ["epochs must be"], 1),
    ("run-not-utf8", lambda c: ["run", _write(c["tmp"] / "r.yaml", b"name: \xff\n")], ["not UTF-8"], 1),
    ("run-missing-config", lambda c: ["run", c["tmp"] / "none.yaml"], ["not found"], 1),
    ("zoo-num-classes-0", lambda c: ["zoo", "--num-classes", "0"], ["--num-classes"], 1),
    ("unknown-command", lambda c: ["bogus"], ["no such command"], 2),
]


@pytest.mark.parametrize("make,needles,code", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_catalogue(tmp_path, cifar10_dir, teacher_path, make, needles, code):
    marker = tmp_path / "MARKER"
    c = {"tmp": tmp_path, "out": tmp_path / "out", "data": cifar10_dir, "t20": teacher_path("resnet20")}
    args = [str(a) for a in make(c)]
    if args[0] == "distill":
        args = [*args, "--data-dir", str(cifar10_dir)] + ([] if "--out" in args else ["--out", str(c["out"])])
    before = set(tmp_path.rglob("*"))
    assert_error(args, *needles, code=code, cwd=tmp_path, env={"KD2EDGE_CACHE": str(tmp_path / "cache")})
    made = set(tmp_path.rglob("*")) - before
    assert not made, sorted(map(str, made))  # no output, no run folder, no cache, no report left behind
    assert not marker.exists()
    if (tmp_path / "out.partial").exists():  # an interrupted run is kept, never deleted
        assert (tmp_path / "out.partial" / "state.pt").exists()


def test_catalogue_is_large_enough():
    assert len(CASES) >= 40


# --- 3. silent wrong results, integrity, leftovers ---------------------------------------------------------

def test_non_finite_loss_stops_at_once(tmp_path, cifar10_dir):
    from kd2edge.distill import distill

    out = tmp_path / "nan"
    with pytest.raises(Kd2EdgeError, match=r"training diverged: the loss is (nan|inf) at epoch 1, step \d+; likely"):
        distill({"method": "ce", "student": "resnet8", "student_kwargs": {"width": 8}, "epochs": 2, "lr": 1e30,
                 "limit_train": 256, "limit_val": 100, "batch_size": 64, "latency": False, "progress": False,
                 "data_dir": str(cifar10_dir), "out": str(out)})
    assert not out.exists() and out.with_name("nan.partial").exists()  # nothing saved as a success


def _copy_artifact(src: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(src, dest)
    return dest


def test_bench_verifies_checksums_paths_and_labels(bench_artifacts, tmp_path):
    import json

    src = Path(bench_artifacts["onnx"])
    meta = json.loads((src / "meta.json").read_text())
    assert set(meta["sha256"]) == {"model", "eval"} and len(meta["sha256"]["model"]) == 64
    out = tmp_path / "results"
    flipped = _copy_artifact(src, tmp_path / "flipped")
    data = bytearray((flipped / meta["model_file"]).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (flipped / meta["model_file"]).write_bytes(bytes(data))
    assert_error(["bench", flipped, "--runs", "2", "--out", out], "does not match the sha256", "--no-verify")
    assert not out.exists()
    other = _copy_artifact(src, tmp_path / "other")  # a model file from another export
    (other / meta["model_file"]).write_bytes((Path(bench_artifacts["onnx-int8"]) / meta["model_file"]).read_bytes())
    assert_error(["bench", other, "--runs", "2", "--out", out], "does not match the sha256")
    escape = _copy_artifact(src, tmp_path / "escape")
    (escape / "meta.json").write_text(json.dumps({**meta, "model_file": "../flipped/model.onnx"}))
    assert_error(["bench", escape, "--runs", "2", "--out", out], "leaves the artifact folder")
    labels = _copy_artifact(src, tmp_path / "labels")
    ev = dict(np.load(labels / "eval.npz"))
    np.savez(labels / "eval.npz", **{**ev, "y": ev["y"] + 10})
    assert_error(["bench", labels, "--runs", "2", "--out", out, "--no-verify"], "labels y must be integers in [0, 10)")
    assert not out.exists()
    older = _copy_artifact(src, tmp_path / "older")  # written before checksums: still runs, with a note
    (older / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "sha256"}))
    rc, text, _ = cli("bench", older, "--runs", "2", "--warmup", "1", "--out", out)
    assert rc == 0 and "older artifact format" in text and "Traceback" not in text, text


def test_stale_export_leftovers_are_removed_and_install_is_atomic(tmp_path):
    from kd2edge.artifact import exchange, remove_stale, write_folder

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".student-onnx.tmp-{dead.stdout.strip()}-abc"
    stale.mkdir()
    mine = tmp_path / f".student-tflite.tmp-{os.getpid()}-abc"  # a live export's folder is left alone
    mine.mkdir()
    remove_stale(tmp_path)
    assert not stale.exists() and mine.exists()
    dest = tmp_path / "student-onnx"
    for n in (1, 2):
        assert write_folder(dest, lambda d: (d / "f").write_text(str(n)) and True)
        assert (dest / "f").read_text() == str(n)
    assert sorted(p.name for p in tmp_path.iterdir()) == [mine.name, "student-onnx"]  # no .old / .tmp left
    if sys.platform.startswith("linux"):
        a, b = tmp_path / "a", tmp_path / "b"
        a.mkdir(), b.mkdir()
        (a / "x").write_text("a")
        assert exchange(a, b) and (b / "x").read_text() == "a" and not (a / "x").exists()


def test_finished_run_has_no_temp_files(tmp_path):
    from kd2edge.distill.stage import finish_run_dir

    partial, out = tmp_path / "r.partial", tmp_path / "r"
    partial.mkdir()
    (partial / "state.pt").write_bytes(b"x")
    (partial / ".state.pt.abc123.tmp").write_bytes(b"half")  # a kill between write and rename
    finish_run_dir(partial, out)
    assert sorted(p.name for p in out.iterdir()) == ["state.pt"]


def test_damaged_teacher_cache_is_rebuilt_never_used(tmp_path, cifar10_test, teacher_path, capsys):
    import torch

    from kd2edge.batches import apply_views
    from kd2edge.distill.teacher import load_teacher
    from kd2edge.distill.teacher_cache import TeacherCache

    images = cifar10_test.x[:32]
    teacher = load_teacher(str(teacher_path("resnet20")), "resnet20")
    idx, slot = torch.arange(32), torch.zeros(32, dtype=torch.int64)

    def fresh():
        c = TeacherCache(teacher, images, "cifar10-test32", views_per_image=2, root=tmp_path)
        return c, c.logits(idx, slot, apply_views(torch.from_numpy(images), c.views(idx, slot)))

    cache, good = fresh()
    cache.flush()
    logits = cache.dir / "logits.f16"
    logits.write_bytes(logits.read_bytes()[:100])  # truncated: memmap r+ would zero-fill it
    again, out = fresh()
    assert "teacher cache" in capsys.readouterr().out and again.misses == 32 and torch.equal(out, good)
    assert logits.stat().st_size == 32 * 2 * 10 * 2
    again.flush()
    data = bytearray(logits.read_bytes())  # same size, other bytes (e.g. NaN written by a killed run)
    data[:2] = np.float16(np.nan).tobytes()
    logits.write_bytes(bytes(data))
    third, out = fresh()
    assert "do not match the recorded sha256" in capsys.readouterr().out and torch.equal(out, good)
    third.flush()
    (third.dir / "meta.json").write_text("{broken")
    _, out = fresh()
    assert "unreadable meta.json" in capsys.readouterr().out and torch.equal(out, good)


def test_missing_matplotlib_fails_before_training(tmp_path, cifar10_dir):
    fake = tmp_path / "site" / "matplotlib"
    _write(fake / "__init__.py", "raise ImportError('No module named matplotlib')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])}
    assert_error([*D, "--data-dir", cifar10_dir, "--out", tmp_path / "o"], "pip install 'kd2edge[plot]'", env=env)
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_ctrl_c_prints_resume_hint_and_keeps_the_partial_run(tmp_path, cifar10_dir):
    import signal

    out = tmp_path / "run"
    args = ["distill", "--method", "ce", "--epochs", "50", "--limit-train", "256", "--batch-size", "64",
            "--data-dir", str(cifar10_dir), "--out", str(out)]
    # a shell that starts the tests in the background (`cmd &` without job control) makes them ignore SIGINT, and
    # Python then installs no KeyboardInterrupt handler: give the child the default disposition a terminal has
    p = subprocess.Popen([sys.executable, "-m", "kd2edge", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, cwd=tmp_path, env={**os.environ, "COLUMNS": "250"},
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    for line in p.stdout:
        lines.append(line)
        if line.startswith("epoch 1:"):
            p.send_signal(signal.SIGINT)
            break
    lines += p.stdout.readlines()
    assert p.wait() == 130
    text = "".join(lines)
    assert "Traceback" not in text and lines[-1].startswith("error: interrupted") and "--resume" in lines[-1], text
    assert (tmp_path / "run.partial" / "state.pt").exists() and not out.exists()
    assert_error(args, "interrupted run (kept)", cwd=tmp_path)  # the same command again: kept, not deleted
    assert (tmp_path / "run.partial" / "state.pt").exists()
