"""Converter and runtime output into a log file instead of the terminal.

coremltools (MIL pass progress bars), litert-torch / TFLite (absl INFO lines from C++), torch (deprecation
warnings) and onnxruntime write to Python's streams, to `logging`, through `warnings`, and from C++ straight
to file descriptors 1 and 2. `captured(path)` sends all of it to `path`: Python's sys.stdout/sys.stderr are
the log while it runs (tqdm, warnings, logging's last-resort handler) and fds 1 and 2 are redirected to it
(C++ output, and handlers bound to the original stream objects). kd2edge's own progress bars keep the
terminal (kd2edge.progress.TERMINAL). `--verbose` skips the capture.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from kd2edge import progress


def _flush(*streams) -> None:
    for s in streams:
        try:
            s.flush()
        except (AttributeError, ValueError, OSError):
            pass


@contextlib.contextmanager
def captured(path, enabled: bool = True):
    """Yield with everything written to fds 1 and 2 (and sys.stdout/sys.stderr) appended to `path`."""
    if not enabled:
        yield None
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    log = open(path, "a", buffering=1, errors="replace")
    streams = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    _flush(*streams)
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    terminal = os.fdopen(os.dup(saved[2]), "w", buffering=1)
    old = sys.stdout, sys.stderr, progress.TERMINAL
    try:
        for fd in (1, 2):
            os.dup2(log.fileno(), fd)
        sys.stdout = sys.stderr = log
        progress.TERMINAL = terminal
        yield log
    finally:
        _flush(log, *streams)
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        sys.stdout, sys.stderr, progress.TERMINAL = old
        terminal.close()
        log.close()
