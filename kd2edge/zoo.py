"""The model zoo: a dict from names to factories. Every net takes normalized NCHW float input and
returns logits only; heads are `fc(x.mean((2, 3)))` so exports keep a dynamic batch axis.

- CIFAR ResNets (He et al. 2016, option-A shortcuts) whose state-dict layout matches
  akamaster/pytorch_resnet_cifar10, so the shared teachers load strictly: resnet20/32/44/56/110.
- Compact students sized by arguments: `plaincnn` (conv-BN-ReLU stages), `fastcnn` (stem + pooled stages with
  residual convs, laid out for CPU throughput: `stem`, `widths`, `blocks`), `resnet8`/`resnet14` (narrow
  CIFAR ResNets, `width`), `mobilenetv2` (inverted residuals for 32x32 inputs, `width_mult`), `shufflenetv2`
  (channel-split depthwise units for 32x32 inputs: `stem`, `widths`, `repeats`, `last_channels`).
- Any torchvision classification model as `tv:<name>` (e.g. `tv:resnet18`), with `num_classes`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kd2edge import Kd2EdgeError


class ShortcutA(nn.Module):
    """Option-A shortcut: subsample by 2 and zero-pad channels (no parameters)."""

    def __init__(self, pad: int):
        super().__init__()
        self.pad = pad

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = ShortcutA(cout // 4) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Depth 6n+2, three stages of width w, 2w, 4w. Keys: conv1, bn1, layer1..3, linear."""

    def __init__(self, depth: int = 20, num_classes: int = 10, width: int = 16):
        super().__init__()
        if (depth - 2) % 6:
            raise Kd2EdgeError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        if width < 2 or width % 2:  # option-A shortcuts zero-pad w -> 2w channels by w/2 on each side
            raise Kd2EdgeError(f"CIFAR ResNet width must be an even number >= 2, got {width}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers, cin = [], width
        for i, w in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(x.mean((2, 3)))


def conv_bn(cin, cout, k=3, stride=1, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True) if act == "relu6" else nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class PlainCNN(nn.Module):
    """conv-BN-ReLU stages; `depth` convs per stage, max-pool between stages, widths w, 2w, 4w."""

    def __init__(self, num_classes: int = 10, width: int = 32, depth: int = 1, stages: int = 3):
        super().__init__()
        layers, cin = [], 3
        for s in range(stages):
            w = width * 2 ** s
            for _ in range(depth):
                layers.append(conv_bn(cin, w))
                cin = w
            if s < stages - 1:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


class ResidualConv(nn.Module):
    """x + ReLU(BN(conv3x3(x))), width unchanged."""

    def __init__(self, width: int):
        super().__init__()
        self.conv = conv_bn(width, width)

    def forward(self, x):
        return x + self.conv(x)


class FastCNN(nn.Module):
    """A compact CNN laid out for CPU throughput (in the spirit of airbench's net): a narrow stem conv at full
    resolution, max-pool, then one stage per entry of `widths` (a conv-BN-ReLU that sets the width, then
    `blocks[i]` residual conv-BN-ReLU), max-pool between stages. Most MACs land at 16x16 and below, where a CPU
    does more work per byte moved. Defaults: 11.1M MACs, 293k params (resnet8: 12.2M, 75k); it learns far more
    per CPU-second than resnet8 (benchmarks/distill.md, "Equal wall time")."""

    def __init__(self, num_classes: int = 10, stem: int = 16, widths=(32, 64, 128), blocks=(1, 1, 1)):
        super().__init__()
        widths, blocks = tuple(widths), tuple(blocks)
        if len(widths) != len(blocks) or not widths:
            raise ValueError(f"widths {widths} and blocks {blocks} need one entry per stage")
        layers, cin = [conv_bn(3, stem), nn.MaxPool2d(2)], stem
        for i, (w, n) in enumerate(zip(widths, blocks)):
            layers.append(conv_bn(cin, w))
            layers += [ResidualConv(w) for _ in range(n)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            cin = w
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = [conv_bn(cin, hidden, 1, act="relu6")] if expand != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden, act="relu6"), conv_bn(hidden, cout, 1, act=False)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2Cifar(nn.Module):
    """MobileNetV2 for 32x32 inputs: stride-1 stem, downsampling only in the last three stage groups."""

    # (expansion, channels, repeats, stride)
    CONFIG = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, num_classes: int = 10, width_mult: float = 1.0, last_channels: int = 1280):
        super().__init__()

        def ch(c):
            return max(8, int(c * width_mult + 4) // 8 * 8)

        cin = ch(32)
        layers = [conv_bn(3, cin, 3, 1, act="relu6")]
        for t, c, n, s in self.CONFIG:
            for i in range(n):
                layers.append(InvertedResidual(cin, ch(c), s if i == 0 else 1, t))
                cin = ch(c)
        last = ch(last_channels)
        layers.append(conv_bn(cin, last, 1, act="relu6"))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


def channel_shuffle(x, groups: int = 2):
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit (Ma et al. 2018). Stride 1: half the channels pass through, the other half runs
    1x1 -> depthwise 3x3 -> 1x1; stride 2: both halves are branches over the whole input (depthwise 3x3 stride 2
    -> 1x1, and 1x1 -> depthwise 3x3 stride 2 -> 1x1), doubling the width. Then concat and shuffle."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        if cout % 2 or (stride == 1 and cin != cout):
            raise ValueError(f"a ShuffleNetV2 unit needs an even width and cin == cout at stride 1 ({cin} -> {cout})")
        half = cout // 2
        self.stride = stride
        self.branch1 = (nn.Sequential(conv_bn(cin, cin, 3, stride, groups=cin, act=False), conv_bn(cin, half, 1))
                        if stride > 1 else None)  # stride 1: the first half passes through
        b_in = cin if stride > 1 else half
        self.branch2 = nn.Sequential(conv_bn(b_in, half, 1), conv_bn(half, half, 3, stride, groups=half, act=False),
                                     conv_bn(half, half, 1))

    def forward(self, x):
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            out = torch.cat((a, self.branch2(b)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        return channel_shuffle(out)


class ShuffleNetV2Cifar(nn.Module):
    """ShuffleNetV2 for 32x32 inputs: a stride-1 stem conv and no max-pool (the ImageNet net's 4x stem would leave
    8x8 for the first stage), then stages of `repeats[i]` units of `widths[i]` channels at 16/8/4 pixels (the
    first unit of each halves the resolution), a 1x1 conv to `last_channels`, mean-pool and the classifier.
    The defaults are the x0.5 net: 10.9M MACs, 352k params (public CIFAR-10 tables: ~90% trained from scratch)."""

    def __init__(self, num_classes: int = 10, stem: int = 24, widths=(48, 96, 192), repeats=(4, 8, 4),
                 last_channels: int = 1024):
        super().__init__()
        widths, repeats = tuple(widths), tuple(repeats)
        if len(widths) != len(repeats) or not widths or min(repeats) < 1:
            raise ValueError(f"widths {widths} and repeats {repeats} need one entry (>= 1 unit) per stage")
        layers, cin = [conv_bn(3, stem)], stem
        for w, n in zip(widths, repeats):
            layers += [ShuffleUnit(cin if i == 0 else w, w, 2 if i == 0 else 1) for i in range(n)]
            cin = w
        layers.append(conv_bn(cin, last_channels, 1))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(last_channels, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def _torchvision(name: str, num_classes: int, **kw):
    import torchvision

    try:
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kw)
    except ValueError:
        raise Kd2EdgeError(f"unknown torchvision model {name!r}; see torchvision.models.list_models()") from None


MODELS = {
    "resnet20": lambda num_classes=10, **kw: CifarResNet(20, num_classes, **kw),
    "resnet32": lambda num_classes=10, **kw: CifarResNet(32, num_classes, **kw),
    "resnet44": lambda num_classes=10, **kw: CifarResNet(44, num_classes, **kw),
    "resnet56": lambda num_classes=10, **kw: CifarResNet(56, num_classes, **kw),
    "resnet110": lambda num_classes=10, **kw: CifarResNet(110, num_classes, **kw),
    "resnet8": lambda num_classes=10, width=16, **kw: CifarResNet(8, num_classes, width, **kw),
    "resnet14": lambda num_classes=10, width=16, **kw: CifarResNet(14, num_classes, width, **kw),
    "plaincnn": lambda num_classes=10, **kw: PlainCNN(num_classes, **kw),
    "fastcnn": lambda num_classes=10, **kw: FastCNN(num_classes, **kw),
    "mobilenetv2": lambda num_classes=10, width_mult=0.5, **kw: MobileNetV2Cifar(num_classes, width_mult, **kw),
    "shufflenetv2": lambda num_classes=10, **kw: ShuffleNetV2Cifar(num_classes, **kw),
}
STUDENTS = ("plaincnn", "fastcnn", "resnet8", "resnet14", "mobilenetv2", "shufflenetv2")
TORCHVISION_PREFIX = "tv:"
# Size knobs of each net (keyword arguments of create_model) with their defaults; tests check they agree.
# mobilenetv2: every channel count, last_channels included, is scaled by width_mult (640 at the default 0.5).
_RESNET_KNOBS = {"width": 16}
KNOBS = {**{f"resnet{d}": _RESNET_KNOBS for d in (20, 32, 44, 56, 110, 8, 14)},
         "plaincnn": {"width": 32, "depth": 1, "stages": 3},
         "fastcnn": {"stem": 16, "widths": (32, 64, 128), "blocks": (1, 1, 1)},
         "mobilenetv2": {"width_mult": 0.5, "last_channels": 1280},
         "shufflenetv2": {"stem": 24, "widths": (48, 96, 192), "repeats": (4, 8, 4), "last_channels": 1024}}


def create_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    if name.startswith(TORCHVISION_PREFIX):
        return _torchvision(name[len(TORCHVISION_PREFIX):], num_classes, **kwargs)
    if name not in MODELS:
        raise Kd2EdgeError(f"unknown arch {name!r}; valid: {', '.join(MODELS)} or tv:<torchvision name>")
    unknown = set(kwargs) - set(KNOBS.get(name, {}))
    if unknown:
        raise Kd2EdgeError(f"arch {name!r} has no option {', '.join(sorted(unknown))}; its size knobs are "
                           f"{', '.join(f'{k}={v}' for k, v in KNOBS.get(name, {}).items()) or 'none'}")
    try:
        return MODELS[name](num_classes=num_classes, **kwargs)
    except (TypeError, ValueError, ZeroDivisionError) as e:
        raise Kd2EdgeError(f"bad arguments for arch {name!r} {kwargs}: {e}") from None


def describe(name: str, num_classes: int = 10, input_size=(3, 32, 32)) -> dict:
    """One zoo row: name, role, size knobs with defaults, params and MACs at `input_size`."""
    m = create_model(name, num_classes)
    return {"name": name, "role": "student" if name in STUDENTS else "teacher", "knobs": dict(KNOBS.get(name, {})),
            "params": count_params(m), "macs": count_macs(m, input_size)}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size=(3, 32, 32)) -> int:
    """Multiply-accumulates for one image, from torch's own FLOP counter (FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *input_size))
    model.train(was_training)
    return counter.get_total_flops() // 2
