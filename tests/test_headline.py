"""benchmarks/headline.py: the README's results table is recomputed from the recorded time-budget runs (no
training here): every group finds its runs, one row per seed, the KD - hard-label gaps pair seeds."""
import json
import statistics

import pytest


@pytest.fixture(scope="module")
def headline(benchmark_script):
    return benchmark_script("headline")


def test_every_group_is_recorded_once_per_seed(headline):
    s = headline.summary()
    assert {(r["budget"], r["student"], r["method"]) for r in s["rows"]} == set(headline.GROUPS)
    for r in s["rows"]:
        assert len(r["seeds"]) == len(set(r["seeds"])) == len(r["top1"]) >= 1
        assert r["mean"] == pytest.approx(statistics.mean(r["top1"]))
        budget = {"377 s": 377, "60 min": 3600, "2 h": 7200}[r["budget"]]
        assert r["budget_s"] == budget and r["macs"] > 0


def test_gaps_pair_the_same_seed(headline, tmp_path, monkeypatch):
    """Against hand-made records: a seed without its control gets no gap, and a seed recorded twice is an error."""
    def record(tag, rows):
        (tmp_path / f"time_budget-{tag}.json").write_text(json.dumps({"rows": [
            {"method": m, "seed": seed, "top1": t, "top1_fp32": t, "budget_s": "377", "wall_s": 370.0,
             "returncode": 0, "macs": 1, "params": 1} for m, seed, t in rows]}))

    record("a", [("kd", 0, 80.0), ("kd", 1, 81.0), ("ce", 1, 80.5)])
    record("b", [("ce", 2, 79.0)])
    for name in ("eval_teachers.json", "eval_ensemble.json"):
        (tmp_path / name).write_text((headline.RESULTS / name).read_text())
    monkeypatch.setattr(headline, "RESULTS", tmp_path)
    monkeypatch.setattr(headline, "GROUPS", {("377 s", "x", "kd"): ["a"], ("377 s", "x", "ce"): ["a", "b"]})
    kd = next(r for r in headline.summary()["rows"] if r["method"] == "kd")
    assert kd["gap_by_seed"] == {1: 0.5} and kd["gap_of_means"] == round(80.5 - 79.75, 2)
    record("b", [("ce", 1, 79.0)])
    with pytest.raises(SystemExit, match="seed 1 of ce recorded twice"):
        headline.summary()
