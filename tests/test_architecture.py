"""The shape of the package: the CLI's choices agree with the registries, imports flow one way (base ->
torch foundation -> stages -> run/CLI, no circle), and the device path (the CLI + the bench package) imports
no torch, no converter and nothing of distill/export."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "kd2edge"
BASE = {"kd2edge", "kd2edge.files", "kd2edge.locations", "kd2edge.pretrained", "kd2edge.data",
        "kd2edge.metrics", "kd2edge.artifact", "kd2edge.render", "kd2edge.plots", "kd2edge.progress",
        "kd2edge.timing", "kd2edge.input_contract", "kd2edge.numbers", "kd2edge.verdict", "kd2edge.capture"}  # + kd2edge.runtimes.*: torch-free
FOUNDATION = {"kd2edge.zoo", "kd2edge.batches", "kd2edge.checkpoint", "kd2edge.evaluate", "kd2edge.onnx_graph"}  # torch
COMPOSE = {"kd2edge.run", "kd2edge.run_report", "kd2edge.cli", "kd2edge.__main__", "kd2edge.api"}


def _layer(module: str) -> str:
    if module in BASE or module.startswith("kd2edge.runtimes"):
        return "base"
    if module in FOUNDATION:
        return "foundation"
    if module in COMPOSE:
        return "compose"
    return module.split(".")[1]  # distill, export, bench


# what each layer may import (besides itself)
ALLOWED = {"base": {"base"}, "foundation": {"base", "foundation"}, "bench": {"base"},
           "distill": {"base", "foundation"}, "export": {"base", "foundation"},
           "compose": {"base", "foundation", "distill", "export", "bench"}}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, modules) -> set[str]:
    """Every kd2edge module imported anywhere in the file (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found |= {n for n in names if n in modules}
    return found


def test_imports_flow_one_way_without_a_circle():
    modules = _modules()
    graph = {m: _imports(p, modules) - {m} for m, p in modules.items()}
    upward = [f"{m} -> {d}" for m, deps in graph.items() for d in deps
              if _layer(d) != _layer(m) and _layer(d) not in ALLOWED[_layer(m)]]
    assert not upward, upward
    # a package imports its submodules (its __init__ re-exports); anything else in a circle is a tangle
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    state, circle = {}, []

    def visit(m, path):
        state[m] = "open"
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                circle.append(path[path.index(d):] + [d] if d in path else [m, d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not circle, circle


def test_cli_choices_agree_with_the_registries():
    from kd2edge import cli
    from kd2edge.artifact import TARGET_RUNTIME
    from kd2edge.distill.config import TEACHER_PRECISIONS
    from kd2edge.distill.loop import OPTIMIZERS
    from kd2edge.distill.methods import METHODS
    from kd2edge.distill.schedules import LR_SCHEDULES
    from kd2edge.export.targets import ALL, TARGETS, get_target
    from kd2edge.runtimes import RUNTIMES

    def values(enum):
        return sorted(e.value for e in enum)

    assert values(cli.Method) == sorted(METHODS)
    assert values(cli.Schedule) == sorted(LR_SCHEDULES)
    assert values(cli.Optimizer) == sorted(OPTIMIZERS)
    assert values(cli.TeacherPrecision) == sorted(TEACHER_PRECISIONS)
    assert [e.value for e in cli.TargetChoice] == [*TARGETS, ALL]
    from kd2edge.artifact import KEEP_FLOAT

    assert [e.value for e in cli.KeepFloat] == list(KEEP_FLOAT)
    assert list(TARGETS) == list(TARGET_RUNTIME)  # every target is in the artifact contract, with its runtime
    assert {name: get_target(name).RUNTIME for name in TARGETS} == TARGET_RUNTIME
    assert set(TARGET_RUNTIME.values()) == set(RUNTIMES)
    from kd2edge.bench.protocols import PROTOCOLS

    assert [e.value for e in cli.ProtocolChoice] == list(PROTOCOLS)

    from kd2edge.evaluate import MATCH_CLASSES
    from kd2edge.input_contract import PRESETS

    assert values(cli.MatchClasses) == sorted(MATCH_CLASSES)
    assert cli.CONTRACT_HELP.startswith("preset " + " | ".join(PRESETS) + ",")


DEVICE_PATH = '''
import json, sys
import kd2edge.cli, kd2edge.bench, kd2edge.bench.stage, kd2edge.bench.reports, kd2edge.bench.fingerprint
import kd2edge.bench.log_import, kd2edge.artifact, kd2edge.runtimes.ort, kd2edge.runtimes.litert
import kd2edge.runtimes.coreml, kd2edge.timing, kd2edge.progress
import kd2edge.bench.protocols, kd2edge.bench.sustained, kd2edge.bench.profile, kd2edge.bench.sensors
print(json.dumps(sorted(sys.modules)))
'''
FORBIDDEN = ("torch", "torchvision", "torchao", "onnx", "onnxscript", "onnxsim", "coremltools", "litert_torch",
             "tensorflow", "kd2edge.distill", "kd2edge.export", "kd2edge.zoo", "kd2edge.checkpoint",
             "kd2edge.batches", "kd2edge.evaluate")


def test_device_path_imports_no_torch_converter_or_stage():
    r = subprocess.run([sys.executable, "-c", DEVICE_PATH], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    loaded = json.loads(r.stdout)
    bad = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert not bad, bad
