"""Bad input -> one clear line and a non-zero exit, never a traceback. Runs `kd2edge.cli.main` in-process
(like the console script) plus one real subprocess."""
from __future__ import annotations

import pickle
import subprocess
import sys

import pytest
import torch

from kd2edge import cli


def run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["kd2edge", *map(str, args)])
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    text = (out.out + out.err).strip()
    assert "Traceback" not in text
    return code, text


def one_line_error(monkeypatch, capsys, *args) -> str:
    code, text = run(monkeypatch, capsys, *args)
    assert code == 1, text
    assert len(text.splitlines()) == 1 and text.startswith("error: "), text
    return text


@pytest.fixture
def teacher20(teacher_path):
    return teacher_path("resnet20")


def test_missing_data_folder_shows_layout(monkeypatch, capsys, tmp_path, teacher20):
    msg = one_line_error(monkeypatch, capsys, "eval", teacher20, "--arch", "resnet20", "--data-dir", tmp_path / "none")
    assert "cifar10 not found" in msg and "cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}" in msg
    assert "--data-dir" in msg and "KD2EDGE_DATA" in msg


def test_corrupt_pickle(monkeypatch, capsys, tmp_path, teacher20):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    (d / "test_batch").write_bytes(pickle.dumps({"data": 1})[:-3])
    msg = one_line_error(monkeypatch, capsys, "eval", teacher20, "--arch", "resnet20", "--data-dir", tmp_path)
    assert "corrupt dataset file" in msg and "test_batch" in msg


def test_checkpoint_keys_do_not_fit_arch(monkeypatch, capsys, teacher_path):
    msg = one_line_error(monkeypatch, capsys, "eval", teacher_path("resnet56"), "--arch", "resnet20")
    assert "does not fit arch 'resnet20'" in msg and "unexpected (180): layer1.3.conv1.weight" in msg
    msg = one_line_error(monkeypatch, capsys, "eval", teacher_path("resnet20"), "--arch", "mobilenetv2")
    assert "missing (" in msg and "features.0.0.weight" in msg and "unexpected (" in msg


def test_wrong_num_classes(monkeypatch, capsys, cifar10_dir, cifar100_teacher):
    msg = one_line_error(monkeypatch, capsys, "eval", cifar100_teacher, "--arch", "resnet56", "--data-dir", cifar10_dir,
                         "--dataset", "cifar10")
    assert "has 100 classes but dataset cifar10 has 10" in msg
    msg = one_line_error(monkeypatch, capsys, "eval", cifar100_teacher, "--arch", "resnet56", "--num-classes", "10")
    assert "100-class head but 10 classes" in msg


def test_unknown_names_list_valid_ones(monkeypatch, capsys, teacher20):
    msg = one_line_error(monkeypatch, capsys, "eval", teacher20, "--arch", "resnet21")
    assert "unknown arch 'resnet21'" in msg and "resnet20, resnet32, resnet44, resnet56" in msg and "mobilenetv2" in msg
    msg = one_line_error(monkeypatch, capsys, "eval", teacher20, "--arch", "resnet20", "--dataset", "imagenet")
    assert "unknown dataset 'imagenet'" in msg and "cifar10, cifar100" in msg


def test_missing_and_corrupt_checkpoints(monkeypatch, capsys, tmp_path):
    msg = one_line_error(monkeypatch, capsys, "eval", tmp_path / "missing.pt", "--arch", "resnet20")
    assert "file not found" in msg and "missing.pt" in msg
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x02garbage" * 10)
    msg = one_line_error(monkeypatch, capsys, "eval", bad, "--arch", "resnet20")
    assert "cannot read checkpoint" in msg and "bad.pt" in msg
    raw = tmp_path / "raw.pt"
    torch.save({"conv.weight": torch.zeros(1)}, raw)
    msg = one_line_error(monkeypatch, capsys, "eval", raw)
    assert "not a kd2edge checkpoint" in msg and "--arch" in msg


def test_bad_flag_values(monkeypatch, capsys, teacher20):
    code, text = run(monkeypatch, capsys, "eval", teacher20, "--split", "val")
    assert code == 2 and "'val' is not one of 'test', 'train'" in text and "Usage: kd2edge eval" in text
    msg = one_line_error(monkeypatch, capsys, "eval", teacher20, "--arch", "resnet20", "--limit", "0")
    assert "--limit must be at least 1" in msg
    msg = one_line_error(monkeypatch, capsys, "eval", teacher20, "--arch", "resnet20", "--threads", "0")
    assert "--threads must be at least 1" in msg
    msg = one_line_error(monkeypatch, capsys, "eval", teacher20, "--arch", "resnet20", "--batch-size", "0")
    assert "--batch-size must be at least 1" in msg
    msg = one_line_error(monkeypatch, capsys, "zoo", "--num-classes", "0")
    assert "--num-classes must be >= 1" in msg


def test_zoo_lists_nets_with_knobs(monkeypatch, capsys):
    code, text = run(monkeypatch, capsys, "zoo", "--json")
    import json

    rows = {r["name"]: r for r in json.loads(text)}
    from kd2edge.zoo import MODELS

    assert list(rows) == list(MODELS)
    assert rows["mobilenetv2"]["knobs"] == {"width_mult": 0.5, "last_channels": 1280} and rows["resnet56"]["params"] == 853_018
    assert code == 0


def test_real_console_script_prints_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "kd2edge", "eval", str(tmp_path / "nothing.pt"), "--arch", "resnet20"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert "Traceback" not in p.stdout + p.stderr
    assert (p.stdout + p.stderr).strip().splitlines() == [f"error: file not found: {tmp_path / 'nothing.pt'}"]


def test_failing_command_exit_code_reaches_the_shell(monkeypatch, capsys):
    """`raise typer.Exit(n)` inside a command must end the process with n (standalone_mode=False returns it)."""
    import typer

    @cli.app.command("kd2edge-test-exit", hidden=True)
    def _fail():
        raise typer.Exit(3)

    try:
        code, _ = run(monkeypatch, capsys, "kd2edge-test-exit")
    finally:
        cli.app.registered_commands.pop()
    assert code == 3
