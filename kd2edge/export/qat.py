"""KD-aware quantization-aware training for int8 export (`kd2edge export --int8 --qat-epochs N`).

The student's BatchNorms are folded into their convolutions (eval statistics, checked against the unfolded
net), the raw-pixel graph (kd2edge.export.graph.deployable) is traced with a dynamic batch and prepared with
PT2E fake quantization in litert-torch's int8 scheme -- per-channel symmetric int8 weights, per-tensor
asymmetric int8 activations (moving-average observers) -- which is also what onnxruntime's QDQ executes. It
is then fine-tuned for N epochs of the TRAINING images (random crop + flip) on the KD loss T^2 KL(student/T ||
teacher/T) against the teacher's logits, and handed to the target's converter as an already prepared graph.

litert-torch 0.10's conv+BN QAT annotation cannot run with this torchao (it hands torch.export a function),
hence the fold and a quantizer without the conv_bn patterns; BN statistics are frozen, the usual choice for a
short fine-tune.
"""
from __future__ import annotations

import copy
import time

import numpy as np

from kd2edge import Kd2EdgeError

DEFAULTS = {"batch": 128, "lr": 1e-3, "T": 4.0, "momentum": 0.9}


def fold_bn(model, flag: str = "--qat-epochs"):
    """A copy of `model` (eval) with every BatchNorm2d folded into the Conv2d registered just before it; `flag`
    names the option that needs it in the error lines."""
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    mods = list(folded.named_modules())
    for i, (name, bn) in enumerate(mods):
        if not isinstance(bn, torch.nn.BatchNorm2d):
            continue
        convs = [(n, c) for n, c in mods[:i] if isinstance(c, torch.nn.Conv2d)]
        if not convs or convs[-1][1].out_channels != bn.num_features:
            raise Kd2EdgeError(f"{flag}: cannot fold BatchNorm {name} into a convolution; export without {flag}")
        cname, conv = convs[-1]
        _set(folded, cname, fuse_conv_bn_eval(conv, bn))
        _set(folded, name, torch.nn.Identity())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        diff = (folded(x) - model.eval()(x)).abs().max().item()
    if not diff <= 1e-3 * (1 + model(x).abs().max().item()):
        raise Kd2EdgeError(f"{flag}: folding BatchNorm changed the outputs by {diff:.2e} (a BN that does not follow "
                           f"its convolution); export without {flag}")
    return folded


def _set(root, path: str, module) -> None:
    parent, _, attr = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, module)


def qat_quantizer():
    """litert-torch's PT2EQuantizer in QAT mode, without its conv+BN patterns (see the module docstring)."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

    class FoldedQATQuantizer(PT2EQuantizer):
        STATIC_QAT_ONLY_OPS = []

    return FoldedQATQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_qat=True))


def qat_prepare(model, preprocessing, train_x, teacher, epochs: float, seed: int = 0, log=None):
    """(prepared PT2E graph fine-tuned with fake quantization, quantizer, record). `teacher(x_uint8) -> logits`
    gives the teacher's logits for a batch of raw training images; `epochs` may be fractional."""
    import torch
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    from kd2edge.export.graph import deployable

    if epochs <= 0:
        raise Kd2EdgeError(f"--qat-epochs must be > 0, got {epochs:g}")
    start = time.perf_counter()
    net = deployable(fold_bn(model), preprocessing, channels_last=True)
    sample = torch.as_tensor(train_x[:2]).float()
    graph = torch.export.export(net, (sample,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},))
    quantizer = qat_quantizer()
    prepared = prepare_qat_pt2e(graph.module(), quantizer)
    params = [p for p in prepared.parameters() if p.requires_grad]
    steps = max(1, int(round(epochs * len(train_x) / DEFAULTS["batch"])))
    opt = torch.optim.SGD(params, lr=DEFAULTS["lr"], momentum=DEFAULTS["momentum"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    rng = np.random.default_rng(seed)
    T, seen, losses = DEFAULTS["T"], 0, []
    for step in range(steps):
        idx = rng.choice(len(train_x), DEFAULTS["batch"], replace=False)
        xb = _augment(train_x[idx], rng)
        with torch.no_grad():
            t = torch.as_tensor(teacher(xb)).float()
        s = prepared(torch.as_tensor(xb).float())
        loss = torch.nn.functional.kl_div(torch.log_softmax(s / T, 1), torch.softmax(t / T, 1),
                                          reduction="batchmean") * T * T
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        seen += len(idx)
        losses.append(loss.item())
        if log and (step % 50 == 0 or step == steps - 1):
            log(f"qat step {step + 1}/{steps} kd loss {np.mean(losses[-50:]):.4f}")
    move_exported_model_to_eval(prepared)
    record = {"method": "QAT", "epochs": float(epochs), "images_seen": seen, "steps": steps,
              "batch": DEFAULTS["batch"], "lr": DEFAULTS["lr"], "T": T, "bn": "folded (eval statistics)",
              "final_kd_loss": round(float(np.mean(losses[-20:])), 5), "seconds": round(time.perf_counter() - start, 1)}
    return prepared, quantizer, record


def _augment(x: np.ndarray, rng) -> np.ndarray:
    """Random crop of the zero-padded (4 pixels) image and horizontal flip of uint8 NHWC images (the distill augmentation)."""
    n, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="constant")
    dy, dx = rng.integers(0, 9, n), rng.integers(0, 9, n)
    out = np.stack([padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    flip = rng.random(n) < 0.5
    out[flip] = out[flip, :, ::-1]
    return out
