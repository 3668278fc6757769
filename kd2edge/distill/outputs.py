"""Outputs of a distillation run: checkpoint, history CSV, metrics JSON, plots, markdown summary."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch

from kd2edge.files import write_json, write_text
from kd2edge.locations import location


def teacher_eval_path(teacher, x_val: np.ndarray, cfg: dict) -> Path:
    from kd2edge.distill.teacher_cache import dataset_fingerprint

    return Path(cfg["cache_dir"] or location("cache")) / "teacher_eval" / \
        f"{teacher.cache_id}-{dataset_fingerprint(x_val)[:16]}.npy"


def teacher_eval_cached(teacher, x_val: np.ndarray, cfg: dict) -> bool:
    return bool(cfg["cache"]) and teacher_eval_path(teacher, x_val, cfg).exists()


def teacher_eval_logits(teacher, x_val: np.ndarray, cfg: dict) -> np.ndarray:
    """The teacher's logits on the validation images, cached by teacher and image checksum."""
    path = teacher_eval_path(teacher, x_val, cfg)
    if cfg["cache"] and path.exists():
        return np.load(path)
    x = torch.from_numpy(x_val)
    out = torch.cat([teacher.logits(x[i:i + 500]) for i in range(0, len(x), 500)]).numpy().astype(np.float32)
    if cfg["cache"]:
        from kd2edge.files import atomic_write

        atomic_write(path, lambda tmp: np.save(open(tmp, "wb"), out))
    return out


def _cost(model, latency: bool) -> dict:
    from kd2edge.evaluate import model_cost, torch_latency

    out = model_cost(model, (3, 32, 32))
    if latency:
        out.update(torch_latency(model, (3, 32, 32), runs=50, throughput_runs=2))
    return out


def history_csv(history: list[dict]) -> str:
    keys = list(dict.fromkeys(k for h in history for k in h))
    buf = io.StringIO()
    w = csv.DictWriter(buf, keys)
    w.writeheader()
    w.writerows(history)
    return buf.getvalue()


def write_outputs(folder: Path, cfg, student, train, val, history, best, val_logits, teacher, t_val, probe,
                  source, stats: dict, init: dict | None = None, budget: dict | None = None,
                  precision: dict | None = None) -> dict:
    from kd2edge.checkpoint import preprocessing, save_checkpoint
    from kd2edge.metrics import agreement, classification_report
    from kd2edge.plots import confusion_png, curves_png

    student.eval().to(memory_format=torch.contiguous_format)
    report = classification_report(val_logits, val.y, val.classes)
    last = {k: report[k] for k in ("n", "top1", "top5", "macro_precision", "macro_recall", "macro_f1")}
    last.update({k: history[-1][k] for k in ("epoch", "val_loss", "train_loss", "train_top1")})
    metrics = {"best": {k: best[k] for k in ("epoch", "val_top1", "val_loss")}, "last": last,
               "student": {"arch": cfg["student"], **_cost(student, cfg["latency"])},
               "train_seconds": float(sum(h["train_seconds"] for h in history)),
               "train_ips_last_epoch": history[-1]["train_ips"]}
    if precision is not None:
        metrics["train_precision"] = precision
    if budget is not None:
        metrics["budget"] = {**budget, "epochs": len(history),
                             "train_images": int(sum(h["train_images"] for h in history))}
    tinfo = None
    if teacher is not None and t_val is not None:
        treport = classification_report(t_val, val.y)
        metrics["teacher"] = {"top1": treport["top1"], "top5": treport["top5"], "macro_f1": treport["macro_f1"],
                              "agreement_with_student": agreement(t_val, val_logits)}
        if hasattr(teacher, "model"):
            metrics["teacher"].update(_cost(teacher.model, cfg["latency"] and not hasattr(teacher.model, "code")))
    if teacher is not None:
        tinfo = {"path": teacher.info["path"], "sha256": teacher.sha256, "arch": teacher.info.get("arch"),
                 "num_classes": int(teacher.info.get("num_classes") or teacher.num_classes),
                 "source": teacher.source, "input": teacher.contract, "input_why": teacher.contract_line,
                 "cache_id": teacher.cache_id}
        if teacher.info.get("members"):  # an ensemble: export finds its members here
            tinfo["members"] = teacher.info["members"]
        if probe is not None:
            metrics["probe"] = probe
            tinfo["adapted"] = {"kind": "linear-probe", **probe}
    if source is not None and hasattr(source, "dir"):
        metrics["cache"] = {"dir": str(source.dir), "key": source.key, "hits": source.hits, "misses": source.misses,
                            "views_per_image": source.p, "fill_s": round(source.fill_s, 2)}
    provenance = {"dataset": str(cfg["dataset"]), "teacher": tinfo,
                  "teacher_sha256": tinfo["sha256"] if tinfo else None, "student_init": init}
    save_checkpoint(folder / "student.pt", student, arch=cfg["student"], arch_kwargs=cfg["student_kwargs"],
                    classes=train.classes, preprocess=preprocessing(stats["mean"], stats["std"],
                                                                    (3, *train.x.shape[1:3])),
                    metrics=metrics, config=cfg, provenance=provenance)
    write_json(folder / "config.json", cfg)
    write_text(folder / "history.csv", history_csv(history))
    write_json(folder / "metrics.json", {**metrics, "classification_report": report})
    title = f"{cfg['student']} {cfg['method']} on {train.name}"
    curves_png(history, folder / "curves.png", title)
    confusion_png(np.asarray(report["confusion_matrix"]), val.classes, folder / "confusion.png",
                  f"{title}: top-1 {report['top1']:.2f}%")
    write_text(folder / "summary.md", summary_md(cfg, metrics))
    return metrics


def summary_md(cfg: dict, m: dict) -> str:
    s, t = m["student"], m.get("teacher")
    rows = [("top-1 (%)", f"{m['last']['top1']:.2f}", f"{t['top1']:.2f}" if t else "-"),
            ("top-5 (%)", f"{m['last']['top5']:.2f}", f"{t['top5']:.2f}" if t else "-"),
            ("macro F1 (%)", f"{m['last']['macro_f1']:.2f}", f"{t['macro_f1']:.2f}" if t else "-"),
            ("params", f"{s['params']:,}", f"{t['params']:,}" if t and "params" in t else "-"),
            ("MACs", f"{s['macs']:,}" if s.get("macs") else "-", f"{t['macs']:,}" if t and t.get("macs") else "-"),
            ("PyTorch latency b1 (ms)", f"{s['latency_ms_b1']:.2f}" if "latency_ms_b1" in s else "-",
             f"{t['latency_ms_b1']:.2f}" if t and "latency_ms_b1" in t else "-")]
    lines = [f"# {cfg['student']} distilled with `{cfg['method']}`", "",
             f"teacher: `{cfg['teacher']}`; dataset {cfg['dataset']}; {cfg['epochs']} epochs, batch {cfg['batch_size']}, "
             f"{cfg['optimizer']} lr {cfg['lr']} ({cfg['schedule']}); T {cfg['T']}; alpha {cfg['alpha']}; seed {cfg['seed']}",
             "", "| | student | teacher |", "|---|---:|---:|", *[f"| {a} | {b} | {c} |" for a, b, c in rows], "",
             f"best epoch {m['best']['epoch']} (val top-1 {m['best']['val_top1']:.2f}%); training took "
             f"{m['train_seconds']:.0f} s."]
    if t and "agreement_with_student" in t:
        lines.append(f"student/teacher top-1 agreement: {t['agreement_with_student']:.2f}%.")
    if "probe" in m:
        lines.append(f"teacher adapted by a linear probe: probe top-1 {m['probe']['probe_top1']:.2f}% on the test set.")
    return "\n".join(lines) + "\n"
