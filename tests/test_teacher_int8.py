"""The int8 teacher (onnxruntime static int8): close to the PyTorch teacher, its own cache identity, built once,
verified by checksum, and chosen by teacher_precision auto only where it can serve."""
import json

import numpy as np
import pytest
import torch

from kd2edge import Kd2EdgeError
from kd2edge.distill.config import resolve_config
from kd2edge.distill.teacher import EnsembleTeacher, load_teacher
from kd2edge.distill.teacher_int8 import Int8Teacher, to_int8


@pytest.fixture(scope="module")
def train_x(cifar10_dir):
    from kd2edge.data import load_dataset

    return load_dataset("cifar10", "train", cifar10_dir, limit=2048).x


def test_int8_teacher_matches_the_pytorch_teacher_and_has_its_own_cache_id(tmp_path, train_x, cifar10_test,
                                                                           teacher_path, capfd):
    fp32 = load_teacher(str(teacher_path("resnet20")), "resnet20")
    q = to_int8(fp32, train_x, tmp_path)
    assert isinstance(q, Int8Teacher) and q.num_classes == 10
    assert "teacher_int8" not in capfd.readouterr().err  # converter noise went to the folder's build.log
    x = torch.from_numpy(cifar10_test.x[:500])
    ref, got = fp32.logits(x).numpy(), q.logits(x).numpy()
    assert got.shape == ref.shape and np.isfinite(got).all()
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.97  # measured 99.3% on all 10,000 (resnet56)
    assert (got.argmax(1) == cifar10_test.y[:500]).mean() >= 0.88  # resnet20: 91.7% in fp32
    assert np.abs(got - ref).mean() < 0.5 and not np.array_equal(got, ref)  # int8, not the float graph
    assert q.cache_spec["precision"] == "int8" and q.cache_id != fp32.cache_id
    # built once: the second call finds the same file (same sha256) without rebuilding
    (folder,) = (tmp_path / "teacher_int8").iterdir()
    mtime = (folder / "model.onnx").stat().st_mtime_ns
    again = to_int8(load_teacher(str(teacher_path("resnet20")), "resnet20", bf16=True), train_x, tmp_path)
    assert again.cache_id == q.cache_id and (folder / "model.onnx").stat().st_mtime_ns == mtime
    assert json.loads((folder / "meta.json").read_text())["sha256"] == q.onnx_sha256


def test_a_damaged_int8_teacher_file_is_rebuilt_not_trusted(tmp_path, train_x, teacher_path):
    fp32 = load_teacher(str(teacher_path("resnet20")), "resnet20")
    q = to_int8(fp32, train_x, tmp_path)
    (folder,) = (tmp_path / "teacher_int8").iterdir()
    data = bytearray((folder / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "model.onnx").write_bytes(bytes(data))
    lines = []
    again = to_int8(fp32, train_x, tmp_path, log=lines.append)
    assert any("damaged" in m for m in lines) and again.onnx_sha256 == q.onnx_sha256


def test_a_cpu_without_vnni_gets_7_bit_weights_and_another_key(tmp_path, train_x, cifar10_test, teacher_path,
                                                               monkeypatch):
    from kd2edge.distill import teacher_int8

    fp32 = load_teacher(str(teacher_path("resnet20")), "resnet20")
    monkeypatch.setattr(teacher_int8, "saturation_free", lambda: True)  # whatever this CPU is (VNNI or not)
    q = to_int8(fp32, train_x, tmp_path)
    monkeypatch.setattr(teacher_int8, "saturation_free", lambda: False)
    r = to_int8(fp32, train_x, tmp_path)
    assert r.cache_id != q.cache_id and len(list((tmp_path / "teacher_int8").iterdir())) == 2
    x = torch.from_numpy(cifar10_test.x[:500])
    assert (r.logits(x).numpy().argmax(1) == fp32.logits(x).numpy().argmax(1)).mean() >= 0.95


def test_int8_ensemble_quantizes_every_member(tmp_path, train_x, teacher_path):
    members = [load_teacher(str(teacher_path(a)), a) for a in ("resnet20", "resnet32")]
    q = to_int8(EnsembleTeacher(members), train_x, tmp_path)
    assert isinstance(q, EnsembleTeacher) and all(isinstance(m, Int8Teacher) for m in q.members)
    assert len(list((tmp_path / "teacher_int8").iterdir())) == 2


def test_teacher_precision_config():
    assert resolve_config({"teacher": "t"})["teacher_precision"] == "fp32"
    assert resolve_config({"teacher": "t", "time_budget": 60})["teacher_precision"] == "auto"  # the budget recipe
    assert resolve_config({"teacher": "t", "teacher_bf16": True})["teacher_precision"] == "bf16"  # the old switch
    assert resolve_config({"teacher": "t", "teacher_bf16": False})["teacher_precision"] == "fp32"
    with pytest.raises(Kd2EdgeError, match="unknown teacher_precision 'int4'; valid: auto, fp32, bf16, int8"):
        resolve_config({"teacher": "t", "teacher_precision": "int4"})
    with pytest.raises(Kd2EdgeError, match="int8 gives logits only"):
        resolve_config({"teacher": "t", "teacher_precision": "int8", "method": "hybrid"})


def test_int8_refuses_a_teacher_it_cannot_export(tmp_path, train_x, teacher_path):
    scripted = tmp_path / "t.pt"
    torch.jit.script(load_teacher(str(teacher_path("resnet20")), "resnet20").model).save(str(scripted))
    with pytest.raises(Kd2EdgeError, match="not a PyTorch module .*teacher_precision=bf16"):
        to_int8(load_teacher(str(scripted)), train_x, tmp_path)
