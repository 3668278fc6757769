"""The `kd2edge` command line. Thin: each command parses flags and calls one function of its stage.

Only `bench` may run on a device without torch, so nothing here imports torch at module level.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from kd2edge import Kd2EdgeError, __version__

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Distill a compact CNN, export it to ONNX/CoreML/TFLite, benchmark it on the device.")
console = Console()

DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="Data location (else $KD2EDGE_DATA, else ./data).")]
Arch = Annotated[Optional[str], typer.Option("--arch", help="Architecture of a foreign checkpoint (see `kd2edge zoo`).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _table(title: str, columns: list[str], rows: list[list]) -> Table:
    t = Table(title=title)
    for c in columns:
        t.add_column(c, justify="left" if c in ("name", "arch", "class", "metric", "artifact", "target") else "right")
    for r in rows:
        t.add_row(*[f"{v:,.2f}" if isinstance(v, float) else (f"{v:,}" if isinstance(v, int) else str(v)) for v in r])
    return t


@app.command()
def zoo(as_json: AsJson = False, num_classes: int = 10):
    """List the model zoo with parameters and MACs (32x32 input)."""
    from kd2edge.zoo import MODELS, STUDENTS, count_macs, count_params, create_model

    rows = []
    for name in MODELS:
        m = create_model(name, num_classes)
        rows.append({"name": name, "role": "student" if name in STUDENTS else "teacher",
                     "params": count_params(m), "macs": count_macs(m)})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    console.print(_table("kd2edge zoo (torchvision models: tv:<name>)", ["name", "role", "params", "MACs"],
                         [[r["name"], r["role"], r["params"], r["macs"]] for r in rows]))


@app.command("eval")
def eval_(checkpoint: Annotated[str, typer.Argument(help="Native, foreign (with --arch) or TorchScript checkpoint.")],
          arch: Arch = None,
          dataset: Annotated[Optional[str], typer.Option(help="cifar10, cifar100, an image folder or an .npz.")] = None,
          split: Annotated[str, typer.Option(help="test or train.")] = "test",
          data_dir: DataDir = None,
          out: Annotated[Optional[Path], typer.Option(help="Folder for eval.json, confusion CSV and PNG.")] = None,
          limit: Annotated[Optional[int], typer.Option(help="Only the first N images.")] = None,
          as_json: AsJson = False):
    """Evaluate a checkpoint: top-1/top-5, per-class P/R/F1, confusion matrix, latency, params, MACs."""
    from kd2edge.evaluate import evaluate

    out = out or Path("runs") / "eval" / f"{Path(checkpoint).stem}-{dataset or 'auto'}-{split}"
    r = evaluate(checkpoint, arch, dataset, split, data_dir, out, limit)
    if as_json:
        print(json.dumps({k: v for k, v in r.items()}, indent=2))
        return
    rows = [[c, p, rc, f, s] for c, p, rc, f, s in zip(r["classes"], r["precision"], r["recall"], r["f1"], r["support"])]
    rows.append(["macro", r["macro_precision"], r["macro_recall"], r["macro_f1"], r["n"]])
    console.print(_table(f"{r['arch']} on {r['dataset']} {r['split']}", ["class", "precision", "recall", "F1", "support"], rows))
    summary = [["top-1 (%)", r["top1"]], ["top-5 (%)", r["top5"]], ["params", r["params"]], ["MACs", r["macs"] or "n/a"]]
    if "latency_ms_b1" in r:
        summary += [["latency b1 (ms)", r["latency_ms_b1"]], [f"throughput b{r['batch']} (img/s)", r["throughput_ips"]]]
    console.print(_table("summary", ["metric", "value"], summary))
    console.print(f"wrote {out}/eval.json, eval_confusion.csv, eval_confusion.png")


# --- distill: kd2edge/distill.py owns this command ---

# --- export: kd2edge/export.py owns this command ---

# --- bench: kd2edge/bench.py owns this command ---

# --- run: kd2edge/run.py owns this command ---


@app.command()
def version():
    """Print the kd2edge version."""
    print(__version__)


def main():
    try:
        app(standalone_mode=False)
    except Kd2EdgeError as e:
        console.print(f"[red]error:[/red] {e}", soft_wrap=True, highlight=False)
        sys.exit(1)
    except typer.Abort:
        console.print("aborted")
        sys.exit(130)
    except Exception as e:  # click usage errors: one line, exit 2
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Exit):
            sys.exit(e.exit_code)
        raise
