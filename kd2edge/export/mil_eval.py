"""Evaluate a saved CoreML ML program (.mlpackage) with numpy, op by op, so a CoreML artifact can be
checked on Linux where the CoreML runtime does not exist.

The program is read back from the saved package (spec + weight blobs) with coremltools' MIL proto loader,
so what is evaluated is exactly what was written. Covers the ops of the kd2edge zoo (conv nets with
residual adds, pools, paddings, slices, linear heads), fp16 casts, constexpr weight dequantization and
quantize/dequantize pairs (W8A8). An op outside this set raises an error naming it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from kd2edge import Kd2EdgeError, require

DTYPES = {"fp16": np.float16, "fp32": np.float32, "int32": np.int32, "int8": np.int8, "uint8": np.uint8,
          "bool": np.bool_, "int16": np.int16, "uint16": np.uint16}


def load_program(path):
    """The pymil Program of a saved .mlpackage (consts carry their numpy values)."""
    ct = require("coremltools", "export")
    from coremltools.converters.mil.frontend.milproto.load import load

    path = Path(path)
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    if not spec.HasField("mlProgram"):
        raise Kd2EdgeError(f"{path} is not an ML program; only mlprogram packages can be evaluated with numpy")
    return load(spec, spec.specificationVersion, file_weights_dir=str(path / "Data/com.apple.CoreML/weights"))


def _conv(x, w, b=None, strides=(1, 1), pad=(0, 0, 0, 0), dilations=(1, 1), groups=1):
    """NCHW convolution by im2col + matmul, accumulated in float32 (float64 for float64 inputs)."""
    acc = np.float64 if x.dtype == np.float64 else np.float32
    x, w = x.astype(acc), w.astype(acc)
    n, c, h, wd = x.shape
    cout, cin_g, kh, kw = w.shape
    t, bt, l, r = pad
    xp = np.pad(x, ((0, 0), (0, 0), (t, bt), (l, r)))
    sh, sw = strides
    dh, dw = dilations
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=acc)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]
    cols = cols.reshape(n, groups, cin_g * kh * kw, oh * ow)
    wg = w.reshape(groups, cout // groups, cin_g * kh * kw)
    out = np.einsum("gok,ngkp->ngop", wg, cols, optimize=True).reshape(n, cout, oh, ow)
    if b is not None:
        out += b.astype(acc).reshape(1, -1, 1, 1)
    return out


def _pads(kind, pad, x_hw, kernel, strides, dilations):
    if kind == "custom":
        return [int(v) for v in pad]
    if kind == "valid":
        return [0, 0, 0, 0]
    out = []  # same / same_lower
    for size, k, s, d in zip(x_hw, kernel, strides, dilations):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        lo = total // 2 if kind == "same" else total - total // 2
        out += [lo, total - lo]
    return out


def _pool(x, kernel, strides, pad, reduce, fill):
    t, b, l, r = pad
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=fill)
    kh, kw = kernel
    sh, sw = strides
    oh, ow = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    windows = np.stack([xp[:, :, i: i + sh * (oh - 1) + 1: sh, j: j + sw * (ow - 1) + 1: sw]
                        for i in range(kh) for j in range(kw)])
    return reduce(windows, axis=0).astype(x.dtype)


def _axis_shape(value, ndim, axis):
    value = np.asarray(value)
    if value.ndim == 0 or axis is None:
        return value
    shape = [1] * ndim
    shape[axis] = -1
    return value.reshape(shape)


def _slice(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    idx = []
    stride = stride if stride is not None else [1] * x.ndim
    for d in range(x.ndim):
        lo = None if begin_mask is not None and begin_mask[d] else int(begin[d])
        hi = None if end_mask is not None and end_mask[d] else int(end[d])
        if squeeze_mask is not None and squeeze_mask[d]:
            idx.append(int(begin[d]))
        else:
            idx.append(slice(lo, hi, int(stride[d])))
    return x[tuple(idx)]


def _pad(x, pad, mode="constant", constant_val=0.0):
    pad = [int(v) for v in pad]
    k = len(pad) // 2
    width = [(0, 0)] * (x.ndim - k) + [(pad[2 * i], pad[2 * i + 1]) for i in range(k)]
    if mode == "constant":
        return np.pad(x, width, constant_values=constant_val)
    return np.pad(x, width, mode={"reflect": "reflect", "replicate": "edge"}[mode])


def _quantize(input, scale, zero_point=None, axis=None, output_dtype="int8"):
    dt = DTYPES[output_dtype]
    info = np.iinfo(dt)
    s = _axis_shape(scale, input.ndim, axis)
    z = _axis_shape(zero_point if zero_point is not None else 0, input.ndim, axis)
    q = np.round(input.astype(np.float32) / s) + z
    return np.clip(q, info.min, info.max).astype(dt)


def _dequantize(input, scale, zero_point=None, axis=None):
    s = _axis_shape(scale, input.ndim, axis)
    z = _axis_shape(zero_point if zero_point is not None else 0, input.ndim, axis)
    return ((input.astype(np.float32) - z) * s).astype(np.asarray(scale).dtype)


def _concat(values, axis, interleave=False):
    values = [np.asarray(v) for v in values]
    axis = int(axis) % values[0].ndim
    if not interleave:
        return np.concatenate(values, axis)
    stacked = np.stack(values, axis + 1)  # out[..., i * n + j, ...] = values[j][..., i, ...]
    return stacked.reshape(*values[0].shape[:axis], -1, *values[0].shape[axis + 1:])


def _split(x, axis, num_splits=None, split_sizes=None):
    points = np.cumsum(split_sizes)[:-1] if split_sizes is not None else int(num_splits)
    return tuple(np.split(x, points, axis=int(axis)))


def _f(a):
    return a.dtype if a.dtype in (np.float16, np.float32, np.float64) else np.float32


OPS = {
    "conv": lambda x, weight, bias=None, strides=(1, 1), pad_type="valid", pad=(0, 0, 0, 0), dilations=(1, 1),
    groups=1: _conv(x, weight, bias, strides,
                    _pads(pad_type, pad, x.shape[2:], weight.shape[2:], strides, dilations), dilations,
                    int(groups)).astype(_f(x)),
    "linear": lambda x, weight, bias=None: (x.astype(np.float32) @ weight.astype(np.float32).T +
                                            (0 if bias is None else bias.astype(np.float32))).astype(_f(x)),
    "matmul": lambda x, y, transpose_x=False, transpose_y=False: np.matmul(
        np.swapaxes(x, -1, -2) if transpose_x else x, np.swapaxes(y, -1, -2) if transpose_y else y),
    "relu": lambda x: np.maximum(x, 0).astype(x.dtype),
    "relu6": lambda x: np.clip(x, 0, 6).astype(x.dtype),
    "clip": lambda x, alpha, beta: np.clip(x, alpha, beta).astype(x.dtype),
    "add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
    "real_div": lambda x, y: x / y, "maximum": np.maximum, "minimum": np.minimum,
    "transpose": lambda x, perm: np.transpose(x, [int(p) for p in perm]),
    "reshape": lambda x, shape: x.reshape([int(s) for s in shape]),
    "squeeze": lambda x, axes=None: np.squeeze(x, axis=None if axes is None else tuple(int(a) for a in axes)),
    "expand_dims": lambda x, axes: np.expand_dims(x, tuple(int(a) for a in axes)),
    "reduce_mean": lambda x, axes=None, keep_dims=False: np.mean(
        x.astype(np.float32), axis=None if axes is None else tuple(int(a) for a in axes),
        keepdims=bool(keep_dims)).astype(_f(x)),
    "slice_by_index": _slice,
    "concat": _concat,
    "split": _split,
    "pad": _pad,
    "cast": lambda x, dtype: x.astype(DTYPES[str(dtype)]),
    "identity": lambda x: x,
    "batch_norm": lambda x, mean, variance, gamma=None, beta=None, epsilon=1e-5: (
        (x - _axis_shape(mean, x.ndim, 1)) / np.sqrt(_axis_shape(variance, x.ndim, 1) + epsilon)
        * (1 if gamma is None else _axis_shape(gamma, x.ndim, 1)) + (0 if beta is None else _axis_shape(beta, x.ndim, 1))
    ).astype(x.dtype),
    "max_pool": lambda x, kernel_sizes, strides, pad_type, pad=(0, 0, 0, 0), ceil_mode=False: _pool(
        x, kernel_sizes, strides, _pads(pad_type, pad, x.shape[2:], kernel_sizes, strides, (1, 1)), np.max, -np.inf),
    "avg_pool": lambda x, kernel_sizes, strides, pad_type, pad=(0, 0, 0, 0), exclude_padding_from_average=False,
    ceil_mode=False: _pool(x, kernel_sizes, strides,
                           _pads(pad_type, pad, x.shape[2:], kernel_sizes, strides, (1, 1)), np.mean, 0),
    "softmax": lambda x, axis=-1: np.exp(x - x.max(axis, keepdims=True)) / np.exp(
        x - x.max(axis, keepdims=True)).sum(axis, keepdims=True),
    "constexpr_affine_dequantize": lambda quantized_data, zero_point, scale, axis: _dequantize(
        quantized_data, scale, zero_point, int(axis) if np.ndim(scale) else None),
    "constexpr_blockwise_shift_scale": lambda data, scale, offset=None: (
        (data.astype(np.float32) - (0 if offset is None else _repeat_blocks(offset, data.shape)))
        * _repeat_blocks(scale, data.shape)).astype(scale.dtype),
    "quantize": _quantize,
    "dequantize": _dequantize,
}


def _repeat_blocks(v, shape):
    v = np.asarray(v)
    for axis, (a, b) in enumerate(zip(v.shape, shape)):
        if a != b:
            v = np.repeat(v, b // a, axis=axis)
    return v


def _value(var, env):
    if isinstance(var, (list, tuple)):
        return [_value(v, env) for v in var]
    if var.name in env:
        return env[var.name]
    if var.val is not None:
        return np.asarray(var.val) if not isinstance(var.val, str) else var.val
    raise Kd2EdgeError(f"numpy MIL evaluation: value of {var.name} is unknown")


def evaluate_program(path_or_program, inputs: dict, function: str = "main") -> dict:
    """Run the program on numpy inputs {name: array}; returns {output name: array}."""
    program = load_program(path_or_program) if isinstance(path_or_program, (str, Path)) else path_or_program
    fn = program.functions[function]
    env = {}
    for name, var in fn.inputs.items():
        if name not in inputs:
            raise Kd2EdgeError(f"numpy MIL evaluation: missing input {name!r}")
        env[var.name] = np.asarray(inputs[name]).astype(DTYPES.get(var.dtype.__name__, np.float32)
                                                        if hasattr(var.dtype, "__name__") else np.float32)
    for op in fn.operations:
        if op.op_type == "const":
            env[op.outputs[0].name] = np.asarray(op.outputs[0].val)
            continue
        impl = OPS.get(op.op_type)
        if impl is None:
            raise Kd2EdgeError(f"numpy MIL evaluation does not cover op {op.op_type!r} ({op.name}); "
                               f"covered: {', '.join(sorted(OPS))}")
        args = {k: _value(v, env) for k, v in op.inputs.items()}
        args = {k: (v.item() if isinstance(v, np.ndarray) and v.ndim == 0 and k not in ("x", "y") else v)
                for k, v in args.items()}
        out = impl(**args)
        outs = out if isinstance(out, tuple) else (out,)
        for var, val in zip(op.outputs, outs):
            env[var.name] = np.asarray(val)
    return {v.name: env[v.name] for v in fn.outputs}
