"""The `kd2edge` command line. Thin: each command parses flags and calls one function of its stage.

Only `bench` may run on a device without torch, so nothing here imports torch at module level.
"""
from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kd2edge import Kd2EdgeError, __version__
from kd2edge.artifact import KEEP_FLOAT, ROUNDINGS, TARGET_RUNTIME
from kd2edge.render import fmt

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Distill a compact CNN, export it to ONNX/CoreML/TFLite, benchmark it on the device.")
WIDTH = 100  # every table is laid out to fit this; the fixed width when stdout is not a terminal (CI logs, | tee)
console = Console(width=None if sys.stdout.isatty() else WIDTH)

DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="Data location (else $KD2EDGE_DATA, else ./data).")]
Arch = Annotated[Optional[str], typer.Option("--arch", help="Architecture of a foreign checkpoint (see `kd2edge zoo`).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
# kd2edge.input_contract.PRESETS, written out so that the help needs no import; test_architecture checks them
CONTRACT_HELP = ("preset raw255 | unit | imagenet | cifar10 | cifar100 | symmetric, or key=value pairs "
                 "'range=1,mean=0.5,std=0.5,layout=NHWC,order=BGR' (docs/TEACHERS.md); default: what the file "
                 "records, else a stated guess")
TeacherInput = Annotated[Optional[str], typer.Option("--teacher-input", help="How the teacher is fed: " + CONTRACT_HELP)]
MatchClasses = Enum("MatchClasses", {k: k for k in ("name", "index")}, type=str)  # evaluate.MATCH_CLASSES
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show the converters' own output (else it goes to "
                                                               "export.log in each artifact folder).")]


def _table(title: str, columns: list[str], rows: list[list]) -> Table:
    """Names on the left, never cut short (other headers wrap instead); numbers on the right."""
    t = Table(title=title)
    cells = [[fmt(v) for v in r] for r in rows]
    for i, c in enumerate(columns):
        name = c in ("name", "model", "arch", "class", "metric", "artifact", "target", "status", "ship")
        t.add_column(c, justify="left" if name else "right", no_wrap=name,
                     min_width=min(40, max((len(r[i]) for r in cells), default=0)) if name else None)
    for r in cells:
        t.add_row(*r)
    return t


class Split(str, Enum):
    test = "test"
    train = "train"


@app.command()
def zoo(as_json: AsJson = False,
        num_classes: Annotated[int, typer.Option(help="Classes of the head.")] = 10,
        size: Annotated[int, typer.Option(help="Input height and width for the MAC count.")] = 32):
    """List the model zoo: role, size knobs (create_model keyword arguments), params and MACs."""
    from kd2edge.zoo import MODELS, describe

    if num_classes < 1 or size < 8:
        raise Kd2EdgeError("--num-classes must be >= 1 and --size >= 8")
    rows = [describe(name, num_classes, (3, size, size)) for name in MODELS]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    console.print(_table(f"kd2edge zoo ({num_classes} classes, {size}x{size} input; any torchvision model as "
                         "tv:<name>)", ["name", "role", "size knobs", "params", "MACs"],
                         [[r["name"], r["role"], ", ".join(f"{k}={v}" for k, v in r["knobs"].items()), r["params"],
                           r["macs"]] for r in rows]))


@app.command("eval")
def eval_(checkpoint: Annotated[str, typer.Argument(help="Native, foreign (with --arch) or TorchScript checkpoint, "
                                                         "a known teacher name such as cifar10-resnet56, an .onnx "
                                                         "file or an artifact folder.")],
          arch: Arch = None,
          dataset: Annotated[Optional[str], typer.Option(help="cifar10, cifar100, an image folder or an .npz "
                                                              "(default: the checkpoint's dataset).")] = None,
          split: Annotated[Split, typer.Option(help="Dataset split.")] = Split.test,
          data_dir: DataDir = None,
          num_classes: Annotated[Optional[int], typer.Option(help="Classes of a foreign checkpoint's head "
                                                                  "(default: read from its last layer).")] = None,
          out: Annotated[Optional[Path], typer.Option(help="Folder for eval.json, confusion CSV and PNG.")] = None,
          limit: Annotated[Optional[int], typer.Option(help="Only the first N images.")] = None,
          batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 500,
          latency: Annotated[bool, typer.Option("--latency/--no-latency", help="Measure batch-1 latency and "
                                                "throughput.")] = True,
          threads: Annotated[Optional[int], typer.Option(help="CPU threads for torch (default: torch's).")] = None,
          download: Annotated[bool, typer.Option("--download", help="Download cifar10/cifar100 or a known "
                                                 "pretrained checkpoint when missing (needs internet).")] = False,
          input_: Annotated[Optional[str], typer.Option("--input", help="How the model is fed: " + CONTRACT_HELP)] = None,
          match_classes: Annotated[MatchClasses, typer.Option(help="Match dataset classes to the model's by name "
                                                              "(refuse when they cannot be), or by index.")] = MatchClasses.name,
          as_json: AsJson = False):
    """Evaluate a model (checkpoint, TorchScript, .onnx or artifact folder): top-1/top-5, per-class P/R/F1,
    confusion matrix, latency, params, MACs."""
    from kd2edge.evaluate import evaluate
    from kd2edge.progress import progress_bars

    from kd2edge.api import eval_folder

    out = out or eval_folder(checkpoint, dataset, split.value)
    with progress_bars(delay=0.5) as progress:  # bars only once work takes longer than half a second
        r = evaluate(checkpoint, arch, dataset, split.value, data_dir, out, limit, batch_size=batch_size,
                     latency=latency, num_classes=num_classes, progress=progress, threads=threads,
                     download=download, contract=input_, match=match_classes.value)
    print(r["input_line"], file=sys.stderr, flush=True)
    if r.get("warning"):
        print(f"warning: {r['warning']}", file=sys.stderr, flush=True)
    if as_json:
        print(json.dumps(r, indent=2))
        return
    rows = [[c, p, rc, f, s] for c, p, rc, f, s in zip(r["classes"], r["precision"], r["recall"], r["f1"], r["support"])]
    rows.append(["macro", r["macro_precision"], r["macro_recall"], r["macro_f1"], r["n"]])
    if len(r["classes"]) <= 20:
        console.print(_table(f"{r['arch']} on {r['dataset']} {r['split']}", ["class", "precision", "recall", "F1",
                                                                            "support"], rows))
    summary = [["top-1 (%)", r["top1"]], ["top-5 (%)", r["top5"]], ["macro F1 (%)", r["macro_f1"]],
               ["images", r["n"]], ["params", r["params"]], ["MACs", r["macs"] or "n/a"]]
    if "latency_ms_b1" in r:
        summary += [["latency b1 (ms)", r["latency_ms_b1"]], [f"throughput b{r['batch']} (img/s)", r["throughput_ips"]]]
    console.print(_table(f"{r['arch']} ({r['source']}) on {r['dataset']} {r['split']}", ["metric", "value"], summary))
    console.print(f"wrote {out}/eval.json, eval_confusion.csv, eval_confusion.png", highlight=False)


# --- distill: kd2edge/distill/ owns this command ---
# The choices of the registries (kd2edge.distill.methods.METHODS, distill.schedules.LR_SCHEDULES,
# distill.loop.OPTIMIZERS, distill.config.TEACHER_PRECISIONS), written out here so that importing the CLI imports no torch;
# tests/test_architecture.py checks they agree.
Method = Enum("Method", {k: k for k in ("ce", "kd", "dkd", "hybrid")}, type=str)
Schedule = Enum("Schedule", {k: k for k in ("constant", "cosine", "onecycle", "step")}, type=str)
Optimizer = Enum("Optimizer", {k: k for k in ("sgd", "adamw")}, type=str)
TeacherPrecision = Enum("TeacherPrecision", {k: k for k in ("auto", "fp32", "bf16", "int8")}, type=str)


def _value(choice):
    return choice.value if isinstance(choice, Enum) else choice


@app.command()
def distill(config: Annotated[Optional[Path], typer.Option("--config", help="YAML file of distill keys (any key of kd2edge.distill.config.DEFAULTS); --set and flags override it.")] = None,
            set_: Annotated[Optional[list[str]], typer.Option("--set", help="Any distill key: --set T=2 --set labeled_fraction=0.05 (repeatable).")] = None,
            teacher: Annotated[Optional[str], typer.Option(help="Teacher: checkpoint, known name (cifar10-resnet56), TorchScript or .onnx.")] = None,
            teacher_arch: Annotated[Optional[str], typer.Option(help="Architecture of a foreign teacher checkpoint.")] = None,
            teacher_input: TeacherInput = None,
            teacher_precision: Annotated[Optional[TeacherPrecision], typer.Option(help="The teacher's pass: int8 (onnxruntime, built once per teacher), bf16, fp32, or auto (int8 where it serves, else bf16 where the CPU has it); default fp32, budgeted runs auto.")] = None,
            teacher_check: Annotated[Optional[bool], typer.Option("--teacher-check/--no-teacher-check", help="Stop before training when the teacher scores below teacher_min_top1 (default 3x chance) on 500 labeled validation images.")] = None,
            student: Annotated[Optional[str], typer.Option(help="Student arch from `kd2edge zoo`.")] = None,
            student_init: Annotated[Optional[str], typer.Option(help="Warm-start the student from this checkpoint (its arch or a deeper one of the family).")] = None,
            method: Annotated[Optional[Method], typer.Option(help="Distillation method (ce: hard labels only).")] = None,
            epochs: Optional[int] = None, batch_size: Optional[int] = None, lr: Optional[float] = None,
            optimizer: Annotated[Optional[Optimizer], typer.Option(help="Optimizer.")] = None,
            schedule: Annotated[Optional[Schedule], typer.Option(help="Learning-rate schedule.")] = None,
            dataset: Annotated[Optional[str], typer.Option(help="cifar10, cifar100, an image folder or an .npz.")] = None,
            data_dir: DataDir = None,
            limit_train: Annotated[Optional[int], typer.Option(help="Only the first N training images.")] = None,
            seed: Optional[int] = None,
            out: Annotated[Optional[Path], typer.Option(help="Run folder (default runs/distill/<student>-<method>-<data>-s<seed>).")] = None,
            resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --out.")] = False,
            overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run folder.")] = False,
            time_budget: Annotated[Optional[str], typer.Option(help="Wall-time budget (377, 6m, 1h), start-up included: the run measures this machine, plans its teacher cache and schedule, and stops on time; keys you do not set take the budget recipe.")] = None,
            as_json: AsJson = False):
    """Distill a student from a teacher (or train the hard-label baseline with --method ce)."""
    import kd2edge.distill.budget
    from kd2edge.distill import distill as run_distill
    from kd2edge.distill.config import apply_sets, load_config_file

    kd2edge.distill.budget.FROM_PROCESS_START = True  # the command's budget counts from the process start

    base = apply_sets(load_config_file(config) if config else {}, set_ or [])
    flags = {"teacher": teacher, "teacher_arch": teacher_arch, "teacher_input": teacher_input,
             "teacher_precision": _value(teacher_precision), "teacher_check": teacher_check, "student": student, "student_init": student_init,
             "method": _value(method), "epochs": epochs, "batch_size": batch_size, "lr": lr,
             "optimizer": _value(optimizer), "schedule": _value(schedule), "dataset": dataset,
             "data_dir": str(data_dir) if data_dir else None, "limit_train": limit_train, "seed": seed,
             "out": str(out) if out else None, "resume": resume or None, "overwrite": overwrite or None,
             "time_budget": time_budget}
    r = run_distill(base, **flags)
    if not r["metrics"]:  # a non-zero rank of a torchrun job: rank 0 reports
        return
    if as_json:
        print(json.dumps(r, indent=2, default=str))
        return _budget_exit(time_budget)
    m = r["metrics"]
    rows = [["student top-1 (%)", m["last"]["top1"]], ["student top-5 (%)", m["last"]["top5"]],
            ["student macro F1 (%)", m["last"]["macro_f1"]], ["best epoch", m["best"]["epoch"]],
            ["best val top-1 (%)", m["best"]["val_top1"]]]
    if "teacher" in m:
        rows += [["teacher top-1 (%)", m["teacher"]["top1"]]]
    if "probe" in m:
        rows += [["probe top-1 (%)", m["probe"]["probe_top1"]]]
    rows += [["student params", m["student"]["params"]], ["train time (s)", m["train_seconds"]]]
    if "budget" in m:
        b = m["budget"]
        rows += [["time budget (s)", b["budget_s"]], ["wall time (s)", b["wall_s"]], ["epochs", b["epochs"]],
                 ["cached views per image", b["views_per_image"]]]
    console.print(_table(f"distill -> {r['run_dir']}", ["metric", "value"], rows))
    console.print(f"wrote {r['checkpoint']} and {r['run_dir']}/summary.md")
    _budget_exit(time_budget)


def _budget_exit(time_budget) -> None:
    """A budgeted run has written everything: end the process now. Interpreter teardown (torch, threads) took
    up to 9 s on the loaded machine, outside any budget the run could plan."""
    if time_budget and "pytest" not in sys.modules:  # never inside a test session calling main() in-process
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


# --- export: kd2edge/export/ owns this command ---

TargetChoice = Enum("Target", {k: k for k in [*TARGET_RUNTIME, "all"]}, type=str)  # the artifact contract's targets
KeepFloat = Enum("KeepFloat", {k: k for k in KEEP_FLOAT}, type=str)  # --keep-float: the artifact contract's registry
Rounding = Enum("Rounding", {k: k for k in ROUNDINGS}, type=str)  # --rounding: the artifact contract's registry


@app.command("export")
def export_(checkpoint: Annotated[str, typer.Argument(help="Native checkpoint, or foreign with --arch.")],
            target: Annotated[list[TargetChoice], typer.Option("--target", "-t", help="Target(s); repeatable.")] = [TargetChoice.all],
            int8: Annotated[bool, typer.Option("--int8", help="Also export each target's int8 variants.")] = False,
            precision: Annotated[Optional[list[str]], typer.Option("--precision", help="Exact precisions instead (fp32, fp16, int8, w8, w8a8).")] = None,
            arch: Arch = None,
            out: Annotated[Optional[Path], typer.Option(help="Parent folder of the artifact folders (default runs/export).")] = None,
            calib_images: Annotated[int, typer.Option(help="Training images for int8 calibration.")] = 256,
            eval_images: Annotated[int, typer.Option(help="Test images for verification and eval.npz.")] = 1000,
            max_drop: Annotated[float, typer.Option(help="Largest top-1 drop (points) allowed for reduced precision.")] = 1.0,
            teacher: Annotated[Optional[str], typer.Option(help="Teacher for eval.npz and QAT (else the checkpoint's); arch:PATH for a foreign file.")] = None,
            qat_epochs: Annotated[float, typer.Option("--qat-epochs", help="int8 by KD-aware quantization-aware training for N epochs (fractions allowed; onnx, tflite) instead of PTQ.")] = 0,
            teacher_input: TeacherInput = None,
            keep_float: Annotated[Optional[list[KeepFloat]], typer.Option("--keep-float", help="Leave these layers of the int8 onnx/tflite artifacts in float (repeatable): " + "; ".join(f"{k}: {v}" for k, v in KEEP_FLOAT.items()) + ".")] = None,
            rounding: Annotated[Rounding, typer.Option("--rounding", help="How int8 PTQ rounds the weights (onnx, tflite): " + "; ".join(f"{k}: {v}" for k, v in ROUNDINGS.items()) + ".")] = Rounding.nearest,
            dataset: Annotated[Optional[str], typer.Option(help="Dataset (else the checkpoint's, else cifar10).")] = None,
            data_dir: DataDir = None,
            verbose: Verbose = False,
            as_json: AsJson = False):
    """Export a checkpoint to ONNX / TFLite / CoreML (fp32, int8), verify each artifact against PyTorch."""
    from kd2edge.export import export, summary_rows

    rows = export(checkpoint, [t.value for t in target], int8=int8, arch=arch, out=out, calib_images=calib_images,
                  eval_images=eval_images, max_drop=max_drop, teacher=teacher, precisions=precision,
                  dataset=dataset, data_dir=data_dir, command="kd2edge export " + " ".join(sys.argv[2:]),
                  qat_epochs=qat_epochs, teacher_input=teacher_input, verbose=verbose,
                  keep_float=[k.value for k in keep_float or ()], rounding=rounding.value)
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        console.print(_table("kd2edge export", ["target", "precision", "status", "size", "top-1", "drop vs PyTorch",
                                                "agreement", "max |diff|"], summary_rows(rows)))
        for r in rows:
            if r["status"] == "ok":
                console.print(f"wrote {r['path']}", highlight=False)
            else:
                console.print(f"[red]{r['target']} {r['precision']}: {r['status']}:[/red] {escape(str(r['reason']))}",
                              soft_wrap=True, highlight=False)
    if any(r["status"] != "ok" for r in rows):
        raise typer.Exit(1)


@app.command("diff")
def diff_(artifact: Annotated[Path, typer.Argument(help="Artifact folder (ONNX or TFLite) whose meta.json names its checkpoint.")],
          images: Annotated[int, typer.Option("--images", help="Test images (the artifact's eval.npz first).")] = 32,
          threshold: Annotated[Optional[float], typer.Option("--threshold", help="SQNR (dB) below which a layer has drifted (default 60 for fp32, 20 otherwise).")] = None,
          out: Annotated[Optional[Path], typer.Option(help="Folder for diff.json and diff.png (default runs/diff/<artifact>).")] = None,
          data_dir: DataDir = None,
          as_json: AsJson = False):
    """Per-layer SQNR of an artifact against its PyTorch checkpoint; names the first layer that drifts."""
    from kd2edge.export.diff import table_rows
    from kd2edge.export.diff import diff as run_diff

    r = run_diff(artifact, images, threshold, out, data_dir)
    if as_json:
        print(json.dumps({k: v for k, v in r.items() if k != "layers"}, indent=2, default=str))
        return
    console.print(_table(f"{r['name']} ({r['precision']}) vs PyTorch, {r['images']} test images",
                         ["depth", "artifact tensor", "PyTorch", "SQNR dB", ""], table_rows(r)), width=100)
    f = r["first_below"]
    console.print(f"first layer below {r['threshold_db']:g} dB: {f['pytorch']} ({f['artifact_tensor']}, depth "
                  f"{f['depth']}, {f['sqnr_db']:.1f} dB)" if f else
                  f"every layer >= {r['threshold_db']:g} dB" + (" (parity)" if r["precision"] == "fp32" else ""),
                  highlight=False)
    for note in r["notes"]:
        console.print(f"note: {note}", highlight=False)
    console.print(f"wrote {r['json']} and {r['png']}", highlight=False)


# --- bench: kd2edge/bench/ (torch-free) owns this command ---
from kd2edge.bench.protocols import PROTOCOLS, get_protocol  # noqa: E402  (a dict registry, no heavy import)

ProtocolChoice = Enum("Protocol", {k: k for k in PROTOCOLS}, type=str)  # --protocol choices: the registry's keys


def _protocol(value: str) -> ProtocolChoice:
    """--protocol: an unknown name is one `error:` line listing the registry (not a usage box)."""
    return ProtocolChoice(get_protocol(_value(value))["name"])


@app.command("bench")
def bench_(artifacts: Annotated[Optional[list[Path]], typer.Argument(help="Artifact folders (meta.json + model + eval.npz).")] = None,
           threads: Annotated[Optional[list[int]], typer.Option("--threads", help="CPU threads; repeat for several (default: all cores).")] = None,
           batch: Annotated[int, typer.Option(help="Batch size of the timed runs.")] = 1,
           runs: Annotated[Optional[int], typer.Option(help="Exactly N timed runs (default: >= 50 runs and >= 1 s).")] = None,
           seconds: Annotated[Optional[float], typer.Option(help="Time for S seconds instead of a run count.")] = None,
           warmup: Annotated[int, typer.Option(help="Untimed runs before timing.")] = 10,
           dataset: Annotated[Optional[str], typer.Option(help="Also top-1 on your own data: an .npz, an image folder (test/<class>/...) or cifar10.")] = None,
           import_file: Annotated[Optional[Path], typer.Option("--import", help="Turn a TFLite benchmark_model log into a CSV row instead.")] = None,
           device_name: Annotated[Optional[str], typer.Option(help="With --import: the phone or board it ran on.")] = None,
           out: Annotated[Optional[Path], typer.Option(help="Folder for bench-*.json, bench.csv and bench.png (default runs/bench).")] = None,
           protocol: Annotated[ProtocolChoice, typer.Option(parser=_protocol, metavar="[" + "|".join(PROTOCOLS) + "]", help="Timing protocol: " + "; ".join(f"{k}: {v['summary']}" for k, v in PROTOCOLS.items()) + ".")] = "default",
           min_queries: Annotated[Optional[int], typer.Option(help="Override the protocol's minimum query count (e.g. short mlperf runs).")] = None,
           min_seconds: Annotated[Optional[float], typer.Option(help="Override the protocol's minimum duration in seconds.")] = None,
           sustained: Annotated[Optional[float], typer.Option(help="Run back to back for MINUTES (fractions allowed): p50/p90 per minute, CPU temperature/frequency, drift (throttling), plot.")] = None,
           window: Annotated[Optional[float], typer.Option(help="With --sustained: seconds per reported window (default 60; a third of a run shorter than 3 min).")] = None,
           profile: Annotated[bool, typer.Option("--profile", help="Per-operator times where the runtime has a profiler (onnxruntime); else says what is missing.")] = False,
           verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Check the model file and eval.npz against the sha256 in meta.json.")] = True,
           as_json: AsJson = False):
    """Latency, top-1 and drift vs the PyTorch student/teacher of exported artifacts, on this device (no torch)."""
    from kd2edge.bench.reports import LEGEND, detail_lines, table_rows
    from kd2edge.locations import run_folder

    out = out or run_folder("bench")
    if import_file is not None:
        from kd2edge.bench.log_import import import_log

        rows = [import_log(import_file, artifact=artifacts[0] if artifacts else None, device_name=device_name, out=out)]
    else:
        from kd2edge.bench import bench

        rows = bench(artifacts or [], threads or None, batch, runs, seconds, warmup, dataset, out=out,
                     progress=not as_json, protocol=_value(protocol), min_queries=min_queries,
                     min_seconds=min_seconds, sustained=sustained, window=window, profile=profile, verify=verify)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    headers, cells = table_rows(rows)
    console.print(_table(f"kd2edge bench on {rows[0]['cpu']} ({rows[0]['device_id']})", headers, cells))
    console.print(LEGEND, highlight=False)
    for line in detail_lines(rows):
        console.print(escape(line), highlight=False, soft_wrap=True)
    for r in rows:
        if r.get("note"):
            console.print(escape(f"note ({r['artifact']}): {r['note']}"), highlight=False, soft_wrap=True)
    console.print(f"appended {len(rows)} row(s) to {out / 'bench.csv'} (every column; the run's JSON beside it)",
                  highlight=False)

# --- run: kd2edge/run.py owns this command ---
@app.command()
def run(config: Annotated[Path, typer.Argument(help="YAML config (see benchmarks/configs/quickstart.yaml).")],
        out: Annotated[Optional[Path], typer.Option(help="Report folder (default runs/run/<name>).")] = None,
        epochs: Annotated[Optional[int], typer.Option(help="Override distill.epochs.")] = None,
        limit_train: Annotated[Optional[int], typer.Option(help="Override distill.limit_train.")] = None,
        target: Annotated[Optional[list[TargetChoice]], typer.Option("--target", "-t", help="Override export.targets; repeatable.")] = None,
        int8: Annotated[Optional[bool], typer.Option("--int8/--no-int8", help="Override export.int8.")] = None,
        set_: Annotated[Optional[list[str]], typer.Option("--set", help="Any key: --set distill.T=2 (repeatable).")] = None,
        progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
        verbose: Verbose = False,
        as_json: AsJson = False):
    """Teacher -> baseline + distilled student -> exports -> bench on this machine -> one report folder."""
    from kd2edge.run import load_config, run as run_pipeline

    cfg = load_config(config, {"out": str(out) if out else None, "distill.epochs": epochs,
                               "distill.limit_train": limit_train,
                               "export.targets": [t.value for t in target] if target else None, "export.int8": int8},
                      set_ or [])
    report = run_pipeline(cfg, progress=progress and not as_json, verbose=verbose)
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return
    print_run_summary(report)
    console.print(f"report: {report['report_md']} and {report['report_html']}")



def print_run_summary(report: dict) -> None:
    """The verdict, the PyTorch models and one line per benched artifact, each table within WIDTH columns."""
    v = report["verdict"]
    console.print(f"verdict: per target, {v['rule']}", highlight=False)
    cols = ["target", "ship", "threads", "top-1 (%)", "Δ vs teacher (pt)", "p50 (ms)",
            "speed-up vs PyTorch teacher", "speed-up vs teacher, same export"]
    console.print(_table("what to ship", cols, [[r[c] for c in cols] for r in v["rows"]]))
    if v.get("kd_vs_baseline"):
        console.print(v["kd_vs_baseline"], highlight=False)
    cols = ["model", "params", "top-1 (%)", "F1 (%)", "PyTorch b1 p50 (ms)"]
    console.print(_table("models (PyTorch, test set)", cols, [[r[c] for c in cols] for r in report["summary"]["rows"]]))
    cols = ["artifact", "threads", "top-1 (%)", "Δ vs teacher (pt)", "p50 (ms)", "p90 (ms)", "speedup vs PyTorch teacher"]
    rows = [r for r in report["deployment"]["rows"] if r["status"] == "ok" and r["p50 (ms)"] is not None]
    console.print(_table("deployment (batch 1, this machine)", cols, [[r[c] for c in cols] for r in rows]))
    others = {r["artifact"]: r["status"] for r in report["deployment"]["rows"] if r["status"] != "ok"}
    for name, status in others.items():
        console.print(f"{name}: {status}", highlight=False)


@app.command()
def version():
    """Print the kd2edge version."""
    print(__version__)


def main():
    try:
        code = app(prog_name="kd2edge", standalone_mode=False)  # returns the code of `raise typer.Exit(code)`
    except Kd2EdgeError as e:  # the message is printed as is: no rich markup ('kd2edge[export]' stays whole)
        console.print(f"[red]error:[/red] {escape(str(e))}", soft_wrap=True, highlight=False)
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        code = 130
    except OSError as e:  # a file system refusal not caught where it happened: still one line
        where = f" {e.filename}" if e.filename else ""
        console.print(f"[red]error:[/red] cannot use{escape(where)}: {escape(e.strerror or str(e))}; choose "
                      "another location (--out) or fix its permissions", soft_wrap=True, highlight=False)
        sys.exit(1)
    except Exception as e:  # usage errors (typer vendors its own click: not click.ClickException): exit 2
        if hasattr(e, "show") and isinstance(getattr(e, "exit_code", None), int):
            ctx = getattr(e, "ctx", None)
            if type(e).__name__ == "NoArgsIsHelpError" or ctx is None or not hasattr(e, "format_message"):
                e.show()
            else:  # click's usage lines, then the problem as the last line, like every other error
                print(f"{ctx.get_usage()}\nTry '{ctx.command_path} --help' for help.", file=sys.stderr)
                print(f"error: {e.format_message()}", file=sys.stderr)
            sys.exit(e.exit_code)
        if isinstance(getattr(e, "exit_code", None), int):
            sys.exit(e.exit_code)
        raise
    if code == 130:  # Ctrl-C (typer turns KeyboardInterrupt into exit code 130)
        console.print("[red]error:[/red] interrupted; a distill run continues from its last finished epoch "
                      "with the same command plus --resume (kd2edge run resumes by itself)", soft_wrap=True,
                      highlight=False)
        sys.exit(130)
    if isinstance(code, int) and code:
        sys.exit(code)
