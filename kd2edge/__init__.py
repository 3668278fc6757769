"""kd2edge: distill a compact CNN student, export it to ONNX/CoreML/TFLite, benchmark it on the device."""

import sys
import types

__version__ = "0.1.0"
API = ("distill", "export", "bench", "run", "evaluate")  # kd2edge.api: `from kd2edge import distill, ...`


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


class _ApiModule(types.ModuleType):
    """A stage module that is also its command's function: `from kd2edge import export` gives the package
    kd2edge.export (the names are taken by the stage modules), and calling it calls kd2edge.api.export."""

    def __call__(self, *args, **kwargs):
        return _api_function(self.__name__)(*args, **kwargs)

    @property
    def __signature__(self):
        import inspect

        return inspect.signature(_api_function(self.__name__))


def _api_function(module: str):
    import importlib

    # by name: kd2edge.api composes the stages and is loaded on the first call, never by `import kd2edge`
    return getattr(importlib.import_module("kd2edge.api"), module.rsplit(".", 1)[1])


def api_module(name: str) -> None:
    """Make the module `name` (one of API) callable; each calls this at its end."""
    sys.modules[name].__class__ = _ApiModule


def __getattr__(name: str):
    if name in API:  # `kd2edge.export(...)` after a bare `import kd2edge`
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'kd2edge' has no attribute {name!r}")
