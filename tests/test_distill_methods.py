"""Losses against values computed by hand (numpy, written out from the formulas) on fixed tensors."""
import math

import numpy as np
import pytest
import torch

from kd2edge import Kd2EdgeError
from kd2edge.distill.methods import METHODS, create_method
from kd2edge.distill.methods.kd import standardize_logits
from kd2edge.distill.schedules import check_value_schedule, lr_multiplier, value_at

S = torch.tensor([[2.0, 1.0, 0.0], [0.5, 0.5, 3.0]])
T_ = torch.tensor([[3.0, 0.0, -1.0], [0.0, 1.0, 2.0]])
Y = torch.tensor([0, 1])


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def ce_np(s, y):
    return float(np.mean([-np.log(softmax(s)[i, y[i]]) for i in range(len(y))]))


def kl_np(t, s, T):
    pt, ps = softmax(t / T), softmax(s / T)
    return float((pt * np.log(pt / ps)).sum(1).mean() * T * T)


def test_ce_hand_value():
    # row 0: -log(e^2 / (e^2 + e + 1)); row 1: -log(e^0.5 / (2 e^0.5 + e^3))
    r0 = -math.log(math.e ** 2 / (math.e ** 2 + math.e + 1))
    r1 = -math.log(math.exp(0.5) / (2 * math.exp(0.5) + math.exp(3)))
    loss, _ = create_method("ce")(S, None, Y, None, 1.0, 0.0)
    assert loss.item() == pytest.approx((r0 + r1) / 2, rel=1e-6)
    assert (r0 + r1) / 2 == pytest.approx(ce_np(S.numpy(), Y.numpy()))


def test_ce_only_on_labeled_samples():
    loss, _ = create_method("ce")(S, None, Y, torch.tensor([True, False]), 1.0, 0.0)
    assert loss.item() == pytest.approx(-math.log(math.e ** 2 / (math.e ** 2 + math.e + 1)), rel=1e-6)
    none, _ = create_method("ce")(S, None, Y, torch.tensor([False, False]), 1.0, 0.0)
    assert none.item() == 0.0


@pytest.mark.parametrize("T,alpha", [(1.0, 0.5), (4.0, 0.9), (2.0, 1.0)])
def test_kd_hand_value(T, alpha):
    loss, parts = create_method("kd")(S, T_, Y, None, T, alpha)
    expected = (1 - alpha) * ce_np(S.numpy(), Y.numpy()) + alpha * kl_np(T_.numpy(), S.numpy(), T)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert parts["kd"].item() == pytest.approx(kl_np(T_.numpy(), S.numpy(), T), rel=1e-5)


def test_kd_zero_when_student_equals_teacher():
    loss, _ = create_method("kd")(T_, T_, Y, None, 4.0, 1.0)
    assert abs(loss.item()) < 1e-6


def test_logit_standardization():
    z = standardize_logits(S)
    assert torch.allclose(z.mean(1), torch.zeros(2), atol=1e-6)
    assert torch.allclose(z.std(1), torch.ones(2), atol=1e-5)
    # standardization makes KD invariant to the scale and shift of either side's logits
    m = create_method("kd", standardize=True)
    a, _ = m(S, T_, Y, None, 2.0, 1.0)
    b, _ = m(3 * S + 1, 0.5 * T_ - 2, Y, None, 2.0, 1.0)
    assert a.item() == pytest.approx(b.item(), rel=1e-5)
    zs, zt = S.numpy(), T_.numpy()
    zs = (zs - zs.mean(1, keepdims=True)) / zs.std(1, ddof=1, keepdims=True)
    zt = (zt - zt.mean(1, keepdims=True)) / zt.std(1, ddof=1, keepdims=True)
    assert a.item() == pytest.approx(kl_np(zt, zs, 2.0), rel=1e-4)


def test_dkd_hand_value():
    T, beta = 2.0, 8.0
    s, t, y = S.numpy(), T_.numpy(), Y.numpy()
    ps, pt = softmax(s / T), softmax(t / T)
    tckd = nckd = 0.0
    for i in range(2):
        bs = np.array([ps[i, y[i]], 1 - ps[i, y[i]]])
        bt = np.array([pt[i, y[i]], 1 - pt[i, y[i]]])
        tckd += (bt * np.log(bt / bs)).sum()
        keep = [j for j in range(3) if j != y[i]]
        qs, qt = ps[i, keep] / ps[i, keep].sum(), pt[i, keep] / pt[i, keep].sum()
        nckd += (qt * np.log(qt / qs)).sum()
    tckd, nckd = tckd / 2 * T * T, nckd / 2 * T * T
    loss, parts = create_method("dkd", beta=beta)(S, T_, Y, None, T, 1.0)
    assert parts["tckd"].item() == pytest.approx(tckd, rel=1e-4)
    assert parts["nckd"].item() == pytest.approx(nckd, rel=1e-4)
    assert loss.item() == pytest.approx(tckd + beta * nckd, rel=1e-4)
    # DKD with beta = 1 and equal weights is not plain KD, but TCKD + (1 - p_t) NCKD is (the paper's identity)
    assert kl_np(t, s, T) / (T * T) == pytest.approx(
        np.mean([(lambda bt, bs, qt, qs, ptt: (bt * np.log(bt / bs)).sum() + (1 - ptt) * (qt * np.log(qt / qs)).sum())(
            np.array([pt[i, y[i]], 1 - pt[i, y[i]]]), np.array([ps[i, y[i]], 1 - ps[i, y[i]]]),
            pt[i, [j for j in range(3) if j != y[i]]] / (1 - pt[i, y[i]]),
            ps[i, [j for j in range(3) if j != y[i]]] / (1 - ps[i, y[i]]), pt[i, y[i]]) for i in range(2)]), rel=1e-5)


def test_hybrid_adds_weighted_feature_mse():
    torch.manual_seed(0)
    m = create_method("hybrid", student_channels=2, teacher_channels=3, feature_weight=0.1)
    fs, ft = torch.randn(2, 2, 4, 4), torch.randn(2, 3, 2, 2)
    loss, parts = m(S, T_, Y, None, 4.0, 0.9, (fs, ft))
    kd, _ = create_method("kd")(S, T_, Y, None, 4.0, 0.9)
    proj = torch.nn.functional.adaptive_avg_pool2d(m.projector(fs), (2, 2))
    mse = ((proj - ft) ** 2).mean()
    assert loss.item() == pytest.approx(kd.item() + 0.1 * mse.item(), rel=1e-5)
    loss.backward()
    assert m.projector[0].weight.grad is not None


def test_unknown_method_is_clear_error():
    with pytest.raises(Kd2EdgeError, match="valid: ce, kd, dkd, hybrid"):
        create_method("fitnet")
    assert set(METHODS) == {"ce", "kd", "dkd", "hybrid"}


def test_value_schedules():
    assert value_at(4, 3, 10) == 4.0
    lin = {"kind": "linear", "start": 1.0, "end": 0.0}
    assert [value_at(lin, e, 5) for e in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    ex = {"kind": "exp", "start": 8.0, "end": 2.0}
    assert value_at(ex, 0, 3) == pytest.approx(8.0) and value_at(ex, 1, 3) == pytest.approx(4.0)
    assert value_at(ex, 2, 3) == pytest.approx(2.0)
    assert value_at({"kind": "exp", "start": 0.9, "rate": 0.5}, 2, 10) == pytest.approx(0.225)
    with pytest.raises(Kd2EdgeError, match="lacks end or rate"):
        check_value_schedule({"kind": "exp", "start": 1.0}, "T")
    with pytest.raises(Kd2EdgeError, match="T must be a number"):
        check_value_schedule("high", "T")


def test_lr_schedules():
    assert lr_multiplier("cosine", 99, 100) == pytest.approx(0.0, abs=1e-9)
    assert lr_multiplier("onecycle", 24, 100) == pytest.approx(1.0)
    assert lr_multiplier("step", 80, 100) == pytest.approx(0.01)
    with pytest.raises(Kd2EdgeError, match="unknown lr schedule"):
        lr_multiplier("poly", 0, 10)


def test_every_zoo_student_has_a_default_feature_layer_for_hybrid():
    from kd2edge.distill.methods.hybrid import default_feature_layer
    from kd2edge.zoo import STUDENTS, create_model

    for name in STUDENTS:
        model = create_model(name)
        assert default_feature_layer(model) in dict(model.named_modules()), name
