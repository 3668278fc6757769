"""The timing loop that every latency number comes from (artifacts in `kd2edge bench`, PyTorch models in
`kd2edge run`), so speed-ups divide like by like. No torch."""
from __future__ import annotations

import time

from kd2edge.metrics import latency_stats

DEFAULT_MIN_RUNS, DEFAULT_MIN_SECONDS, MAX_SECONDS = 50, 1.0, 150.0  # benchmark_model's defaults


def time_runs(run, x, runs: int | None, seconds: float | None, warmup: int, progress=None,
              max_seconds: float | None = MAX_SECONDS) -> dict:
    """`run(x)` after `warmup` untimed calls, single stream: exactly `runs` times, or until `seconds`, or
    both (at least `runs` AND at least `seconds`), or (neither) >= 50 runs and >= 1 s; stopped after
    `max_seconds` (None: never, for protocols whose minimums must be met). `progress`: bars
    (kd2edge.progress), redrawn between runs only. Adds `duration_s`: wall time of the timed runs."""
    for _ in range(warmup):
        run(x)
    min_runs = runs if runs is not None else (1 if seconds is not None else DEFAULT_MIN_RUNS)
    min_s = seconds if seconds is not None else (0.0 if runs is not None else DEFAULT_MIN_SECONDS)
    max_runs = runs if runs is not None and seconds is None else None
    times, start = [], time.perf_counter()
    task = progress.task("timing", total=max_runs or min_s) if progress else None
    next_refresh = start
    while True:
        t = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t)
        elapsed = t + times[-1] - start
        if task and t > next_refresh:  # redraw between runs, at most 5 times a second
            task.set(len(times) if max_runs else min(elapsed, min_s))
            next_refresh = t + 0.2
        if (max_runs and len(times) >= max_runs) or (len(times) >= min_runs and elapsed >= min_s) \
                or (max_seconds is not None and elapsed >= max_seconds):
            break
    if task:
        task.done()
    return {**latency_stats(times), "duration_s": elapsed}
