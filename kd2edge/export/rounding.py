"""How int8 weights are rounded (`kd2edge export --int8 --rounding nearest|adaround`).

`nearest`: the converter rounds every weight to its nearest grid point (plain PTQ).
`adaround`: learned rounding (AdaRound, Nagel et al. 2020, "Up or down? Adaptive rounding for post-training
quantization"). For each conv/linear layer in execution order, a soft up-or-down choice per weight is trained
so that the layer's output on calibration images matches the float student's, the layer being fed by the
already rounded layers before it with its input quantized to 8 bits (MinMax, asymmetric), so a layer also
makes up for the error that reaches it. The rounding is then hardened and the weights written back ON the grid
the converter uses: per output channel symmetric, scale = max|w| / qmax, the largest weight of each channel
kept where it is (so the converter computes the same scale), BatchNorms folded first (the converter would fold
them). The converter's own round-to-nearest then reproduces the learned choice; it still calibrates the
activation ranges itself. Nothing here changes the fp32 artifacts or the reference logits: agreement is
measured against the unmodified student.
"""
from __future__ import annotations

import copy
import time

import numpy as np

from kd2edge import Kd2EdgeError
from kd2edge.artifact import ROUNDINGS
# training images (a seeded random sample, never test images), iterations per layer, batch, Adam lr, rounding
# regularizer weight and its beta annealing (20 -> 2 after a 20 % warm-up without it): the paper's values, fewer
# iterations. 256 images x 1,000 iterations kept fewer of the gains on a fastcnn student (benchmarks/export.md).
DEFAULTS = {"images": 1024, "iters": 2000, "batch": 64, "lr": 1e-2, "reg": 0.01, "beta": (20.0, 2.0), "warmup": 0.2}
_GAMMA, _ZETA = -0.1, 1.1  # the rectified sigmoid's stretch


def check(rounding) -> str:
    rounding = getattr(rounding, "value", rounding) or "nearest"
    if rounding not in ROUNDINGS:
        raise Kd2EdgeError(f"unknown --rounding {rounding}; valid: {', '.join(ROUNDINGS)}")
    return rounding


def grid(w, qmax: int):
    """(scale per output channel shaped to broadcast over `w`, w / scale)."""
    shape = (-1,) + (1,) * (w.dim() - 1)
    scale = (w.abs().flatten(1).amax(1).clamp_min(1e-12) / qmax).view(shape)
    return scale, w / scale


def fake_quant(t, lo: float, hi: float):
    """8-bit asymmetric per-tensor quantize-dequantize over [lo, hi] (0 included), as the converters' activations."""
    import torch

    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-8) / 255
    zero = round(-lo / scale)
    return (torch.clamp(torch.round(t / scale) + zero, 0, 255) - zero) * scale


def layer_order(net, x) -> list[tuple[str, object]]:
    """(module path, the activation module it feeds or None) of the conv/linear layers of `net`, in the order one
    forward pass calls them. The activation is the next module called when it is a ReLU/ReLU6 (Identity, a
    folded BatchNorm, in between is skipped); a functional ReLU is not seen (the loss is then pre-activation)."""
    import torch

    acts = (torch.nn.ReLU, torch.nn.ReLU6, torch.nn.Hardtanh)
    calls = []
    hooks = [m.register_forward_hook(lambda mod, i, o, n=name: calls.append((n, mod)))
             for name, m in net.named_modules() if not list(m.children())]
    try:
        with torch.no_grad():
            net(x[:1])
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for k, (name, mod) in enumerate(calls):
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)) and name not in out:
            nxt = next((m for _, m in calls[k + 1:] if not isinstance(m, torch.nn.Identity)), None)
            out[name] = nxt if isinstance(nxt, acts) else None
    return list(out.items())


def _run(net, x, names, ranges=None, capture=None, batch: int = 256):
    """Forward `x` through `net` with every input of `names` quantized over `ranges` (None: record the
    ranges instead); `capture` = (path, "in"|"out"): also return that layer's inputs / outputs."""
    import torch

    seen, box, hooks = {}, [], []
    mods = dict(net.named_modules())

    def pre(name):
        def hook(mod, args):
            t = args[0]
            if ranges is None:
                lo, hi = seen.get(name, (0.0, 0.0))
                seen[name] = (min(lo, t.min().item()), max(hi, t.max().item()))
            else:
                t = fake_quant(t, *ranges[name])
            if capture == (name, "in"):
                box.append(t.detach())
            return (t,) + tuple(args[1:])
        return hook

    hooks = [mods[n].register_forward_pre_hook(pre(n)) for n in names]
    if capture and capture[1] == "out":
        # a copy: an in-place ReLU after the layer would otherwise rewrite what was captured
        hooks.append(mods[capture[0]].register_forward_hook(lambda mod, i, o: box.append(o.detach().clone())))
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch):
                net(x[i:i + batch])
    finally:
        for h in hooks:
            h.remove()
    return seen if ranges is None else (torch.cat(box) if box else None)


def _learn(layer, xin, target, qmax: int, seed: int, act=None):
    """The hardened rounding of one layer's weight (on the grid), trained against `target` outputs (both through
    `act`, the activation that follows the layer, when there is one: errors it cuts off do not count)."""
    import torch
    import torch.nn.functional as F

    w = layer.weight.detach()
    scale, ws = grid(w, qmax)
    low = torch.floor(ws)
    rest = (ws - low).clamp(1e-4, 1 - 1e-4)
    p = (rest - _GAMMA) / (_ZETA - _GAMMA)
    v = torch.log(p / (1 - p)).requires_grad_(True)  # soft rounding starts at the float weight
    opt = torch.optim.Adam([v], lr=DEFAULTS["lr"])
    if isinstance(layer, torch.nn.Conv2d):
        def fn(x, weight):
            return F.conv2d(x, weight, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups)
    else:
        def fn(x, weight):
            return F.linear(x, weight, layer.bias)
    act = act or (lambda t: t)
    target = act(target)
    gen = torch.Generator().manual_seed(seed)
    iters, warm = DEFAULTS["iters"], int(DEFAULTS["warmup"] * DEFAULTS["iters"])
    b_hi, b_lo = DEFAULTS["beta"]
    for it in range(iters):
        idx = torch.randint(0, len(xin), (min(DEFAULTS["batch"], len(xin)),), generator=gen)
        h = torch.clamp(torch.sigmoid(v) * (_ZETA - _GAMMA) + _GAMMA, 0, 1)
        out = act(fn(xin[idx], torch.clamp(low + h, -qmax, qmax) * scale))
        loss = ((out - target[idx]) ** 2).flatten(1).sum(1).mean()
        if it >= warm:
            beta = b_hi - (b_hi - b_lo) * (it - warm) / max(1, iters - warm)
            loss = loss + DEFAULTS["reg"] * (1 - (2 * h - 1).abs() ** beta).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        q = torch.clamp(low + (v > 0).float(), -qmax, qmax)
        # the largest weight of each channel stays at +-qmax: the converter derives the scale from it
        top = ws.abs().flatten(1).argmax(1)
        flat = q.flatten(1)
        rows = torch.arange(len(flat))
        flat[rows, top] = torch.round(ws.flatten(1)[rows, top])
        q = flat.view_as(w)
        nearest = torch.clamp(torch.round(ws), -qmax, qmax)
        return q * scale, float((q != nearest).float().mean())


def adaround(model, preprocessing: dict, calib: np.ndarray, qmax: int = 127, skip=(), seed: int = 0,
             on_layer=None, range_images: np.ndarray | None = None):
    """(the student with BatchNorms folded and conv/linear weights on the int8 grid by learned rounding, record).
    `calib`: uint8 NHWC training images; `skip`: module paths of the student (e.g. layers kept in float);
    `on_layer(done, total)` is called as layers finish; `range_images`: the images the converter calibrates its
    activation ranges on (MinMax over them quantizes each layer's input here; default `calib`)."""
    import torch

    from kd2edge.export.graph import deployable
    from kd2edge.export.qat import fold_bn

    start = time.perf_counter()
    folded = fold_bn(model, "--rounding adaround")
    float_net = deployable(folded, preprocessing, channels_last=False)  # raw NCHW pixels -> logits
    x = torch.as_tensor(calib).permute(0, 3, 1, 2).float().contiguous()
    layers = dict(layer_order(float_net, x))
    names = [n for n in layers if n != "normalize"]  # normalize: one exact weight per channel
    todo = [n for n in names if n not in {f"net.{s}" for s in skip}]
    if not todo:
        raise Kd2EdgeError("--rounding adaround: the student has no conv/linear layer to round")
    xr = x if range_images is None else torch.as_tensor(range_images).permute(0, 3, 1, 2).float().contiguous()
    ranges = _run(float_net, xr, todo)
    rounded = copy.deepcopy(float_net)
    mods, changed = dict(rounded.named_modules()), {}
    for i, name in enumerate(todo):
        xin = _run(rounded, x, todo, ranges, capture=(name, "in"))
        target = _run(float_net, x, [], {}, capture=(name, "out"))
        weight, frac = _learn(mods[name], xin, target, qmax, seed + i, layers[name])
        mods[name].weight.data.copy_(weight)
        changed[name[len("net."):]] = round(frac, 4)
        if on_layer:
            on_layer(i + 1, len(todo))
    out = rounded.net
    bad = [n for n, p in out.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise Kd2EdgeError(f"--rounding adaround produced non-finite weights in {bad[0]}; export with "
                           "--rounding nearest")
    record = {"rounding": "adaround", "images": int(len(calib)), "qmax": int(qmax),
              "iters_per_layer": DEFAULTS["iters"], "batch": DEFAULTS["batch"], "layers": len(todo),
              "post_activation": sum(layers[n] is not None for n in todo),
              "skipped": [n[len("net."):] for n in names if n not in todo],
              "rounded_other_way": changed, "seed": seed, "bn": "folded (eval statistics)",
              "seconds": round(time.perf_counter() - start, 1)}
    return out.eval(), record
