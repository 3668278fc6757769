"""Tests generated from the zoo registry: every net gives logits only, of the right shape, and exports
with torch.export with a dynamic batch axis; size knobs work; param/MAC counts are exact."""
from __future__ import annotations

import pytest
import torch

from kd2edge import Kd2EdgeError
from kd2edge.zoo import KNOBS, MODELS, STUDENTS, count_macs, count_params, create_model, describe

NETS = [*MODELS, "tv:resnet18"]


@pytest.mark.parametrize("name", NETS)
def test_forward_is_logits_only_and_exports_with_dynamic_batch(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        y = model(x)
    assert type(y) is torch.Tensor and y.shape == (3, 7) and y.dtype == torch.float32
    batch = torch.export.Dim("batch", min=1, max=1024)
    ep = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    x5 = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        out = ep.module()(x5)
        ref = model(x5)
    assert out.shape == (5, 7)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    # the batch axis really is symbolic in the exported graph
    in_shape = next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name == "x").meta["val"].shape
    assert not isinstance(in_shape[0], int)


@pytest.mark.parametrize("name", list(MODELS))
def test_any_num_classes(name):
    assert create_model(name, num_classes=100)(torch.zeros(1, 3, 32, 32)).shape == (1, 100)


def test_every_registered_net_has_knobs_and_students_exist():
    assert set(KNOBS) == set(MODELS)
    assert set(STUDENTS) <= set(MODELS)


@pytest.mark.parametrize("name", list(MODELS))
def test_size_knobs_are_accepted_and_change_the_net(name):
    base = count_params(create_model(name))
    assert base == count_params(create_model(name, **KNOBS[name]))  # listed defaults are the real defaults
    for knob, default in KNOBS[name].items():
        bigger = tuple(2 * v for v in default) if isinstance(default, tuple) else default * 2
        assert count_params(create_model(name, **{knob: bigger})) > base, knob


def test_unknown_knob_and_arch_are_user_errors():
    with pytest.raises(Kd2EdgeError, match="width_mult=0.5"):
        create_model("mobilenetv2", width=3)
    with pytest.raises(Kd2EdgeError, match="resnet20, resnet32"):
        create_model("resnet21")
    with pytest.raises(Kd2EdgeError, match="unknown torchvision model"):
        create_model("tv:not_a_model")
    for width in (11, 0):  # an odd width used to fail only at the first forward (shortcut shapes 22 vs 21)
        with pytest.raises(Kd2EdgeError, match="width must be an even number"):
            create_model("resnet14", width=width)
    assert create_model("resnet14", width=10)(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_teacher_sizes_match_the_shared_checkpoints():
    # ../shared/README.md: 269,722 and 853,018 parameters (CIFAR-10), 858,868 for the CIFAR-100 resnet56
    assert count_params(create_model("resnet20")) == 269_722
    assert count_params(create_model("resnet32")) == 464_154
    assert count_params(create_model("resnet56")) == 853_018
    assert count_params(create_model("resnet56", 100)) == 858_868


def test_macs_are_exact_on_a_hand_counted_net():
    # one conv 3->4 (3x3, 32x32 output) = 32*32*4*27 MACs, BN/ReLU/mean are not MACs, linear 4->10 = 40
    m = create_model("plaincnn", 10, width=4, depth=1, stages=1)
    assert count_macs(m) == 32 * 32 * 4 * 27 + 40
    assert count_macs(m, (3, 64, 64)) == 64 * 64 * 4 * 27 + 40
    assert m.training  # count_macs restores the mode


def test_fastcnn_layout_is_stem_pool_then_stages():
    # stem conv 3->4 at 32x32, max-pool to 16x16, stage conv 4->8, one residual conv 8->8, linear 8->10
    m = create_model("fastcnn", 10, stem=4, widths=(8,), blocks=(1,))
    assert count_macs(m) == 32 * 32 * 4 * 27 + 16 * 16 * 8 * 36 + 16 * 16 * 8 * 72 + 80
    assert count_macs(create_model("fastcnn")) <= 12_500_000  # the default fits issue 11's 12.5M-MAC student size
    with pytest.raises(Kd2EdgeError, match="one entry per stage"):
        create_model("fastcnn", widths=(8, 16), blocks=(1,))


def test_describe_row():
    row = describe("resnet8")
    assert row["role"] == "student" and row["knobs"] == {"width": 16}
    assert row["params"] == count_params(create_model("resnet8")) and row["macs"] > 0
