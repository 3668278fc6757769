"""kd2edge: distill a compact CNN student, export it to ONNX/CoreML/TFLite, benchmark it on the device."""

__version__ = "0.1.0"


class Kd2EdgeError(Exception):
    """A user-facing problem (bad input, missing file or dependency). The CLI prints it as one line."""


def require(module: str, extra: str):
    """Import an optional dependency or fail with the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise Kd2EdgeError(
            f"{module} is not installed ({e}); install it with: pip install 'kd2edge[{extra}]'"
        ) from None
