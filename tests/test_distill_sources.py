"""Teacher sources (ONNX via onnxruntime, TorchScript), cross-dataset probe, label budget, unlabeled KD."""
import csv
from pathlib import Path

import pytest
import torch

from kd2edge import Kd2EdgeError
from kd2edge.batches import Normalizer
from kd2edge.distill import distill
from kd2edge.distill.teacher import load_teacher

ROOT = Path(__file__).resolve().parents[1]
TINY = {"student": "resnet8", "student_kwargs": {"width": 8}, "limit_train": 256, "limit_val": 300,
        "batch_size": 128, "epochs": 1, "latency": False, "progress": False, "data_dir": str(ROOT / "data")}


class RawPixels(torch.nn.Module):
    """A teacher export as docs/CONTRACTS.md describes: raw NHWC pixels 0..255 in, logits out."""

    def __init__(self, model, prep):
        super().__init__()
        self.norm, self.model = Normalizer(prep["mean"], prep["std"], channels_last=True), model

    def forward(self, x):
        return self.model(self.norm(x))


@pytest.fixture(scope="module")
def r20(teacher_path):
    return load_teacher(str(teacher_path("resnet20")), "resnet20")


@pytest.fixture(scope="module")
def onnx_teacher(tmp_path_factory, r20):
    path = tmp_path_factory.mktemp("onnx") / "resnet20.onnx"
    wrapped = RawPixels(r20.model, r20.info["preprocessing"]).eval()
    torch.onnx.export(wrapped, (torch.zeros(2, 32, 32, 3),), str(path), dynamo=False, input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    return path


def test_onnx_teacher_matches_pytorch_and_distills(tmp_path, cifar10_test, r20, onnx_teacher):
    t = load_teacher(str(onnx_teacher))
    x = torch.from_numpy(cifar10_test.x[:64])
    assert t.num_classes == 10 and t.source == "onnx"
    assert torch.allclose(t.logits(x), r20.logits(x), atol=1e-3)
    r = distill({**TINY, "teacher": str(onnx_teacher), "out": str(tmp_path / "run"), "cache_dir": str(tmp_path / "c")})
    assert r["metrics"]["teacher"]["top1"] > 85
    with pytest.raises(Kd2EdgeError, match="ONNX teacher gives logits only"):
        distill({**TINY, "teacher": str(onnx_teacher), "method": "hybrid", "out": str(tmp_path / "h")})


def test_torchscript_teacher(tmp_path, cifar10_test, r20):
    path = tmp_path / "r20.ts"
    torch.jit.script(r20.model).save(str(path))
    t = load_teacher(str(path))
    x = torch.from_numpy(cifar10_test.x[:32])
    assert t.source == "torchscript" and t.num_classes == 10
    assert torch.allclose(t.logits(x), r20.logits(x), atol=1e-4)


def test_cross_dataset_teacher_with_linear_probe(tmp_path, cifar10_dir, cifar100_teacher):
    r = distill({**TINY, "teacher": str(cifar100_teacher), "teacher_arch": "resnet56", "adapt": "probe",
                 "limit_train": 1000, "out": str(tmp_path / "run"), "cache_dir": str(tmp_path / "c")})
    probe = r["metrics"]["probe"]
    assert probe["n_train"] == 1000 and probe["feature_dim"] == 64
    assert probe["probe_top1"] > 45  # CIFAR-100 features separate CIFAR-10 classes well above chance (10%)
    assert r["metrics"]["teacher"]["top1"] == pytest.approx(probe["probe_top1"], abs=0.5)
    from kd2edge.checkpoint import load_model

    _, info = load_model(r["checkpoint"])
    assert info["provenance"]["teacher"]["num_classes"] == 100
    assert info["provenance"]["teacher"]["adapted"]["kind"] == "linear-probe"


def test_unlabeled_kd_uses_no_labels(tmp_path, cifar10_dir, teacher_path):
    r = distill({**TINY, "teacher": str(teacher_path("resnet20")), "teacher_arch": "resnet20", "labeled_fraction": 0.0,
                 "out": str(tmp_path / "run"), "cache_dir": str(tmp_path / "c")})
    row = next(csv.DictReader(open(Path(r["run_dir"]) / "history.csv")))
    assert float(row["train_ce"]) == 0.0 and float(row["train_kd"]) > 0
    r5 = distill({**TINY, "teacher": str(teacher_path("resnet20")), "teacher_arch": "resnet20",
                  "labeled_fraction": 0.05, "out": str(tmp_path / "run5"), "cache_dir": str(tmp_path / "c")})
    row5 = next(csv.DictReader(open(Path(r5["run_dir"]) / "history.csv")))
    assert float(row5["train_ce"]) > 0


def test_student_warm_start_keeps_its_weights_and_preprocessing(tmp_path, cifar10_dir, teacher_path):
    """student_init: the shared resnet20 (91.73%) fine-tuned with a tiny lr stays accurate; its own
    (foreign) normalization travels into the student checkpoint; another arch is a clear error."""
    from kd2edge.checkpoint import FOREIGN_PREPROCESSING, load_model

    r20 = str(teacher_path("resnet20"))
    cfg = {**TINY, "student": "resnet20", "student_kwargs": {}, "student_init": r20, "method": "ce",
           "lr": 1e-5, "limit_val": 1000, "data_dir": str(cifar10_dir), "out": str(tmp_path / "warm")}
    r = distill(cfg)
    assert r["metrics"]["last"]["top1"] > 88.0  # a fresh resnet20 after 2 steps is near 10%
    _, info = load_model(r["checkpoint"])
    assert info["preprocessing"]["mean"] == pytest.approx(FOREIGN_PREPROCESSING["mean"])
    assert info["provenance"]["student_init"]["sha256"] == load_model(r20, "resnet20")[1]["sha256"]
    with pytest.raises(Kd2EdgeError, match="does not fit arch 'resnet8'"):
        distill({**TINY, "student_init": r20, "method": "ce", "out": str(tmp_path / "bad")})
    # a shallower student of the family takes the first blocks of each stage; another family cannot
    r14 = distill({**cfg, "student": "resnet14", "student_init": "cifar10-resnet20", "out": str(tmp_path / "r14")})
    _, info14 = load_model(r14["checkpoint"])
    assert info14["provenance"]["student_init"]["tensors_copied"] == 80
    with pytest.raises(Kd2EdgeError, match="does not cover student mobilenetv2"):
        distill({**cfg, "student": "mobilenetv2", "student_init_arch": "resnet20", "out": str(tmp_path / "mb")})
