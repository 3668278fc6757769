"""Any teacher, correctly (issue 17): input contracts for foreign TorchScript and ONNX teachers built here from
the shared resnet20 (takes [0, 1] NCHW, normalization inside), the sanity gate, cache keys per contract, one
top-1 rule everywhere, and dataset honesty (.npz hold-out, class matching)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kd2edge import Kd2EdgeError
from kd2edge.batches import normalize
from kd2edge.input_contract import PRESETS, apply_contract, parse_contract
from kd2edge.metrics import (agreement, classification_report, predict_top1, predict_topk, tied_top1,
                             topk_accuracy)

ROOT = Path(__file__).resolve().parents[1]
N_EVAL = 1000


def kd2edge(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "kd2edge", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def foreign(tmp_path_factory, teacher_path, cifar10_test):
    """The wrapped resnet20 as TorchScript and ONNX, and its true top-1 on the first 1,000 test images."""
    import foreign_teachers

    made = foreign_teachers.build(tmp_path_factory.mktemp("foreign"), teacher_path("resnet20"))
    x, y = cifar10_test.x[:N_EVAL], cifar10_test.y[:N_EVAL]
    made["top1"] = topk_accuracy(foreign_teachers.true_logits(made["model"], x), y)
    made["val_top1_500"] = topk_accuracy(foreign_teachers.true_logits(made["model"], x[:500]), y[:500])
    return made


# ---------------------------------------------------------------- contracts
def test_presets_and_explicit_values_parse_to_one_form():
    assert parse_contract("unit")["std"] == [1.0] * 3 and parse_contract("raw255")["std"] == [1 / 255] * 3
    assert parse_contract("imagenet")["mean"] == PRESETS["imagenet"]["mean"]
    c = parse_contract("range=255,mean=123.675,116.28,103.53,std=58.395,57.12,57.375,layout=NHWC,order=BGR")
    assert c["layout"] == "NHWC" and c["channel_order"] == "BGR"
    assert c["mean"] == pytest.approx(PRESETS["imagenet"]["mean"], abs=1e-6)
    assert parse_contract({"mean": [0.5] * 3, "std": [0.5] * 3}) == parse_contract("mean=0.5,std=0.5")  # old key form
    assert parse_contract("preset=cifar10,layout=NHWC")["mean"] == PRESETS["cifar10"]["mean"]
    for bad, msg in (("ycbcr", "unknown input contract 'ycbcr'"), ("range=7", "range must be 1"),
                     ("layout=CHW", "layout must be one of"), ("gamma=2", "unknown input contract key")):
        with pytest.raises(Kd2EdgeError, match=msg):
            parse_contract(bad)


def test_numpy_and_torch_apply_a_contract_bit_for_bit():
    x = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    for spec in ("unit", "imagenet", "raw255", "preset=cifar10,layout=NHWC,order=BGR"):
        c = parse_contract(spec)
        np.testing.assert_array_equal(apply_contract(x, c), normalize(x, c).numpy())
    bgr = apply_contract(x, parse_contract("layout=NHWC,order=BGR"))
    np.testing.assert_array_equal(bgr, x[..., ::-1].astype(np.float32) / 255)


# ---------------------------------------------------------------- eval of foreign files
@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
def test_eval_foreign_teacher_with_the_right_input_reproduces_its_accuracy(foreign, cifar10_dir, tmp_path, kind):
    args = ["eval", str(foreign[kind]), "--data-dir", str(cifar10_dir), "--limit", str(N_EVAL), "--no-latency",
            "--json", "--out", str(tmp_path / "ev")]
    p = kd2edge(*args, "--input", "unit")
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(p.stdout)
    assert r["top1"] == foreign["top1"] and r["n"] == N_EVAL and foreign["top1"] > 85
    assert "input contract unit (NCHW RGB, [0,1] pixels" in p.stderr and "given by --input" in p.stderr
    wrong = kd2edge(*args)  # no record in the file: a guess (ImageNet / raw pixels), said in one line, and a warning
    assert wrong.returncode == 0
    assert json.loads(wrong.stdout)["top1"] < 30
    guess = {"torchscript": "assumed ImageNet normalization", "onnx": "assumed raw 0..255 pixels"}[kind]
    assert guess in wrong.stderr and "warning: top-1" in wrong.stderr


# ---------------------------------------------------------------- distill: gate, flag, provenance, cache
def _distill(foreign, cifar10_dir, tmp_path, kind, *extra, out="run"):
    return kd2edge("distill", "--teacher", str(foreign[kind]), "--student", "resnet8", "--epochs", "1",
                   "--limit-train", "256", "--batch-size", "128", "--data-dir", str(cifar10_dir),
                   "--set", "limit_val=500", "--set", "latency=false", "--set", "progress=false",
                   "--set", f"cache_dir={tmp_path / 'cache'}", "--out", str(tmp_path / out), "--json", *extra)


@pytest.mark.parametrize("kind", ["torchscript", "onnx"])
def test_distill_gate_stops_a_wrongly_fed_teacher_and_the_flag_fixes_it(foreign, cifar10_dir, tmp_path, kind):
    p = _distill(foreign, cifar10_dir, tmp_path, kind)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    err = [ln for ln in p.stdout.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "teacher top-1 is" in err[0] and "--teacher-input" in err[0]
    assert "--no-teacher-check" in err[0] and ("assumed ImageNet" if kind == "torchscript" else "assumed raw") in err[0]
    assert not (tmp_path / "cache").exists()  # stopped before building a cache
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()

    ok = _distill(foreign, cifar10_dir, tmp_path, kind, "--teacher-input", "unit")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    r = json.loads(ok.stdout[ok.stdout.index("{"):])
    assert r["metrics"]["teacher"]["top1"] == foreign["val_top1_500"]
    assert "teacher input contract unit (NCHW RGB, [0,1] pixels" in ok.stderr and "given by --teacher-input" in ok.stderr
    ckpt = torch.load(Path(r["checkpoint"]), weights_only=True)
    t = ckpt["provenance"]["teacher"]
    assert t["input"]["name"] == "unit" and "given by --teacher-input" in t["input_why"]

    # --no-teacher-check trains anyway, and its cache is not the one of the right contract
    forced = _distill(foreign, cifar10_dir, tmp_path, kind, "--no-teacher-check", out="forced")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    f = json.loads(forced.stdout[forced.stdout.index("{"):])
    assert f["metrics"]["cache"]["key"] != r["metrics"]["cache"]["key"]
    assert f["metrics"]["teacher"]["top1"] < 30


def test_cache_key_holds_file_contract_precision_and_probe(foreign):
    from kd2edge.distill.teacher import load_teacher

    unit = load_teacher(str(foreign["torchscript"]), contract="unit")
    imagenet = load_teacher(str(foreign["torchscript"]))
    assert unit.cache_spec["input"] != imagenet.cache_spec["input"] and unit.cache_id != imagenet.cache_id
    assert set(unit.cache_spec) == {"sha256", "precision", "input"}
    assert load_teacher(str(foreign["torchscript"]), bf16=True, contract="unit").cache_id != unit.cache_id
    onnx = load_teacher(str(foreign["onnx"]), contract="unit")
    assert onnx.cache_id not in (unit.cache_id, imagenet.cache_id)
    unit.set_head(torch.nn.Linear(64, 10))
    assert "head" in unit.cache_spec and unit.features_id != unit.cache_id


# ---------------------------------------------------------------- one top-1 everywhere
def test_ties_are_broken_the_same_way_everywhere():
    from kd2edge.bench.stage import drift
    from kd2edge.export.verify import parity

    logits = np.array([[1, 3, 3, 0], [2, 2, 2, 2], [0, 1, 5, 5], [4, 0, 0, 1]], dtype=np.float32)
    y = np.array([2, 0, 3, 0])
    assert predict_top1(logits).tolist() == [1, 0, 2, 0]  # the first of the tied maxima
    assert tied_top1(logits) == 3
    assert topk_accuracy(logits, y) == 50.0
    report = classification_report(logits, y)
    assert np.trace(np.asarray(report["confusion_matrix"])) / len(y) * 100 == report["top1"] == 50.0
    assert report["tied_top1"] == 3
    ref = np.array([[0, 9, 0, 0], [9, 0, 0, 0], [0, 0, 9, 0], [9, 0, 0, 0]], dtype=np.float32)
    assert agreement(logits, ref) == 100.0
    par = parity(logits, ref, y, "int8", "runtime", max_drop=100)
    assert par["top1"] == 50.0 and par["tied_top1"] == 3 and par["agreement"] == 100.0
    d = drift(logits, y, ref)
    assert d["top1"] == 50.0 and d["tied_top1"] == 3 and d["delta_student"] == 0.0
    assert predict_topk(logits, 2).tolist() == [[1, 2], [0, 1], [2, 3], [0, 3]]  # ties: lower index first
    assert topk_accuracy(logits, y, 2) == 100.0


def test_int8_artifact_ties_reported_and_eval_of_artifact_folders(bench_artifacts, cifar10_dir):
    """An int8 artifact's tied top logits are counted in meta.json parity; `kd2edge eval` runs artifact
    folders and gets the same top-1 as export verification on the same images."""
    from kd2edge.bench.stage import bench_one
    from kd2edge.artifact import read_folder
    from kd2edge.evaluate import evaluate

    for key in ("onnx", "onnx-int8"):
        meta = json.loads((bench_artifacts[key] / "meta.json").read_text())
        par = meta["parity"]
        assert "tied_top1" in par and par["tied_top1"] >= 0
        r = evaluate(str(bench_artifacts[key]), dataset="cifar10", data_dir=cifar10_dir, limit=par["n"],
                     latency=False)
        assert r["top1"] == par["top1"] and r["tied_top1"] == par["tied_top1"]
        row = bench_one(read_folder(bench_artifacts[key]), 1, runs=2, warmup=0)
        assert row["top1"] == par["top1"] and row["tied_top1"] == par["tied_top1"]
    with pytest.raises(Kd2EdgeError, match="artifact folder: its input is fixed"):
        evaluate(str(bench_artifacts["onnx"]), dataset="cifar10", data_dir=cifar10_dir, limit=10, contract="unit")


# ---------------------------------------------------------------- dataset honesty
def test_npz_without_split_holds_out_the_last_tenth_of_each_class(tmp_path, capfd):
    from kd2edge.data import load_dataset

    x = np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1).repeat(4, 1).repeat(4, 2).repeat(3, 3)
    y = np.arange(40) % 2
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    test = load_dataset(str(tmp_path / "xy.npz"), "test")
    train = load_dataset(str(tmp_path / "xy.npz"), "train")
    assert len(test) == 4 and len(train) == 36
    assert sorted(test.x[:, 0, 0, 0].tolist()) == [36, 37, 38, 39]  # the last 2 of each class
    assert not set(test.x[:, 0, 0, 0]) & set(train.x[:, 0, 0, 0])
    err = capfd.readouterr().err
    assert err.count("has no x_train/x_test split") == 1 and "(4 images) is the test split" in err


def test_unnamed_classes_are_refused_unless_matched_by_index(tmp_path, capfd):
    from kd2edge.checkpoint import preprocessing, save_checkpoint
    from kd2edge.data import STATS
    from kd2edge.evaluate import evaluate
    from kd2edge.zoo import create_model

    torch.manual_seed(0)
    m = create_model("plaincnn", 3, width=4).eval()
    path = save_checkpoint(tmp_path / "m.pt", m, arch="plaincnn", arch_kwargs={"width": 4}, classes=["a", "b", "c"],
                           preprocess=preprocessing(**STATS["cifar10"]), provenance={"dataset": "cifar10"})
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "d.npz", x_test=rng.integers(0, 256, (9, 32, 32, 3), dtype=np.uint8), y_test=np.arange(9) % 3)
    with pytest.raises(Kd2EdgeError, match="cannot be matched by name.*--match-classes index"):
        evaluate(path, dataset=str(tmp_path / "d.npz"), latency=False)
    r = evaluate(path, dataset=str(tmp_path / "d.npz"), latency=False, match="index")
    assert r["classes"] == ["a", "b", "c"] and r["n"] == 9
    assert "--match-classes index: label i of d is taken as" in capfd.readouterr().err
