"""`kd2edge eval` on the real shared teachers and CIFAR-10, on image-folder / npz datasets, on TorchScript;
metrics on known arrays."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kd2edge import Kd2EdgeError
from kd2edge.checkpoint import preprocessing, save_checkpoint
from kd2edge.cli import app
from kd2edge.data import STATS
from kd2edge.evaluate import evaluate, predict
from kd2edge.metrics import (agreement, classification_report, confusion_matrix, latency_stats, sqnr_db,
                             topk_accuracy)
from kd2edge.zoo import create_model
from ts_files import save_torchscript


# ---------------------------------------------------------------- the shared teachers through the CLI
@pytest.mark.parametrize("arch,top1", [("resnet20", 91.73), ("resnet56", 93.39)])
def test_cli_eval_reproduces_shared_teacher_accuracy(tmp_path, cifar10_dir, teacher_path, arch, top1):
    out = tmp_path / "ev"
    res = CliRunner().invoke(app, ["eval", str(teacher_path(arch)), "--arch", arch, "--data-dir", str(cifar10_dir),
                                   "--out", str(out), "--no-latency", "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    assert r["n"] == 10_000 and r["source"] == "foreign" and r["dataset"] == "cifar10"
    assert r["top1"] == pytest.approx(top1, abs=0.005)
    assert r["top1"] < r["top5"] <= 100 and "latency_ms_b1" not in r
    assert r["params"] == {"resnet20": 269_722, "resnet56": 853_018}[arch] and r["macs"] > 4e7
    cm = np.asarray(r["confusion_matrix"])
    assert cm.sum() == 10_000 and cm.sum(1).tolist() == [1000] * 10
    assert np.trace(cm) / 100 == pytest.approx(top1, abs=0.005)
    saved = json.loads((out / "eval.json").read_text())
    assert saved["top1"] == r["top1"]
    csv = (out / "eval_confusion.csv").read_text().splitlines()
    assert csv[0].startswith("true\\pred,airplane") and len(csv) == 11
    assert (out / "eval_confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_eval_table_and_latency(tmp_path, cifar10_dir, teacher_path):
    threads_before = torch.get_num_threads()
    res = CliRunner().invoke(app, ["eval", str(teacher_path("resnet20")), "--arch", "resnet20", "--data-dir",
                                   str(cifar10_dir), "--out", str(tmp_path), "--limit", "200", "--threads", "1"])
    assert res.exit_code == 0, res.output
    for text in ("top-1 (%)", "macro F1", "latency b1 (ms)", "throughput b256", "airplane", "269,722"):
        assert text in res.stdout, text
    r = json.loads((tmp_path / "eval.json").read_text())
    assert r["n"] == 200 and r["latency_ms_b1"] > 0 and r["throughput_ips"] > 0 and r["threads"] == 1
    assert torch.get_num_threads() == threads_before  # the caller's thread setting is restored


def test_progress_callbacks_count_every_image_and_run(cifar10_dir, teacher_path):
    seen = {}

    class Bars:  # the kd2edge.progress surface evaluate uses
        def task(self, phase, total, unit=""):
            seen[phase] = [total, 0]
            return SimpleNamespace(advance=lambda n: seen[phase].__setitem__(1, seen[phase][1] + n))

    evaluate(teacher_path("resnet20"), "resnet20", "cifar10", data_dir=cifar10_dir, limit=300, batch_size=128,
             progress=Bars())
    assert seen["predict"] == [300, 300] and seen["latency"][0] == seen["latency"][1] > 0


def test_cifar100_teacher_on_cifar10_is_refused(cifar10_dir, cifar100_teacher):
    with pytest.raises(Kd2EdgeError, match="has 100 classes but dataset cifar10 has 10"):
        evaluate(cifar100_teacher, "resnet56", "cifar10", data_dir=cifar10_dir, limit=10, latency=False)


# ---------------------------------------------------------------- user datasets and TorchScript
def _native(tmp_path, classes, arch="plaincnn", input_size=(3, 32, 32)):
    torch.manual_seed(0)
    m = create_model(arch, len(classes), width=4).eval()
    path = save_checkpoint(tmp_path / "m.pt", m, arch=arch, arch_kwargs={"width": 4}, classes=classes,
                           preprocess=preprocessing(**STATS["cifar10"], input_size=input_size),
                           provenance={"dataset": "cifar10"})
    return m, path


def _folder(root, classes, size=(24, 24), n=3):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / "test" / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / "test" / c / f"{i}.png")


def test_eval_image_folder_resizes_and_follows_checkpoint_class_order(tmp_path):
    from kd2edge.data import load_dataset

    m, path = _native(tmp_path, ["zebra", "ant", "moth"], input_size=(3, 16, 16))
    _folder(tmp_path / "bugs", ["ant", "moth", "zebra"])
    r = evaluate(path, dataset=str(tmp_path / "bugs"), latency=False)
    assert r["classes"] == ["zebra", "ant", "moth"] and r["n"] == 9 and r["input_size"] == [3, 16, 16]
    ds = load_dataset(str(tmp_path / "bugs"), "test", size=16)  # folder order: ant, moth, zebra
    logits = predict(m, ds.x, preprocessing(**STATS["cifar10"]))
    y_in_checkpoint_order = np.asarray([1, 2, 0])[ds.y]
    assert r["top1"] == pytest.approx(float((logits.argmax(1) == y_in_checkpoint_order).mean() * 100))
    assert np.asarray(r["confusion_matrix"]).sum(1).tolist() == [3, 3, 3]


def test_eval_refuses_datasets_with_other_classes(tmp_path):
    _, path = _native(tmp_path, ["a", "b", "c"])
    _folder(tmp_path / "other", ["a", "b", "x"])
    with pytest.raises(Kd2EdgeError, match=r"classes differ .*dataset only \['x'\], checkpoint m.pt only \['c'\]"):
        evaluate(path, dataset=str(tmp_path / "other"), latency=False)
    _folder(tmp_path / "two", ["a", "b"])
    with pytest.raises(Kd2EdgeError, match="has 3 classes but dataset two has 2"):
        evaluate(path, dataset=str(tmp_path / "two"), latency=False)
    np.savez(tmp_path / "big.npz", x=np.zeros((4, 48, 48, 3), np.uint8), y=np.array([0, 1, 2, 0]))
    with pytest.raises(Kd2EdgeError, match="expects 32x32 images but big has 48x48"):
        evaluate(path, dataset=str(tmp_path / "big.npz"), latency=False)


def test_eval_npz_takes_checkpoint_names_and_torchscript(tmp_path):
    m, path = _native(tmp_path, ["a", "b", "c"])
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), np.arange(20) % 3
    np.savez(tmp_path / "d.npz", x_test=x, y_test=y, classes=np.array(["a", "b", "c"]))
    r = evaluate(path, dataset=str(tmp_path / "d.npz"), latency=False)
    assert r["classes"] == ["a", "b", "c"] and r["n"] == 20
    expected = topk_accuracy(predict(m, x, preprocessing(**STATS["cifar10"])), y)
    assert r["top1"] == pytest.approx(expected)
    ts = save_torchscript(tmp_path / "m.ts", m, arch="plaincnn", classes=["a", "b", "c"],
                          preprocess=preprocessing(**STATS["cifar10"]))
    rt = evaluate(ts, dataset=str(tmp_path / "d.npz"), latency=True)
    assert rt["source"] == "torchscript" and rt["top1"] == pytest.approx(expected)
    assert rt["params"] == r["params"] and rt["macs"] == r["macs"] and rt["latency_ms_b1"] > 0


# ---------------------------------------------------------------- metrics on known arrays
def test_metrics_on_known_arrays():
    logits = np.array([[3, 2, 1, 0], [0, 3, 2, 1], [0, 1, 3, 2], [3, 2, 1, 0], [0, 0, 1, 3]], dtype=np.float32)
    y = np.array([0, 2, 2, 3, 3])
    assert topk_accuracy(logits, y, 1) == pytest.approx(60.0)
    assert topk_accuracy(logits, y, 2) == pytest.approx(80.0)
    assert topk_accuracy(logits, y, 9) == 100.0
    cm = confusion_matrix(y, logits.argmax(1), 4)
    assert cm.tolist() == [[1, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0], [1, 0, 0, 1]]
    r = classification_report(logits, y, ["a", "b", "c", "d"])
    assert r["precision"] == pytest.approx([50, 0, 100, 100])
    assert r["recall"] == pytest.approx([100, 0, 50, 50])
    assert r["f1"] == pytest.approx([200 / 3, 0, 200 / 3, 200 / 3])
    assert r["macro_f1"] == pytest.approx(50.0) and r["support"] == [1, 0, 2, 2] and r["n"] == 5
    assert agreement(logits, logits[:, ::-1]) == 0.0 and agreement(logits, logits * 2) == 100.0
    assert sqnr_db(np.ones(4), np.ones(4)) == float("inf")
    assert sqnr_db(np.full(4, 10.0), np.full(4, 11.0)) == pytest.approx(20.0)
    s = latency_stats([0.001, 0.002, 0.003, 0.004])
    assert s["runs"] == 4 and s["p50_ms"] == pytest.approx(2.5) and s["min_ms"] == pytest.approx(1.0)
    assert s["mean_ms"] == pytest.approx(2.5) and s["p90_ms"] == pytest.approx(3.7)


def test_torch_bench_times_each_thread_count_and_restores_threads(teacher_path):
    from kd2edge.evaluate import torch_bench

    before = torch.get_num_threads()
    rows = torch_bench(teacher_path("resnet20"), "resnet20", [1, 2], runs=4, warmup=1)
    assert [r["threads"] for r in rows] == [1, 2] and all(r["runs"] == 4 for r in rows)
    assert all(0 < r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["max_ms"] for r in rows)
    assert torch.get_num_threads() == before
