"""Real distillation runs on small subsets of real CIFAR-10 with the shared teachers (tiny budgets)."""
import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kd2edge import Kd2EdgeError
from kd2edge.distill import distill, resolve_config

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"student": "resnet8", "student_kwargs": {"width": 8}, "limit_train": 512, "limit_val": 500,
         "batch_size": 128, "latency": False, "progress": False}


def cfg(tmp_path, teacher, **kw):
    return {**SMALL, "teacher": str(teacher), "teacher_arch": "resnet20", "out": str(tmp_path / "run"),
            "cache_dir": str(tmp_path / "cache"), "data_dir": str(ROOT / "data"), **kw}


def test_kd_run_writes_outputs_and_checkpoint(tmp_path, cifar10_dir, teacher_path):
    from kd2edge.checkpoint import load_model

    r = distill(cfg(tmp_path, teacher_path("resnet20"), epochs=3, lr=0.05))
    run = Path(r["run_dir"])
    for f in ("student.pt", "config.json", "history.csv", "metrics.json", "curves.png", "confusion.png", "summary.md"):
        assert (run / f).stat().st_size > 0, f
    assert not run.with_name("run.partial").exists()
    hist = (run / "history.csv").read_text().splitlines()
    assert len(hist) == 4
    losses = [float(line.split(",")[hist[0].split(",").index("train_loss")]) for line in hist[1:]]
    assert losses[-1] < losses[0]  # a few real steps lower the loss
    model, info = load_model(r["checkpoint"])
    t = info["provenance"]["teacher"]
    assert t["arch"] == "resnet20" and t["num_classes"] == 10 and len(t["sha256"]) == 64 and t["source"] == "foreign"
    assert info["config"]["method"] == "kd" and info["config"]["T"] == {"kind": "constant", "value": 4.0}
    assert info["provenance"]["dataset"] == "cifar10"
    m = json.loads((run / "metrics.json").read_text())
    assert {"best", "last", "student", "teacher", "cache"} <= set(m)
    assert m["teacher"]["top1"] > 85  # resnet20 on the first 500 test images
    assert m["cache"]["misses"] > 0
    assert "| top-1 (%) |" in (run / "summary.md").read_text()
    # amp "auto": bf16 only where it measured faster for this student here (fp32 on CPUs without bf16)
    from kd2edge.distill.config import bf16_supported

    p = m["train_precision"]
    if bf16_supported():
        assert p["chosen_by"] == "measured" and p["bf16_img_s"] > 0 and p["fp32_img_s"] > 0
        assert (p["amp"] == "bf16") == (p["bf16_img_s"] > p["fp32_img_s"])
    else:
        assert p == {"amp": "fp32", "chosen_by": "config"}


def test_ce_baseline_needs_no_teacher_and_bad_inputs_are_clear(tmp_path, cifar10_dir):
    r = distill({**SMALL, "method": "ce", "epochs": 1, "out": str(tmp_path / "ce"), "data_dir": str(ROOT / "data")})
    assert "teacher" not in r["metrics"]
    with pytest.raises(Kd2EdgeError, match="needs a teacher"):
        resolve_config({"method": "kd"})
    with pytest.raises(Kd2EdgeError, match="unknown distill config key"):
        resolve_config({"method": "ce", "epoch": 3})
    with pytest.raises(Kd2EdgeError, match="already exists"):
        distill({**SMALL, "method": "ce", "epochs": 1, "out": str(tmp_path / "ce")})


def test_class_count_mismatch_without_adaptation_is_clear_error(tmp_path, cifar10_dir, cifar100_teacher):
    c = cfg(tmp_path, cifar100_teacher, teacher_arch="resnet56", epochs=1)
    with pytest.raises(Kd2EdgeError, match="teacher has 100 classes but cifar10 has 10; pass --set adapt=probe"):
        distill(c)


def _run_cmd(c: dict):
    code = f"from kd2edge.distill import distill; distill({c!r})"
    return [sys.executable, "-c", code]


def test_resume_after_kill_matches_uninterrupted(tmp_path, cifar10_dir, teacher_path):
    # amp pinned: "auto" measures bf16 against fp32 in each run, and a and b could choose differently
    base = cfg(tmp_path, teacher_path("resnet20"), epochs=3, progress=True, limit_train=384, amp=False)
    a = distill({**base, "out": str(tmp_path / "a"), "cache_dir": str(tmp_path / "ca"), "progress": False})
    b_cfg = {**base, "out": str(tmp_path / "b"), "cache_dir": str(tmp_path / "cb")}
    p = subprocess.Popen(_run_cmd(b_cfg), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    for line in p.stdout:
        if line.startswith("epoch 1:"):
            p.send_signal(signal.SIGKILL)  # killed during epoch 2
            break
    p.wait()
    state = torch.load(tmp_path / "b.partial" / "state.pt", weights_only=True)  # no pickled objects
    assert state["epoch"] == 1 and not (tmp_path / "b").exists()
    b = distill({**b_cfg, "resume": True, "progress": False})
    sa = torch.load(a["checkpoint"], weights_only=True)["state_dict"]
    sb = torch.load(b["checkpoint"], weights_only=True)["state_dict"]
    for k in sa:
        assert torch.allclose(sa[k].float(), sb[k].float(), atol=1e-6), k
    assert a["metrics"]["last"]["top1"] == b["metrics"]["last"]["top1"]
    assert b["metrics"]["train_precision"] == {"amp": "fp32", "chosen_by": "the interrupted run"}
    with pytest.raises(Kd2EdgeError, match="differs in seed"):
        from kd2edge.distill.stage import load_state

        load_state(tmp_path / "b" / "state.pt", resolve_config({**b_cfg, "seed": 1}))


def test_labeled_fraction_mask_is_stratified():
    from kd2edge.distill.inputs import labeled_mask

    y = np.repeat(np.arange(10), 100)
    m = labeled_mask(y, 0.05, 0)
    assert m.sum() == 50 and all(m[y == c].sum() == 5 for c in range(10))
    assert (labeled_mask(y, 0.05, 0) == m).all() and not (labeled_mask(y, 0.05, 1) == m).all()


def test_val_every_validates_only_some_epochs(tmp_path, cifar10_dir):
    from kd2edge.distill import distill

    r = distill({"student": "resnet8", "student_kwargs": {"width": 8}, "method": "ce", "limit_train": 256,
                 "limit_val": 200, "batch_size": 128, "epochs": 3, "val_every": 2, "latency": False,
                 "progress": False, "data_dir": str(cifar10_dir), "out": str(tmp_path / "v")})
    rows = list(csv.DictReader(open(Path(r["run_dir"]) / "history.csv")))
    assert [bool(row["val_top1"]) for row in rows] == [False, True, True]  # epoch 2 and the last
    assert r["metrics"]["best"]["epoch"] in (2, 3) and (Path(r["run_dir"]) / "curves.png").exists()


def test_a_run_from_before_a_new_key_is_reused_at_its_default(tmp_path):
    """A finished run's config.json written before a key existed (here `cutout`) matches a config at that key's
    default, and differs from one that sets it."""
    from kd2edge.checkpoint import plain
    from kd2edge.distill.stage import check_same_config

    cfg = resolve_config(method="ce")
    older = {k: v for k, v in plain(cfg).items() if k != "cutout"}
    (tmp_path / "config.json").write_text(json.dumps(older))
    check_same_config(tmp_path / "config.json", cfg, set(), "reuse the finished run")
    with pytest.raises(Kd2EdgeError, match=r"differs in cutout \(None there, 8 asked\)"):
        check_same_config(tmp_path / "config.json", {**cfg, "cutout": 8}, set(), "reuse the finished run")
