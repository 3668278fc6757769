"""benchmarks/experiments.py: every experiment config resolves, the plan is complete, the report is built
from the result JSONs (no training here; the runs themselves are recorded in benchmarks/experiments.md)."""
import json
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exp(benchmark_script):
    return benchmark_script("experiments")


def test_every_planned_run_resolves_with_the_budget(exp, tmp_path):
    from kd2edge.distill import resolve_config

    names = {n for n, _ in exp.PLAN}
    assert names == {r for _, rows in exp.GROUPS for _, r in rows}
    for budget in exp.BUDGETS:
        for name in names:
            cfg = resolve_config(exp.run_config(name, 0, budget, tmp_path))
            b = exp.BUDGETS[budget]
            assert cfg["student"] == b["student"] and cfg["limit_train"] == b["limit_train"]
            assert cfg["method"] == "ce" or cfg["teacher"]
            if b.get("time_budget"):  # the budget recipe, restarted from a cold cache of its own
                assert cfg["time_budget"] == b["time_budget"] and cfg["fresh_views"] == 0.75 and not cfg["resume"]
                assert cfg["low_res_scale"] == 1.0  # the recorded runs predate progressive resizing
                assert cfg["cache_dir"] == str(tmp_path / f"{name}-s0-cache")
    assert resolve_config(exp.run_config("2_T8", 0, "cpu", tmp_path))["T"] == {"kind": "constant", "value": 8.0}
    assert resolve_config(exp.run_config("2_alpha0", 0, "cpu", tmp_path))["alpha"]["value"] == 0.0
    assert exp.run_config("5_kd_c100_probe", 0, "cpu", tmp_path)["adapt"] == "probe"


def test_same_steps_control_matches_the_kd_run_steps(exp, tmp_path):
    from kd2edge.distill.loop import steps_per_epoch

    for budget in [b for b in exp.BUDGETS if not exp.BUDGETS[b].get("time_budget")]:
        kd = exp.run_config("4_kd_5pct", 0, budget, tmp_path)
        ce = exp.run_config("4_ce_5pct_same_steps", 0, budget, tmp_path)
        n = kd["limit_train"] or 50000
        kd_steps = kd["epochs"] * steps_per_epoch(n, kd["batch_size"])
        ce_steps = ce["epochs"] * steps_per_epoch(round(n * 0.05), ce["batch_size"])
        assert kd_steps <= ce_steps < kd_steps + steps_per_epoch(round(n * 0.05), ce["batch_size"])


def test_report_is_built_from_the_result_jsons(exp, tmp_path, monkeypatch):
    monkeypatch.setattr(exp, "ROOT", tmp_path)
    results = tmp_path / "results"
    results.mkdir()
    budget = exp.BUDGETS["cpu"]
    base = {"budget": budget, "top5": 90.0, "macro_f1": 40.0, "params": 75290, "macs": 12239488,
            "agreement_with_teacher": 50.0, "wall_seconds": 60.0, "probe": None}
    for run, seed, top1 in [("1_ce", 0, 40.25), ("1_ce", 1, 41.75), ("1_kd", 0, 43.5)]:
        rec = {**base, "run": run, "seed": seed, "top1": top1, "teacher_top1": 93.39 if run == "1_kd" else None}
        (results / f"{run}-s{seed}.json").write_text(json.dumps(rec))
    (results / "2_T8-s0.json").write_text(json.dumps({**base, "run": "2_T8", "seed": 0, "top1": 1.0,
                                                       "teacher_top1": 93.39, "budget": {"other": 1}}))
    md = exp.report(results, "cpu")
    assert md == (tmp_path / "results.md").read_text()
    ce_row = next(line for line in md.splitlines() if line.startswith("| ce (hard labels only)"))
    assert f"{statistics.mean([40.25, 41.75]):.2f} ± {statistics.stdev([40.25, 41.75]):.2f}" in ce_row
    assert "40.25 / 41.75" in ce_row
    assert "| teacher resnet56 (shared) | - | 93.39 |" in md
    assert "| T 8 | not run yet |" in md  # a result from another budget is ignored
    assert md.count("first 2,500 CIFAR-10 training images, 6 epochs") >= 7  # the budget next to every table
