"""`kd2edge run` end to end on a tiny budget: every table and plot exists, report.md shows the numbers of
report.json, and a re-run with other targets reuses the trained students."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from kd2edge.render import fmt
from kd2edge.run import load_config, run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, cifar10_dir, teacher_path):
    tmp = tmp_path_factory.mktemp("run")
    cfg_file = tmp / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump({
        "name": "tiny", "teacher": str(teacher_path("resnet20")), "teacher_arch": "resnet20",
        "data_dir": str(cifar10_dir), "student": "resnet8", "student_kwargs": {"width": 8},
        "distill": {"method": "kd", "epochs": 1, "limit_train": 512, "batch_size": 128},
        # int8 and the teacher's own artifacts too: the verdict has something to choose and a same-export twin;
        # a 1-epoch student's int8 drift can pass 1 pt, so verification allows any drop here
        "export": {"targets": ["onnx"], "int8": True, "eval_images": 200, "teacher": True, "max_drop": 100},
        "bench": {"threads": [1, 2], "runs": 5, "warmup": 1},
    }))
    cfg = load_config(cfg_file, {"out": str(tmp / "report")})
    return cfg_file, cfg, run(cfg, progress=False)


def md_tables(text: str) -> list[list[list[str]]]:
    tables, current = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if current is None:
                current = [cells]
                tables.append(current)
            elif not all(set(c) <= {"-"} for c in cells):
                current.append(cells)
        else:
            current = None
    return tables


def test_report_tables_match_json(tiny_run):
    _, cfg, report = tiny_run
    out = Path(cfg["out"])
    saved = json.loads((out / "report.json").read_text())
    tables = md_tables((out / "report.md").read_text())
    for key, table in zip(("verdict", "summary", "accuracy", "latency"), tables, strict=True):
        assert table[0] == saved[key]["columns"]
        assert table[1:] == [[fmt(row[c]) for c in table[0]] for row in saved[key]["rows"]]
    labels = [r["model"] for r in saved["summary"]["rows"]]
    assert labels == ["teacher", "baseline (ce)", "student (kd)"]
    teacher = saved["summary"]["rows"][0]
    assert teacher["top-1 (%)"] == pytest.approx(91.73, abs=0.01)  # resnet20 on the full test set
    assert all(r["status"] == "ok" for r in saved["deployment"]["rows"]), saved["exports"]
    rows = {(r["artifact"], r["threads"]): r for r in saved["deployment"]["rows"]}
    eager = rows[("teacher (PyTorch)", 1)]  # timed in the same process, same loop, same threads
    assert eager["speedup vs PyTorch teacher"] == pytest.approx(1.0)
    assert eager["p50 (ms)"] == teacher["PyTorch b1 p50 (ms)"]
    onnx = rows[("student-onnx", 1)]
    assert onnx["speedup vs PyTorch teacher"] == pytest.approx(eager["p50 (ms)"] / onnx["p50 (ms)"])
    assert "<table>" in (out / "report.html").read_text()


def test_every_plot_exists(tiny_run):
    _, cfg, report = tiny_run
    out = Path(cfg["out"])
    assert {"accuracy_vs_latency", "curves student (kd)", "confusion teacher"} <= set(report["plots"])
    for rel in report["plots"].values():
        png = out / rel
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert rel in (out / "report.md").read_text()


def test_rerun_with_other_targets_does_not_retrain(tiny_run):
    cfg_file, cfg, first = tiny_run
    students = {p: p.stat().st_mtime_ns for p in Path(cfg["out"]).glob("students/*/student.pt")}
    assert len(students) == 2
    cfg2 = load_config(cfg_file, {"out": cfg["out"], "export.targets": ["onnx", "tflite"], "export.int8": False,
                                  "export.teacher": False})
    second = run(cfg2, progress=False)
    assert {p: p.stat().st_mtime_ns for p in Path(cfg["out"]).glob("students/*/student.pt")} == students
    assert [e["target"] for e in second["exports"]] == ["onnx", "tflite"]
    assert second["exports"][0].get("reused") is True  # the ONNX artifact was not rebuilt either


def test_verdict_block_opens_the_report(tiny_run):
    _, cfg, report = tiny_run
    md = (Path(cfg["out"]) / "report.md").read_text()
    assert md.index("## Verdict") < md.index("## Models")
    (v,) = report["verdict"]["rows"]
    assert v["target"] == "onnx" and v["ship"].startswith("student-onnx")
    assert "vs hard labels" in report["verdict"]["kd_vs_baseline"]
    twin = {(r["artifact"], r["threads"]): r["p50 (ms)"] for r in report["deployment"]["rows"]}
    same = twin[("teacher-" + v["ship"][len("student-"):], v["threads"])]
    assert v["speed-up vs teacher, same export"] == pytest.approx(same / v["p50 (ms)"])


def test_verdict_picks_by_latency_budget_and_by_max_drop(tiny_run):
    """Both rules on the real run's rows (student-onnx and student-onnx-int8, 1 and 2 threads)."""
    from kd2edge.verdict import verdict_rows

    _, _, report = tiny_run
    deploy = report["deployment"]["rows"]
    teacher = report["summary"]["rows"][0]["top-1 (%)"]
    cands = [r for r in deploy if r["artifact"].startswith("student-") and r["p50 (ms)"] is not None]
    assert {r["artifact"] for r in cands} == {"student-onnx", "student-onnx-int8"} and len(cands) == 4

    def ship(**rules):
        (v,) = verdict_rows(deploy, rules, teacher)
        return v["ship"], v["threads"]

    def name(r):
        return r["artifact"], r["threads"]

    fastest = min(cands, key=lambda r: r["p50 (ms)"])
    best = max(cands, key=lambda r: (r["top-1 (%)"], -r["p50 (ms)"]))
    assert ship(max_latency_ms=fastest["p50 (ms)"]) == name(fastest)  # only the fastest fits
    assert ship(max_latency_ms=1e6) == name(best)  # everything fits: the most accurate
    assert ship() == name(best)
    assert ship(max_drop=1e6) == name(fastest)  # every drop is allowed: the fastest
    # a drop only the most accurate artifacts meet: the fastest of those
    least = min(-r["Δ vs teacher (pt)"] for r in cands)
    within = [r for r in cands if -r["Δ vs teacher (pt)"] <= least]
    assert ship(max_drop=least) == name(min(within, key=lambda r: r["p50 (ms)"]))
    assert ship(max_latency_ms=fastest["p50 (ms)"] / 2)[0] == "none within the budget"


def test_pareto_front():
    from kd2edge.verdict import pareto

    pts = [{"p50_ms": 1, "top1": 80}, {"p50_ms": 2, "top1": 79}, {"p50_ms": 3, "top1": 85}, {"p50_ms": 0.5, "top1": 70}]
    assert [p["p50_ms"] for p in pareto(pts)] == [0.5, 1, 3]


@pytest.mark.parametrize("bad", ["report.max_latency_ms=-1", "report.max_drop=abc", "report.max_drop=true"])
def test_bad_report_rule_is_one_line_error(tmp_path, bad):
    from kd2edge import Kd2EdgeError

    good = tmp_path / "ok.yaml"
    good.write_text("name: x\n")
    with pytest.raises(Kd2EdgeError, match=r"report.max_.* must be a number > 0, got .*e.g. `report:"):
        load_config(good, sets=[bad])


def test_bad_config_is_one_line_error(tmp_path):
    from kd2edge import Kd2EdgeError

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstudnet: resnet8\n")
    with pytest.raises(Kd2EdgeError, match="unknown config key 'studnet'"):
        load_config(bad)
    with pytest.raises(Kd2EdgeError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(Kd2EdgeError, match="kd2edge run takes one teacher checkpoint, got the ensemble"):
        load_config({"name": "x", "teacher": "cifar10-ensemble"})


def test_html_report_renders_in_headless_chromium(tiny_run, tmp_path):
    """Open report.html in Debian's Chromium (installed by .ci/run) and look at the screenshot: text drawn
    and the plot images loaded (a broken <img> leaves no coloured pixels; the tables are black on grey)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        msg = "chromium not installed (apt-get install chromium; .ci/run does this)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)
    from matplotlib.image import imread

    _, cfg, _ = tiny_run
    shot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400"]
    subprocess.run([chromium, *flags, f"--screenshot={shot}", (Path(cfg["out"]) / "report.html").resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    rgb = imread(shot)[..., :3]
    assert rgb.shape[:2] == (2400, 1280)
    text = (rgb.max(-1) < 0.3).mean()
    colour = (rgb.max(-1) - rgb.min(-1) > 0.3).mean()
    assert text > 0.002, f"almost nothing dark on the page ({text:.4f})"
    assert colour > 0.002, f"no plot pixels on the page ({colour:.4f}): images did not load"


def test_deploy_rows_show_skipped_coreml_bench():
    from kd2edge.run_report import deploy_rows

    exports = [{"path": "x/s-coreml", "target": "coreml", "precision": "fp32", "status": "ok", "size": 2048,
                "top1": 90.0, "agreement": 100.0}]
    benches = [{"path": "x/s-coreml", "status": "skipped", "note": "CoreML artifacts run only on macOS",
                "threads": 1, "p50_ms": None, "p90_ms": None}]
    (row,) = deploy_rows(exports, benches, teacher_ms={1: 8.0})
    assert row["status"] == "ok; not benched here (see below)"
    assert row["top-1 (%)"] == 90.0 and row["p50 (ms)"] is None and row["speedup vs PyTorch teacher"] is None


def test_skipped_artifacts_are_named_once_per_reason():
    from kd2edge.run_report import skipped_notes

    note = "CoreML artifacts run only on macOS (not on linux): copy {} to a Mac"
    benches = [{"path": f"x/{n}", "status": "skipped", "note": note.format(n), "threads": t}
               for n in ("s-coreml", "t-coreml") for t in (1, 2)] + [{"path": "x/s-onnx", "status": "ok", "threads": 1}]
    assert skipped_notes(benches) == [
        "Not benched here: s-coreml, t-coreml. CoreML artifacts run only on macOS (not on linux): copy them to a "
        "device that has the runtime and run `kd2edge bench` there."]


def test_cli_prints_both_tables_by_column_name(tiny_run):
    from typer.testing import CliRunner

    from kd2edge.cli import app

    cfg_file, cfg, _ = tiny_run
    res = CliRunner().invoke(app, ["run", str(cfg_file), "--out", cfg["out"], "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "what to ship" in res.output and "student-onnx" in res.output
    assert "models (PyTorch, test set)" in res.output and "deployment (batch 1, this machine)" in res.output
    assert "report: " in res.output
    # not a terminal: laid out at 100 columns, nothing longer, no header or name cut short
    assert max(len(line) for line in res.output.splitlines()) <= 100, res.output
    assert "…" not in res.output, res.output



CONFIGS = Path(__file__).resolve().parents[1] / "benchmarks" / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path, tmp_path):
    """The README's quickstart (a `kd2edge run` config) and the experiment configs (`kd2edge distill --config`)
    pass the whole-config check: a typo there would only show after a fresh clone's setup."""
    from kd2edge.distill.config import load_config_file, resolve_config

    if path.name == "quickstart.yaml":
        cfg = load_config(path, {"out": str(tmp_path / "out")})
        assert cfg["baseline"] and cfg["distill"]["method"] == "kd"
    else:
        cfg = resolve_config(load_config_file(path), out=str(tmp_path / "out"))
        assert cfg["teacher"] or cfg["method"] == "ce"


def test_budgeted_student_is_reused_when_finished_and_restarted_when_interrupted(tmp_path, cifar10_dir,
                                                                                teacher_path):
    """A `distill.time_budget` run cannot be resumed (its schedule follows the clock): `kd2edge run` reuses a
    finished student of the same config and starts an interrupted one over."""
    from kd2edge.files import sha256
    from kd2edge.run import train_student

    teacher = str(teacher_path("resnet20"))
    cfg = load_config({"name": "b", "teacher": teacher, "teacher_arch": "resnet20", "data_dir": str(cifar10_dir),
                       "student": "resnet8", "student_kwargs": {"width": 8},
                       "distill": {"time_budget": 12, "limit_train": 1024, "limit_val": 500, "batch_size": 128}},
                      {"out": str(tmp_path / "run")})
    first = train_student(cfg, "ce", teacher, sha256(teacher), progress=False)
    assert first["metrics"]["budget"]["budget_s"] == 12 and not first.get("resumed_finished")
    again = train_student(cfg, "ce", teacher, sha256(teacher), progress=False)
    assert again["resumed_finished"] and again["checkpoint"] == first["checkpoint"]
    from kd2edge.run_report import schedule_text  # the report says what the plan made of the budget

    epochs = first["metrics"]["budget"]["epochs"]
    assert schedule_text(cfg["distill"], {"ce": again}).endswith(f"12 s per student, the teacher pass inside it "
                                                                 f"(ce: {epochs} epochs)")
    run_dir = Path(first["run_dir"])
    run_dir.rename(run_dir.with_name(run_dir.name + ".partial"))  # as if killed before the final rename
    restarted = train_student(cfg, "ce", teacher, sha256(teacher), progress=False)
    assert not restarted.get("resumed_finished") and Path(restarted["checkpoint"]).exists()
    assert not run_dir.with_name(run_dir.name + ".partial").exists()
