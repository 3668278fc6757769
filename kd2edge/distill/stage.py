"""`kd2edge distill`: train a compact student from a teacher (or from hard labels, method "ce").

    from kd2edge.distill import distill
    result = distill({"teacher": "cifar10-resnet56", "student": "resnet8", "method": "kd", "epochs": 5})
    # -> {"checkpoint": ".../student.pt", "run_dir": "...", "metrics": {"best": {...}, "last": {...}}}

The run folder is built in `<out>.partial/` (a resumable state after every epoch, written atomically)
and renamed to `<out>` when training ends. Outputs: student.pt (native checkpoint), config.json, history.csv,
metrics.json, curves.png, confusion.png, summary.md. Every config key: kd2edge.distill.config.DEFAULTS.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from kd2edge import Kd2EdgeError, require
from kd2edge.batches import Normalizer
from kd2edge.distill.config import DEFAULTS, RESUME_FREE, resolve_config
from kd2edge.distill.inputs import build_teacher, load_data, make_student, setup_device, teacher_source
from kd2edge.distill.loop import TrainSet, local_batch, make_optimizer, steps_per_epoch, train_epoch, validate
from kd2edge.distill.methods import METHODS
from kd2edge.files import atomic_write, check_out_dir


def finished_result(out: Path) -> dict:
    """What `distill` returns for the finished run folder `out` when it is reused instead of trained again."""
    return {"checkpoint": str(out / "student.pt"), "run_dir": str(out),
            "metrics": json.loads((out / "metrics.json").read_text()), "resumed_finished": True}


def distill(config: dict | None = None, **overrides) -> dict:
    """Run a distillation; returns {"checkpoint", "run_dir", "metrics"}. See the module docstring."""
    cfg = resolve_config(config, **overrides)
    out = check_out_dir(cfg["out"])
    partial = out.with_name(out.name + ".partial")
    if out.exists():
        if cfg["resume"] and (out / "metrics.json").exists():
            check_same_config(out / "config.json", cfg, RESUME_FREE - {"epochs"}, "reuse the finished run")
            return finished_result(out)
        if not cfg["overwrite"]:
            raise Kd2EdgeError(f"{out} already exists; pass --overwrite to replace it, --resume to reuse it, "
                               "or choose another --out")
    require("matplotlib", "plot")  # the run folder's plots: fail now, not after training
    if partial.exists() and not cfg["resume"] and not cfg["overwrite"]:
        raise Kd2EdgeError(f"{partial} holds an interrupted run (kept): continue it with the same command plus "
                           "--resume, or pass --overwrite to start over")
    return train(cfg)


def check_same_config(path: Path, cfg: dict, free, what: str) -> None:
    """Fail unless the config stored at `path` (config.json) equals `cfg` outside the keys in `free`."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise Kd2EdgeError(f"cannot {what} in {path.parent}: its {path.name} is unreadable ({e}); pass "
                           "--overwrite to train again") from None
    _compare(old, cfg, free, f"cannot {what} in {path.parent}")


def train(cfg: dict) -> dict:
    """Train from a resolved config into `<out>.partial/`, then write the outputs and rename it to `<out>`.
    torch's thread count (which `threads` and the ThreadTuner change) is restored afterwards."""
    threads = torch.get_num_threads()
    try:
        return _train(cfg)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: dict) -> dict:
    from kd2edge.distill import budget
    from kd2edge.distill.loop import make_ema, refresh_bn
    from kd2edge.distill.outputs import teacher_eval_cached, teacher_eval_logits, write_outputs
    from kd2edge.distill.teacher_cache import TeacherCache
    from kd2edge.progress import progress_bars

    clock = budget.Clock(cfg["time_budget"]) if cfg["time_budget"] else None
    env = setup_device(cfg)
    rank0 = env.rank == 0
    log = (lambda m: print(m, flush=True)) if rank0 and cfg["progress"] else (lambda m: None)
    out = Path(cfg["out"])
    partial = out.with_name(out.name + ".partial")
    phases = {"start": clock.elapsed()} if clock else {}
    train_ds, val, x_full, x_np, y_np, lab_np = load_data(cfg)
    phases.update({"data": clock.elapsed()} if clock else {})
    teacher, probe, source = None, None, None
    if METHODS[cfg["method"]].needs_teacher:
        teacher, probe = build_teacher(cfg, train_ds, x_np, y_np, lab_np, val, log,
                                       say=(lambda m: print(m, file=sys.stderr, flush=True)) if rank0 else None)
    phases.update({"teacher": clock.elapsed()} if clock else {})
    student, stats, init = make_student(cfg, train_ds.num_classes, train_ds.name, env.device)
    method = METHODS[cfg["method"]].from_config(cfg, student, teacher, env.device).to(env.device)
    normalizer = Normalizer(stats["mean"], stats["std"], channels_last=True).to(env.device)
    state = load_state(partial / "state.pt", cfg) if cfg["resume"] else None
    chosen_by, speeds = "config", {}
    if state is not None and "amp" in state:  # a resumed run replays in the precision it started with
        env.amp, chosen_by = state["amp"] is True, "the interrupted run"
    elif cfg["amp"] == "auto" and env.device == "cpu" and env.world == 1 and env.amp:  # bf16 where it measures
        # faster here
        env.amp, speeds = budget.pick_amp(student, normalizer, x_np, min(cfg["batch_size"], len(y_np)),
                                          train_ds.num_classes)
        chosen_by = "measured"
        log(f"training in {'bf16' if env.amp else 'fp32'}: measured here {speeds['bf16_img_s']:.0f} img/s bf16 "
            f"autocast, {speeds['fp32_img_s']:.0f} fp32")
    precision = {"amp": "bf16" if env.amp else "fp32", "chosen_by": chosen_by, **speeds}
    plan = None
    if clock is not None:  # measure this machine now; size the cache and the reserve to the budget
        plan = budget.plan_budget(cfg, clock, teacher, student, method, normalizer, x_np, len(y_np), len(val.y),
                                  env, train_ds.num_classes, log)
        plan["phases"] = {**phases, "planned": clock.elapsed()}
        cfg = {**cfg, "views_per_image": plan["views_per_image"] or cfg["views_per_image"]}
    if teacher is not None:
        source = teacher_source(cfg, teacher, env, x_full, train_ds.name)
    tuner = None
    if cfg["threads"] == "auto" and env.device == "cpu" and env.world == 1:
        tuner = budget.ThreadTuner(os.cpu_count())
    if isinstance(source, TeacherCache) and (clock is not None or (cfg["fresh_views"] and cfg["method"] == "kd")):
        fill_cache(cfg, source, x_full, len(y_np), plan, tuner, log)
    model = torch.nn.parallel.DistributedDataParallel(student) if env.world > 1 else student
    optimizer = make_optimizer(list(student.parameters()) + list(method.parameters()), cfg)
    data = TrainSet(torch.from_numpy(x_np), torch.from_numpy(y_np), torch.from_numpy(lab_np))
    ema = make_ema(student, cfg["ema"]) if cfg["ema"] else None
    history, start, best = [], 0, None
    if state is not None:
        student.load_state_dict(state["student"])
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        history, start, best = state["history"], state["epoch"], state["best"]
        log(f"resuming {partial} after epoch {start}")
    elif rank0:
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
    x_val, y_val = torch.from_numpy(val.x), torch.from_numpy(val.y)
    images_per_epoch = steps_per_epoch(len(data.y), local_batch(cfg, env), env.world) * local_batch(cfg, env) * env.world
    if clock is not None:
        plan["train_slice_s"] = clock.begin_training(plan["reserve_s"], plan["student_train_ips_probe"])
        plan["threads_at_training_start"] = torch.get_num_threads()
        log(f"training for {plan['train_slice_s']:.0f}s")
    epoch = start
    with progress_bars(rank0 and cfg["progress"]) as bars:
        while (epoch < cfg["epochs"]) if clock is None else not clock.training_done():
            task = bars.task(f"epoch {epoch + 1}" + (f"/{cfg['epochs']}" if clock is None else ""), images_per_epoch,
                             unit="img")
            row = train_epoch(epoch, cfg, env, model, normalizer, method, source, optimizer, data,
                              lambda b: task.advance(b * env.world), clock=clock, tuner=tuner, ema=ema)
            task.done()
            last = epoch + 1 == cfg["epochs"]
            if clock is None and ((epoch + 1) % cfg["val_every"] == 0 or last):
                row.update(validate(student, normalizer, x_val, y_val, env.device)[0])
            if source is not None:
                row.update({"cache_hits": source.hits, "cache_misses": source.misses})
            history.append(row)
            if "val_top1" in row and (best is None or row["val_top1"] > best["val_top1"]):
                best = dict(row)
            if rank0 and clock is None:  # a budgeted run cannot be resumed: no state to save
                save_state(partial / "state.pt", {"student": student.state_dict(), "method": method.state_dict(),
                                                  "optimizer": optimizer.state_dict(), "history": history,
                                                  "epoch": epoch + 1, "best": best, "config": cfg,
                                                  "amp": env.amp})
            if rank0:
                shown = f" val top-1 {row['val_top1']:.2f}%" if "val_top1" in row else ""
                log(f"epoch {epoch + 1}: train loss {row['train_loss']:.4f}{shown} ({row['train_ips']:.0f} img/s)")
            epoch += 1
    if env.world > 1:
        torch.distributed.barrier()
    if not rank0:
        return {"checkpoint": str(out / "student.pt"), "run_dir": str(out), "metrics": {}}
    if ema is not None:  # the averaged weights become the student, with BN statistics recomputed for them; the
        # last step's weights are scored first, so one run measures what the average is worth (val_top1_last_step)
        raw_row = validate(student, normalizer, x_val, y_val, env.device, env.amp and clock is not None)[0]
        history[-1].update({f"{k}_last_step": v for k, v in raw_row.items()})
        student.load_state_dict(ema.module.state_dict())
        refresh_bn(student, normalizer, data.x, cfg, env.device, env.amp)
    if clock is not None:
        plan["phases"]["trained"] = clock.elapsed()
        plan["reserve_s_final"] = clock.deadline - clock.train_end
        plan["thread_probes"] = tuner.history[-20:] if tuner is not None else []
    # a budgeted run evaluates in its training precision (bf16 autocast: ~2.5x faster than fp32 on CPU)
    val_row, val_logits = validate(student, normalizer, x_val, y_val, env.device, env.amp and clock is not None)
    if clock is not None:
        plan["phases"]["evaluated"] = clock.elapsed()
        plan["eval_precision"] = "bf16" if env.amp else "fp32"
        history[-1].update(val_row)
        best = dict(history[-1])
        cfg = {**cfg, "epochs": len(history)}
    t_val = None
    if teacher is not None:  # a budgeted run measures the teacher only when cached or when time is left
        if clock is None or teacher_eval_cached(teacher, val.x, cfg) or \
                clock.remaining() > 1.5 * len(val.y) / plan["teacher_forwards_per_s_probe"] + 4.0:
            t_val = teacher_eval_logits(teacher, val.x, cfg)
    metrics = write_outputs(partial, cfg, student.cpu(), train_ds, val, history, best, val_logits, teacher, t_val,
                            probe, source, stats, init, plan, precision)
    finish_run_dir(partial, out)
    if clock is not None:
        from kd2edge.files import write_json

        metrics["budget"]["wall_s"] = metrics["budget"]["phases"]["written"] = clock.elapsed()
        write_json(out / "budget.json", metrics["budget"])
        log("time budget phases (s since start): " + ", ".join(f"{k} {v:.1f}" for k, v in
                                                                 metrics["budget"]["phases"].items()))
    return {"checkpoint": str(out / "student.pt"), "run_dir": str(out), "metrics": metrics}


def fill_cache(cfg: dict, source, x_full, n: int, plan: dict | None, tuner, log) -> None:
    """Fill the cache's teacher views up front, timed, feeding the ThreadTuner; a kd run then reads the cache
    alone (`cache_only`), which is what lets `fresh_views` teach a new view with its image's cached logits.
    Runs for a budgeted run (`plan`: its planned views) and for an epoch-counted kd run with `fresh_views`. A
    budgeted kd run that overruns its plan (the machine slowed down) stops the build and trains the images left
    without teacher logits on labels."""
    import time

    from kd2edge.progress import progress_bars

    todo, before = int((np.asarray(source.filled[:n]) == 0).sum()), source.fill_s
    cut = None
    if plan is not None and cfg["method"] == "kd":
        limit = time.perf_counter() + 1.25 * min(plan["cache_build_s_planned"], plan["cache_time_cap_s"])
        cut = lambda: time.perf_counter() > limit  # noqa: E731
    with progress_bars(cfg["progress"]) as bars:
        task, last = bars.task("teacher cache", todo, unit="fwd"), [time.perf_counter()]

        def step(k):  # one batch of teacher forwards done: progress + thread tuning
            task.advance(k)
            now = time.perf_counter()
            if tuner is not None and k == 500:
                tuner.step_time(now - last[0])
            last[0] = now

        done = source.fill(torch.from_numpy(x_full), n, progress=step, stop=cut)
        task.done()
    source.cache_only = cfg["method"] == "kd"
    built = {"cache_build_s": source.fill_s - before, "cache_forwards": done,  # (TeacherCache times its fill)
             "cache_filled_fraction": source.filled_fraction(n)}
    if plan is not None:
        plan.update(built)
    log(f"teacher cache: {done} forwards in {built['cache_build_s']:.1f}s "
        f"({100 * built['cache_filled_fraction']:.0f}% of the {'planned ' if plan is not None else ''}views)")
    if tuner is not None:
        tuner.reset()


def finish_run_dir(partial: Path, out: Path) -> None:
    """Rename the finished partial folder into place (replacing an old run when overwriting), without the
    temporary files a kill between write and rename may have left (.state.pt.*.tmp)."""
    for tmp in partial.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(partial, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, out)


def save_state(path: Path, state: dict) -> None:
    """The resume state: tensors and plain containers only, so it loads with torch.load(weights_only=True)."""
    from kd2edge.checkpoint import plain

    state = {**state, **{k: plain(state[k]) for k in ("history", "best", "config")}}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


STATE_KEYS = ("student", "method", "optimizer", "history", "epoch", "best", "config")


def load_state(path: Path, cfg: dict) -> dict | None:
    """The resume state of `path` (weights-only load; anything else is refused), checked against `cfg`."""
    from kd2edge.checkpoint import plain, load_weights_only

    if not path.exists():
        return None
    fix = f"delete {path.parent} (or pass --overwrite) to start over"
    state = load_weights_only(path, "resume state", fix)
    if not isinstance(state, dict) or not all(k in state for k in STATE_KEYS):
        raise Kd2EdgeError(f"{path} is not a kd2edge resume state (expected keys {', '.join(STATE_KEYS)}): {fix}")
    _compare(state["config"], cfg, RESUME_FREE, f"cannot resume {path.parent}")
    return state


def _compare(old: dict, cfg: dict, free, what: str) -> None:
    from kd2edge.checkpoint import plain

    old = {k: v for k, v in old.items() if k not in free}
    new = {k: v for k, v in plain(cfg).items() if k not in free}
    # a key the older run does not record came later, and its default is what that run did (e.g. cutout 0)
    diff = sorted(k for k in set(old) | set(new) if old.get(k, DEFAULTS.get(k)) != new.get(k))
    if diff:
        shown = ", ".join(f"{k} ({old.get(k)!r} there, {new.get(k)!r} asked)" for k in diff[:4])
        raise Kd2EdgeError(f"{what}: its config differs in {shown}; use the same settings, another --out, "
                           "or --overwrite")
