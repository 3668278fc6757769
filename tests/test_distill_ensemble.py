"""Ensemble teachers: the mean of the members' logits, cached under a key of its members."""
from pathlib import Path

import numpy as np
import pytest
import torch

from kd2edge import Kd2EdgeError
from kd2edge.distill.teacher_cache import TeacherCache
from kd2edge.distill.teacher import EnsembleTeacher, ensemble_members, load_teacher

ROOT = Path(__file__).resolve().parents[1]


def members(teacher_path, *archs):
    return [{"teacher": str(teacher_path(a)), "arch": a} for a in archs]


def test_ensemble_accuracy_matches_a_hand_computed_mean(cifar10_test, teacher_path):
    x, y = torch.from_numpy(cifar10_test.x[:300]), cifar10_test.y[:300]
    singles = [load_teacher(str(teacher_path(a)), a) for a in ("resnet20", "resnet32")]
    by_hand = np.mean([t.logits(x).numpy() for t in singles], axis=0)  # numpy mean of the two members
    ens = load_teacher(members(teacher_path, "resnet20", "resnet32"))
    assert isinstance(ens, EnsembleTeacher) and ens.num_classes == 10 and ens.source == "ensemble"
    got = ens.logits(x).numpy()
    np.testing.assert_allclose(got, by_hand, rtol=1e-5, atol=1e-5)
    acc = lambda z: float((z.argmax(1) == y).mean() * 100)  # noqa: E731
    assert acc(got) == acc(by_hand) and acc(got) > 85
    assert ens.info["members"][1]["arch"] == "resnet32"


def test_ensemble_cache_key_changes_when_a_member_changes(tmp_path, cifar10_test, teacher_path):
    x = cifar10_test.x[:64]
    key = lambda spec: TeacherCache(load_teacher(spec), x, "cifar10", 2, root=tmp_path).key  # noqa: E731
    base = key(members(teacher_path, "resnet20", "resnet32"))
    assert key(members(teacher_path, "resnet20", "resnet32")) == base  # same members: same cache
    assert key(members(teacher_path, "resnet20", "resnet44")) != base  # another member
    assert key(members(teacher_path, "resnet32", "resnet20")) == key(members(teacher_path, "resnet32", "resnet20"))
    assert key(members(teacher_path, "resnet20", "resnet32", "resnet44")) != base  # one more member
    single = TeacherCache(load_teacher(str(teacher_path("resnet20")), "resnet20"), x, "cifar10", 2, root=tmp_path).key
    assert single != base


def test_ensemble_specs_and_errors(teacher_path, cifar100_teacher):
    assert ensemble_members("cifar10-ensemble") == ["cifar10-resnet20", "cifar10-resnet32", "cifar10-resnet44",
                                                    "cifar10-resnet56"]
    assert ensemble_members("a.th,b.th") == ["a.th", "b.th"] and ensemble_members("cifar10-resnet56") is None
    with pytest.raises(Kd2EdgeError, match="disagree on the number of classes"):
        load_teacher([{"teacher": str(teacher_path("resnet20")), "arch": "resnet20"},
                      {"teacher": str(cifar100_teacher), "arch": "resnet56"}])
    with pytest.raises(Kd2EdgeError, match="at least two"):
        EnsembleTeacher([load_teacher(str(teacher_path("resnet20")), "resnet20")])


def test_distill_with_an_ensemble_teacher_reports_its_accuracy(tmp_path, cifar10_dir, teacher_path):
    from kd2edge.distill import distill

    r = distill({"teacher": members(teacher_path, "resnet20", "resnet32"), "student": "resnet8",
                 "student_kwargs": {"width": 8}, "limit_train": 256, "limit_val": 300, "batch_size": 128, "epochs": 1,
                 "progress": False, "latency": False, "out": str(tmp_path / "run"), "cache_dir": str(tmp_path / "c"),
                 "data_dir": str(ROOT / "data")})
    m = r["metrics"]
    assert m["teacher"]["top1"] > 85 and m["cache"]["misses"] > 0
    # the checkpoint names the members, so `kd2edge export` can rebuild the teacher's logits (test_export.py)
    from kd2edge.checkpoint import load_model

    record = load_model(r["checkpoint"])[1]["provenance"]["teacher"]
    assert [m["arch"] for m in record["members"]] == ["resnet20", "resnet32"]
