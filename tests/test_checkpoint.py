"""Checkpoint round trips (native, foreign layouts, TorchScript) and loading errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kd2edge import Kd2EdgeError
from kd2edge.checkpoint import FORMAT, FORMAT_VERSION, load_model, preprocessing, save_checkpoint
from kd2edge.data import STATS
from kd2edge.zoo import STUDENTS, create_model
from ts_files import save_torchscript

PREP = preprocessing(**STATS["cifar10"])
CLASSES = [f"c{i}" for i in range(5)]


def _trained_like(arch, num_classes=5, **kw):
    """A net with non-default BN statistics, so a lost buffer would change the logits."""
    torch.manual_seed(0)
    m = create_model(arch, num_classes, **kw)
    m.train()
    with torch.no_grad():
        for _ in range(2):
            m(torch.randn(8, 3, 32, 32) * 2 + 0.5)
    return m.eval()


X = torch.randn(6, 3, 32, 32)


@pytest.mark.parametrize("arch,kw", [(a, {}) for a in STUDENTS] + [("plaincnn", {"width": 8, "depth": 2})])
def test_native_round_trip_gives_identical_logits(tmp_path, arch, kw):
    m = _trained_like(arch, **kw)
    path = save_checkpoint(tmp_path / "m.pt", m, arch=arch, arch_kwargs=kw, classes=CLASSES, preprocess=PREP,
                           metrics={"top1": np.float64(12.5), "hist": np.arange(3)},
                           config={"out": tmp_path, "lr": 0.1}, provenance={"dataset": "cifar10"})
    raw = torch.load(path, weights_only=True)  # plain types only: numpy values and Paths were converted
    assert raw["format"] == FORMAT and raw["format_version"] == FORMAT_VERSION and raw["arch_kwargs"] == kw
    assert raw["metrics"] == {"top1": 12.5, "hist": [0, 1, 2]} and raw["config"]["out"] == str(tmp_path)
    loaded, info = load_model(path)
    assert not loaded.training and info["source"] == "native" and info["classes"] == CLASSES
    assert info["preprocessing"] == PREP and info["provenance"]["dataset"] == "cifar10"
    assert "torch" in info["provenance"]["versions"] and len(info["sha256"]) == 64
    with torch.no_grad():
        assert torch.equal(loaded(X), m(X))
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temporary file


def test_native_mismatches(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", _trained_like("resnet8"), arch="resnet8", classes=CLASSES,
                           preprocess=PREP)
    with pytest.raises(Kd2EdgeError, match="is a resnet8 checkpoint, not resnet14"):
        load_model(path, arch="resnet14")
    with pytest.raises(Kd2EdgeError, match="has 5 classes, not 10"):
        load_model(path, num_classes=10)


def _foreign_variants(state):
    return {
        "raw": state,
        "state_dict": {"state_dict": state, "best_prec1": 91.0},
        "model_state_dict": {"model_state_dict": state, "epoch": 3},
        "module_prefix": {"state_dict": {f"module.{k}": v for k, v in state.items()}},
    }


@pytest.mark.parametrize("layout", ["raw", "state_dict", "model_state_dict", "module_prefix"])
def test_foreign_layouts_load_with_arch(tmp_path, layout):
    m = _trained_like("resnet14", num_classes=7)
    path = tmp_path / f"{layout}.pth"
    torch.save(_foreign_variants(m.state_dict())[layout], path)
    loaded, info = load_model(path, arch="resnet14")
    assert info["source"] == "foreign" and info["num_classes"] == 7  # read from the head
    with torch.no_grad():
        assert torch.equal(loaded(X), m(X))
    with pytest.raises(Kd2EdgeError, match="--arch"):
        load_model(path)


def test_foreign_key_and_class_mismatches_name_the_keys(tmp_path):
    path = tmp_path / "r14.pth"
    torch.save(create_model("resnet14", 7).state_dict(), path)
    with pytest.raises(Kd2EdgeError, match=r"does not fit arch 'resnet8': unexpected \(\d+\): layer1.1.conv1.weight"):
        load_model(path, arch="resnet8")
    with pytest.raises(Kd2EdgeError, match=r"missing \(\d+\): features.0.0.weight"):
        load_model(path, arch="plaincnn")
    with pytest.raises(Kd2EdgeError, match="7-class head but 10 classes"):
        load_model(path, arch="resnet14", num_classes=10)
    with pytest.raises(Kd2EdgeError, match="unknown arch 'resnet15'; valid: resnet20"):
        load_model(path, arch="resnet15")
    torch.save(create_model("resnet14", 7, width=8).state_dict(), path)
    with pytest.raises(Kd2EdgeError, match=r"shape mismatch \(\d+\): conv1.weight \(8, 3, 3, 3\) vs \(16, 3, 3, 3\)"):
        load_model(path, arch="resnet14")
    loaded, _ = load_model(path, arch="resnet14", arch_kwargs={"width": 8})
    assert loaded.conv1.out_channels == 8


def test_torchscript_with_and_without_metadata(tmp_path):
    m = _trained_like("plaincnn")
    path = save_torchscript(tmp_path / "m.ts", m, arch="plaincnn", classes=CLASSES, preprocess=PREP)
    loaded, info = load_model(path)
    assert info["source"] == "torchscript" and info["arch"] == "plaincnn" and info["classes"] == CLASSES
    assert info["preprocessing"] == PREP and info["num_classes"] == 5
    with torch.no_grad():
        torch.testing.assert_close(loaded(X), m(X), rtol=0, atol=1e-6)
    with pytest.raises(Kd2EdgeError, match="has 5 classes, not 3"):
        load_model(path, num_classes=3)
    plain = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(m), str(plain))
    loaded, info = load_model(plain)
    assert info["source"] == "torchscript" and info["preprocessing"] is None and info["classes"] is None
    with torch.no_grad():
        torch.testing.assert_close(loaded(X), m(X), rtol=0, atol=1e-6)


def test_a_missing_known_name_is_an_error_never_a_download(tmp_path, monkeypatch):
    monkeypatch.setenv("KD2EDGE_WEIGHTS", str(tmp_path))
    import urllib.request

    monkeypatch.setattr(urllib.request, "urlretrieve", lambda *a, **k: pytest.fail("load_model downloaded"))
    with pytest.raises(Kd2EdgeError, match="cifar10-resnet20 not found .*python -m kd2edge.pretrained fetch"):
        load_model("cifar10-resnet20")
    assert list(tmp_path.iterdir()) == []


def test_unreadable_files_are_user_errors(tmp_path):
    with pytest.raises(Kd2EdgeError, match="file not found: .*nope.pt"):
        load_model(tmp_path / "nope.pt", arch="resnet8")
    good = save_checkpoint(tmp_path / "m.pt", create_model("resnet8"), arch="resnet8", classes=CLASSES[:2] * 5,
                           preprocess=PREP)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(Path(good).read_bytes()[:2000])
    with pytest.raises(Kd2EdgeError, match="cannot read checkpoint .*cut.pt"):
        load_model(cut)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(Kd2EdgeError, match="cannot read checkpoint"):
        load_model(empty, arch="resnet8")
    pickled = tmp_path / "module.pt"
    torch.save(create_model("resnet8"), pickled)  # a whole pickled nn.Module
    with pytest.raises(Kd2EdgeError, match="contains code or objects a checkpoint must not .*state_dict"):
        load_model(pickled, arch="resnet8")
    notstate = tmp_path / "list.pt"
    torch.save([1, 2, 3], notstate)
    with pytest.raises(Kd2EdgeError, match="holds no state dict"):
        load_model(notstate, arch="resnet8")
    with pytest.raises(Kd2EdgeError, match="is a folder"):
        load_model(tmp_path, arch="resnet8")


def test_shared_teachers_load_strictly(teacher_path, cifar100_teacher):
    m, info = load_model(teacher_path("resnet20"), arch="resnet20")
    assert info["num_classes"] == 10 and info["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    m, info = load_model(cifar100_teacher, arch="resnet56")
    assert info["num_classes"] == 100 and m.linear.out_features == 100
    with pytest.raises(Kd2EdgeError, match="unexpected"):
        load_model(teacher_path("resnet56"), arch="resnet20")
