"""PNG plots (matplotlib, imported where used; a missing matplotlib names the extra)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from kd2edge import require
from kd2edge.files import atomic_write


def _pyplot():
    matplotlib = require("matplotlib", "plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    plt = _pyplot()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))
    plt.close(fig)
    return path


def confusion_png(cm, classes, path, title="Confusion matrix") -> Path:
    plt = _pyplot()
    cm = np.asarray(cm)
    n = len(classes)
    side = min(max(5, 0.5 * n + 2), 12)  # 100 classes would otherwise make a 50-inch figure
    fig, ax = plt.subplots(figsize=(side, max(4, side - 0.5)))
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    if n <= 20:
        ax.set_xticks(range(n), classes, rotation=45, ha="right")
        ax.set_yticks(range(n), classes)
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, path)


def curves_png(history: list[dict], path, title="Training curves") -> Path:
    """Loss and accuracy per epoch; keys train_loss/val_loss and train_top1/val_top1 where present."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, ax in (("loss", a), ("top1", b)):
        for split in ("train", "val"):
            pts = [(e, h[f"{split}_{key}"]) for e, h in zip(epochs, history) if h.get(f"{split}_{key}") is not None]
            if pts:  # validation may run only every few epochs (val_every)
                ax.plot(*zip(*pts), marker="o", ms=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel("top-1 (%)" if key == "top1" else "loss")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return _save(fig, path)


def scatter_png(points: list[dict], path, x="p50_ms", y="top1", label="name", title="Accuracy vs latency",
                xlabel="p50 latency (ms, batch 1)", ylabel="top-1 (%)", logx=True, front=None) -> Path:
    """`front`: the points of the accuracy-latency Pareto front (kd2edge.verdict.pareto), drawn as a dashed
    staircase with the points circled."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.8))
    markers = "osD^v<>pP*Xh"
    for i, p in enumerate(q for q in points if q.get(x) is not None and q.get(y) is not None):
        ax.scatter(p[x], p[y], s=40, marker=markers[i % len(markers)], label=str(p[label]), alpha=0.85)
    if front:
        fx, fy = [p[x] for p in front], [p[y] for p in front]
        ax.step(fx, fy, where="post", color="0.3", ls="--", lw=1, zorder=0,
                label="Pareto front (nothing both faster and more accurate)")
        ax.scatter(fx, fy, s=160, facecolors="none", edgecolors="0.3", lw=1)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    if logx:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.2, 0.5, 1, 2, 5 - not 2x10^-1
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def sustained_png(windows: list[dict], path, title="Sustained latency") -> Path:
    """p50/p90 per window against minutes; CPU temperature and frequency on a second axis where exposed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.2))
    mid = [(w["start_min"] + w["end_min"]) / 2 for w in windows]
    ax.plot(mid, [w["p50_ms"] for w in windows], marker="o", label="p50")
    ax.plot(mid, [w["p90_ms"] for w in windows], marker="s", label="p90")
    ax.set_xlabel("minutes")
    ax.set_ylabel("latency (ms)")
    ax.grid(alpha=0.3)
    lines, labels = ax.get_legend_handles_labels()
    for key, unit, style in (("temp_c", "CPU temperature (C)", "r--"), ("freq_mhz", "CPU frequency (MHz)", "g:")):
        pts = [(m, w[key]) for m, w in zip(mid, windows) if w.get(key) is not None]
        if pts:
            twin = ax.twinx()
            if key == "freq_mhz" and any(w.get("temp_c") is not None for w in windows):
                twin.spines["right"].set_position(("outward", 50))
            twin.plot(*zip(*pts), style, label=unit)
            twin.set_ylabel(unit)
            more = twin.get_legend_handles_labels()
            lines, labels = lines + more[0], labels + more[1]
    if not any(w.get("temp_c") is not None or w.get("freq_mhz") is not None for w in windows):
        title += " (CPU temperature/frequency not exposed)"
    ax.legend(lines, labels, fontsize=8, loc="best")
    ax.set_title(title)
    return _save(fig, path)
