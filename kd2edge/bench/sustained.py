"""`kd2edge bench --sustained MINUTES`: single-stream runs for a long time, p50/p90 per minute with the CPU
temperature and frequency read at the end of each minute (where the OS exposes them), and whether latency
drifted (thermal throttling) between the first and the last minute. Torch-free; the plot needs matplotlib
and is skipped with a note without it (a device may not have it)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from kd2edge import Kd2EdgeError
from kd2edge.bench.sensors import NOT_EXPOSED, reading
from kd2edge.metrics import latency_stats

WINDOW_SECONDS = 60.0  # "per minute"
DRIFT_LIMIT = 0.10  # last-minute p50 more than 10% above the first minute's: throttled


def window_for(minutes: float, window_seconds: float | None) -> float:
    """The window length: as given, else one minute, or a third of a run shorter than three minutes."""
    return window_seconds if window_seconds is not None else min(WINDOW_SECONDS, minutes * 60 / 3)


def check(minutes, window_seconds=None) -> None:
    if minutes is None:
        return
    if not minutes > 0:
        raise Kd2EdgeError(f"--sustained must be > 0 minutes (fractions allowed, e.g. 0.5), got {minutes:g}")
    if window_seconds is not None and not 0 < window_seconds <= minutes * 60:
        raise Kd2EdgeError(f"--window must be > 0 and at most the run ({minutes * 60:g} s), got {window_seconds:g}")


def _window(times: list, start: float, end: float, t0: float) -> dict:
    ms = np.asarray(times) * 1000
    return {"start_min": (start - t0) / 60, "end_min": (end - t0) / 60, "runs": len(times),
            "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)), **reading()}


def time_sustained(run, x, minutes: float, warmup: int, window_seconds: float | None = None,
                   progress=None) -> dict:
    """Run `run(x)` back to back for `minutes` after `warmup` untimed calls; one window per `window_seconds`
    (default: window_for; the last one may be shorter). Sensors are read between runs, never inside a timed one."""
    check(minutes, window_seconds)
    window_seconds = window_for(minutes, window_seconds)
    for _ in range(warmup):
        run(x)
    total = minutes * 60
    task = progress.task("sustained", total=total) if progress else None
    before = reading()
    t0 = time.perf_counter()
    all_times, current, windows = [], [], []
    w_start = t0
    while True:
        t = time.perf_counter()
        run(x)
        dt = time.perf_counter() - t
        all_times.append(dt)
        current.append(dt)
        now = t + dt
        if now - w_start >= window_seconds or now - t0 >= total:
            windows.append(_window(current, w_start, now, t0))
            current, w_start = [], now
            if task:
                task.set(min(now - t0, total))
            if now - t0 >= total:
                break
    if task:
        task.done()
    out = {**latency_stats(all_times), "duration_s": time.perf_counter() - t0, "sustained_min": minutes,
           "window_s": window_seconds, "windows": windows, "temp_c_start": before["temp_c"],
           "freq_mhz_start": before["freq_mhz"]}
    out.update(drift_columns(windows))
    return out


def drift_columns(windows: list[dict]) -> dict:
    """First vs last window: p50s, drift in percent, throttled yes/no, temperature and frequency at both ends."""
    first, last = windows[0], windows[-1]
    drift = (last["p50_ms"] / first["p50_ms"] - 1) * 100 if len(windows) > 1 else None
    return {"first_p50_ms": first["p50_ms"], "last_p50_ms": last["p50_ms"], "first_p90_ms": first["p90_ms"],
            "last_p90_ms": last["p90_ms"], "drift_pct": drift,
            "throttled": None if drift is None else ("yes" if drift > DRIFT_LIMIT * 100 else "no"),
            "temp_c_first": first["temp_c"], "temp_c_last": last["temp_c"],
            "freq_mhz_first": first["freq_mhz"], "freq_mhz_last": last["freq_mhz"]}


def summary_lines(row: dict) -> list[str]:
    """What the terminal shows for a sustained row: one line per window, then the verdict."""
    def sensor(v, unit):
        return NOT_EXPOSED if v is None else f"{v:.1f} {unit}"

    lines = [f"sustained {row['artifact']} threads={row['threads']}: {row['sustained_min']:g} min, "
             f"{row['runs']} runs, window {row['window_s']:g} s"]
    for w in row["windows"]:
        lines.append(f"  {w['start_min']:6.2f}-{w['end_min']:5.2f} min  runs {w['runs']:6d}  p50 {w['p50_ms']:.3f} ms"
                     f"  p90 {w['p90_ms']:.3f} ms  CPU {sensor(w['temp_c'], 'C')}  {sensor(w['freq_mhz'], 'MHz')}")
    if row["drift_pct"] is None:
        lines.append("  drift: one window only, nothing to compare (run longer than one --window)")
    else:
        lines.append(f"  drift first -> last window p50: {row['drift_pct']:+.1f}% -> throttled: {row['throttled']}"
                     f" (limit +{DRIFT_LIMIT:.0%})")
    return lines


def plot(row: dict, path) -> tuple[Path | None, str | None]:
    """p50/p90 per window (and CPU temperature/frequency where exposed) as a PNG; (None, note) without matplotlib."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None, "sustained plot skipped: matplotlib is not installed (pip install 'kd2edge[plot]')"
    from kd2edge.plots import sustained_png

    return sustained_png(row["windows"], path, title=f"{row['artifact']} sustained {row['sustained_min']:g} min, "
                                                     f"threads {row['threads']} on {row.get('cpu', 'this device')}"), None
