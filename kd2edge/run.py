"""`kd2edge run CONFIG`: teacher -> hard-label baseline + distilled student -> exports -> bench -> report.

Config (YAML; see benchmarks/configs/quickstart.yaml): top-level `name`, `out`, `teacher`, `teacher_arch`,
`dataset`, `data_dir`, `student`, `student_kwargs`, `seed`, `baseline` (also train the hard-label student),
`distill` (any `kd2edge distill` key: method, epochs, T, alpha, limit_train, ...), `export` (targets, int8,
calib_images, eval_images, max_drop, teacher: also export the teacher), `bench` (threads, runs, warmup),
`report` (the verdict's rule, kd2edge.verdict: max_latency_ms, max_drop vs the teacher, seed_spread_pt).

Every stage is reused when its inputs did not change: students live in `<out>/students/<method>-<key>/`
(key = hash of the resolved distill config and the teacher's sha256), artifacts in `<out>/exports/` are
reused when their meta.json records the same source checkpoint sha256 and export settings, and evaluations
are cached by checkpoint sha256. Changing only the targets re-runs export and bench, never training.
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path

from kd2edge import Kd2EdgeError
from kd2edge.files import sha256, write_json
from kd2edge.locations import run_folder
from kd2edge.pretrained import arch_of, ensemble_members
from kd2edge.verdict import check_rules

DEFAULTS = {
    "name": "run", "out": None, "teacher": "cifar10-resnet56", "teacher_arch": None, "dataset": "cifar10",
    "data_dir": None, "student": "resnet8", "student_kwargs": {}, "seed": 0, "baseline": True,
    "distill": {"method": "kd", "epochs": 10},
    "export": {"targets": ["onnx", "tflite", "coreml"], "int8": True, "calib_images": 256, "eval_images": 1000,
               "max_drop": 1.0, "teacher": True},
    "bench": {"threads": [1, 2], "runs": 100, "warmup": 10},
    "report": {"max_latency_ms": None, "max_drop": None, "seed_spread_pt": None},
}
SECTIONS = ("distill", "export", "bench", "report")


def merge(base: dict, extra: dict, where: str = "config") -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if k not in base:
            raise Kd2EdgeError(f"unknown {where} key {k!r}; valid: {', '.join(base)}")
        if k in SECTIONS and not isinstance(v, dict):
            raise Kd2EdgeError(f"{where} key {k!r} must be a mapping of keys (e.g. {k}: {{{', '.join(base[k])}}}), "
                               f"got {type(v).__name__} {v!r}")
        if k in SECTIONS and k != "distill" and isinstance(v, dict):
            out[k] = merge(base[k], v, f"{where}.{k}")
        elif k == "distill" and isinstance(v, dict):
            out[k] = {**base[k], **v}
        else:
            out[k] = v
    return out


def set_override(cfg: dict, assignment: str) -> None:
    """Apply `key.sub=value` (value parsed as YAML) to a nested config."""
    import yaml

    if "=" not in assignment:
        raise Kd2EdgeError(f"--set expects key=value (e.g. distill.epochs=3), got {assignment!r}")
    key, value = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = cfg
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            raise Kd2EdgeError(f"--set {key}: {p!r} is not a config section ({', '.join(SECTIONS)})")
        node = node[p]
    if parts[-1] not in node and parts[0] not in ("distill",):
        raise Kd2EdgeError(f"--set {key}: unknown key; valid: {', '.join(node)}")
    node[parts[-1]] = yaml.safe_load(value)


def load_config(path, overrides: dict | None = None, sets: list[str] = ()) -> dict:
    from kd2edge.files import read_yaml_mapping

    data = dict(path) if isinstance(path, dict) else read_yaml_mapping(path, " (see benchmarks/configs/ for examples)")
    cfg = merge(DEFAULTS, data)
    for s in sets:
        set_override(cfg, s)
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        section, _, key = k.rpartition(".")
        (cfg[section] if section else cfg)[key] = v
    cfg["out"] = str(cfg["out"] or run_folder("run", cfg["name"]))
    check_config(cfg)
    check_rules(cfg["report"])
    return cfg


def check_config(cfg: dict) -> None:
    """Every stage's settings checked before any training (a bad thread count must not cost a distill run)."""
    from kd2edge import require
    from kd2edge.artifact import TARGET_RUNTIME
    from kd2edge.distill import resolve_config
    from kd2edge.files import check_out_dir
    from kd2edge.numbers import number

    if ensemble_members(cfg["teacher"]):
        raise Kd2EdgeError(f"kd2edge run takes one teacher checkpoint, got the ensemble {cfg['teacher']!r}; distill "
                           f"from an ensemble with `kd2edge distill --teacher {cfg['teacher']} ...`, then "
                           f"`kd2edge export` its student")
    for section in SECTIONS:
        if not isinstance(cfg[section], dict):
            raise Kd2EdgeError(f"config key {section!r} must be a mapping, got {type(cfg[section]).__name__}")
    e, b = cfg["export"], cfg["bench"]
    targets = [e["targets"]] if isinstance(e["targets"], str) else e["targets"]
    if not isinstance(targets, list) or not targets or any(t not in [*TARGET_RUNTIME, "all"] for t in targets):
        raise Kd2EdgeError(f"export.targets must be a list of {', '.join([*TARGET_RUNTIME, 'all'])}, got "
                           f"{e['targets']!r}")
    if not isinstance(e["int8"], bool) or not isinstance(e["teacher"], bool) or not isinstance(cfg["baseline"], bool):
        raise Kd2EdgeError("export.int8, export.teacher and baseline must be true or false")
    number("export.calib_images", e["calib_images"], integer=True, low=1)
    number("export.eval_images", e["eval_images"], integer=True, low=1)
    number("export.max_drop", e["max_drop"], low=0)
    for t in b["threads"] if isinstance(b["threads"], list) else [b["threads"]]:
        number("bench.threads", t, integer=True, low=1)
    number("bench.runs", b["runs"], integer=True, low=1)
    number("bench.warmup", b["warmup"], integer=True, low=0)
    method = cfg["distill"].get("method", "kd")
    for m in (["ce"] if cfg["baseline"] and method != "ce" else []) + [method]:
        train_config(cfg, m, "_")
    check_out_dir(cfg["out"])
    require("matplotlib", "plot")  # the report's plots: fail now, not after training


def _key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _teacher_file(cfg: dict) -> tuple[str, str]:
    """(path, sha256) of the teacher (a known name is fetched when missing, like setup.sh does)."""
    from kd2edge.pretrained import fetch, resolve_checkpoint

    t = cfg["teacher"]
    path = fetch(t) if arch_of(t) else resolve_checkpoint(t)
    return str(path), sha256(path)


def train_config(cfg: dict, method: str, teacher: str) -> dict:
    """The distill config of one student of the run (validated)."""
    from kd2edge.distill import resolve_config

    d = {**cfg["distill"], "method": method, "teacher": teacher,
         "teacher_arch": cfg["teacher_arch"] or arch_of(cfg["teacher"]),
         "student": cfg["student"], "student_kwargs": cfg["student_kwargs"], "dataset": cfg["dataset"],
         "data_dir": cfg["data_dir"], "seed": cfg["seed"]}
    if method == "ce":
        d = {k: v for k, v in d.items() if k not in ("T", "alpha", "beta", "feature_weight", "feature_layers")}
    resolve_config(d, out="_")
    return d


def train_student(cfg: dict, method: str, teacher: str, teacher_sha: str, progress: bool) -> dict:
    from kd2edge.distill import distill, resolve_config

    d = train_config(cfg, method, teacher)
    resolved = resolve_config(d, out="_")
    ignore = {"out", "progress", "threads", "data_dir", "cache_dir", "resume", "overwrite", "latency", "val_every"}
    key = _key({"config": {k: v for k, v in resolved.items() if k not in ignore}, "teacher": teacher_sha})
    out = Path(cfg["out"]) / "students" / f"{method}-{key}"
    if resolved["time_budget"] is None:
        return distill(d, out=str(out), resume=True, progress=progress, latency=False)
    # a budgeted run follows the clock and cannot be continued: a finished one (same key) is reused, an
    # interrupted one starts over
    if (out / "metrics.json").exists():
        from kd2edge.distill.stage import finished_result

        return finished_result(out)
    return distill(d, out=str(out), overwrite=True, progress=progress, latency=False)


def evaluate_cached(checkpoint: str, arch: str | None, cfg: dict, cache: Path) -> dict:
    """`kd2edge eval` of a checkpoint on the test set, cached by its sha256."""
    from kd2edge.evaluate import evaluate

    path = cache / sha256(checkpoint)[:16] / "eval.json"
    result = json.loads(path.read_text()) if path.exists() else evaluate(
        checkpoint, arch, cfg["dataset"], "test", cfg["data_dir"], out=path.parent)
    return {**result, "_dir": str(path.parent)}


def export_cached(checkpoint: str, arch: str | None, name: str, cfg: dict, out: Path, progress: bool,
                  verbose: bool = False) -> list[dict]:
    """Reuse artifact folders whose meta.json records this checkpoint and these settings; export the missing
    (target, precision) pairs in ONE export call (checkpoint and data loaded once)."""
    from kd2edge.artifact import folder_name, read_meta
    from kd2edge.export import export
    from kd2edge.export.targets import plan

    e = cfg["export"]
    digest = sha256(checkpoint)
    settings = {"calib_images": e["calib_images"], "eval_images": e["eval_images"]}
    rows, todo = {}, []
    for target, precision in plan(e["targets"], e["int8"]):
        folder = out / folder_name(name, target, precision)
        meta = read_meta(folder)
        if meta and meta["source"]["sha256"] == digest and meta.get("run_settings") == settings:
            rows[(target, precision)] = _row_from_meta(meta, folder)
        else:
            todo.append((target, precision))
            rows[(target, precision)] = None
    if todo:
        new = export(checkpoint, arch=arch, out=out, calib_images=e["calib_images"], eval_images=e["eval_images"],
                     max_drop=e["max_drop"], dataset=cfg["dataset"], data_dir=cfg["data_dir"], name=name,
                     command=f"kd2edge run ({cfg['name']})", progress=progress, plan=todo,
                     extra_meta={"run_settings": settings}, verbose=verbose)
        rows.update({(r["target"], r["precision"]): r for r in new})
    return list(rows.values())


def _row_from_meta(meta: dict, folder: Path) -> dict:
    from kd2edge.artifact import model_size

    p = meta["parity"]
    return {"target": meta["target"], "precision": meta["precision"], "status": "ok", "reason": None,
            "path": str(folder), "size": model_size(folder / meta["model_file"]), "top1": p["top1"], "drop": p["drop"],
            "agreement": p["agreement"], "max_abs_logit_diff": p["max_abs_logit_diff"], "sqnr": p.get("sqnr_db"),
            "reused": True}


def run(cfg: dict, progress: bool = True, verbose: bool = False) -> dict:
    """The whole pipeline; returns the report dict (also written as report.json next to report.md)."""
    from kd2edge.bench import bench
    from kd2edge.evaluate import torch_bench
    from kd2edge.run_report import write_run_report

    check_rules(cfg.get("report") or {})  # before hours of training, not after
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", cfg)
    timings = {}
    t0 = time.time()
    teacher, teacher_sha = _teacher_file(cfg)
    models = {"teacher": {"checkpoint": teacher, "arch": cfg["teacher_arch"] or arch_of(cfg["teacher"]),
                          "run_dir": None}}
    method = cfg["distill"].get("method", "kd")
    if cfg["baseline"] and method != "ce":
        models["baseline (ce)"] = train_student(cfg, "ce", teacher, teacher_sha, progress)
    models[f"student ({method})"] = train_student(cfg, method, teacher, teacher_sha, progress)
    timings["distill_s"] = time.time() - t0

    t0 = time.time()
    evals = {}
    for label, m in models.items():
        evals[label] = evaluate_cached(m["checkpoint"], m.get("arch"), cfg, out / "evals")
    timings["eval_s"] = time.time() - t0

    t0 = time.time()
    exports = export_cached(models[f"student ({method})"]["checkpoint"], None, "student", cfg, out / "exports",
                            progress, verbose)
    if cfg["export"]["teacher"]:
        exports += export_cached(teacher, models["teacher"]["arch"], "teacher", cfg, out / "exports", progress, verbose)
    timings["export_s"] = time.time() - t0

    t0 = time.time()
    ok = [r["path"] for r in exports if r["status"] == "ok"]
    b = cfg["bench"]
    benches = bench(ok, threads=b["threads"], runs=b["runs"], warmup=b["warmup"], out=out / "bench",
                    progress=progress) if ok else []
    threads = b["threads"] if isinstance(b["threads"], list) else [b["threads"]]
    eager = {label: torch_bench(m["checkpoint"], m.get("arch"), threads, b["runs"], None, b["warmup"])
             for label, m in models.items()}  # the PyTorch baselines, timed right after, in this process
    timings["bench_s"] = time.time() - t0
    return write_run_report(out, cfg, models, evals, exports, benches, eager, timings)


from kd2edge import api_module  # noqa: E402

api_module(__name__)  # `from kd2edge import run` is callable (kd2edge.api)
