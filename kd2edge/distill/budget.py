"""Wall-time budgets for `kd2edge distill --time-budget`.

A budgeted run is planned and driven by the clock, not by a step count, so it stops on time on a slower or
loaded machine:

- The budget counts from the start of the process for the `kd2edge distill` command (its own start-up, data
  load and teacher load included) when the OS tells us when that was, else from the `distill()` call.
- Before training the run measures what it costs here and now: the teacher's forwards/s (cache build) and
  the student's training images/s (a few throw-away steps), plus the final evaluation and outputs, which it
  reserves at the end.
- The number of cached teacher views per image is planned so the cold cache build takes at most
  `cache_fraction` of the budget (at least one view); a budget that cannot fit the fixed costs, the cache
  build and one epoch is refused with the smallest budget that would work.
- Training then runs until its time slice is used up. The learning-rate schedule and the T/alpha schedules
  are evaluated at the fraction of that slice already elapsed (`Clock.progress()`), so warm-up and decay
  stretch or shrink with the machine's actual speed; the last epoch is cut where the time ends.
"""
from __future__ import annotations

import math
import os
import re
import time

import torch

from kd2edge import Kd2EdgeError

_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_time_budget(value) -> float | None:
    """Seconds from 377, "377", "377s", "6m", "6.5min", "1h" or "1h30m"; None stays None."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        parts = re.findall(r"(\d+(?:\.\d+)?)(h|min|m|sec|s|)", text)
        if not text or not parts or "".join(a + b for a, b in parts) != text:
            raise Kd2EdgeError(f"bad time budget {value!r}: give seconds (377) or a duration like 6m, 1h, 1h30m")
        seconds = sum(float(a) * _UNITS[b] for a, b in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise Kd2EdgeError(f"time budget must be positive, got {value!r}")
    return seconds


def process_start_time() -> float | None:
    """time.time() at which this process started (Linux /proc), or None."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - uptime + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


# The `kd2edge distill` command sets this: its budget then counts from the start of the process (start-up
# included); a library call to distill() counts from the call.
FROM_PROCESS_START = False


class Clock:
    """Deadline bookkeeping of one budgeted run (wall seconds from `time.time()`)."""

    def __init__(self, budget: float, start: float | None = None):
        now = time.time()
        if start is None and FROM_PROCESS_START:
            start = process_start_time()
        self.start = start if start is not None and 0 <= now - start < 60 else now
        self.budget = float(budget)
        self.deadline = self.start + self.budget
        self.train_start = self.train_end = None

    def elapsed(self) -> float:
        return time.time() - self.start

    def remaining(self) -> float:
        return self.deadline - time.time()

    def begin_training(self, reserve: float, images_per_s: float | None = None) -> float:
        """Training may run from now until the deadline minus `reserve` seconds; returns that slice.
        `images_per_s`: the training speed measured when the reserve was planned (see `observe`)."""
        self.train_start = time.time()
        self.reserve, self.planned_ips, self.ips, self.step_s = reserve, images_per_s, None, 0.0
        self.train_end = self.deadline - reserve
        return self.train_end - self.train_start

    def observe(self, images: int, seconds: float):
        """One training step's speed. When the machine got slower than at planning time (more load), the final
        evaluation and outputs will be slower too: the reserve grows by the same factor, so training ends earlier."""
        if seconds <= 0:
            return
        self.step_s = seconds if not self.step_s else 0.7 * self.step_s + 0.3 * seconds
        if not self.planned_ips:
            return
        ips = images / seconds
        self.ips = ips if self.ips is None else 0.9 * self.ips + 0.1 * ips
        slowdown = min(4.0, max(1.0, self.planned_ips / self.ips))
        self.train_end = self.deadline - self.reserve * slowdown

    def progress(self) -> float:
        """Fraction of the training slice elapsed at the end of the coming step (at the recent step time), in
        [0, 1]: the last step of a run runs at the end of its schedules."""
        span = max(1e-9, self.train_end - self.train_start)
        return min(1.0, max(0.0, (time.time() + getattr(self, "step_s", 0.0) - self.train_start) / span))

    def training_left(self) -> float:
        return self.train_end - time.time()

    def training_done(self) -> bool:
        """True when the next step (at the recent step time) would end past the training slice."""
        return time.time() + self.step_s >= self.train_end


def too_small(budget: float, need: float, detail: str) -> Kd2EdgeError:
    return Kd2EdgeError(f"--time-budget {budget:g}s is too small for one epoch here ({detail}); "
                        f"the smallest budget that works is about {math.ceil(need)}s")


class ThreadTuner:
    """Picks the faster of 1 thread and all threads while training, from measured step times.

    On a shared machine, two OpenMP threads that must meet at every op's barrier can be several times slower
    than one (each waits whenever the other is descheduled); on an idle machine two are faster. The tuner
    times `probe_steps` steps at the other setting every `period` seconds and keeps whichever ran faster
    (the first step after a switch is not counted).
    """

    def __init__(self, max_threads: int | None = None, period: float = 20.0, probe_steps: int = 4):
        import torch

        self.torch = torch
        self.options = sorted({1, int(max_threads or torch.get_num_threads())})
        self.period, self.probe_steps = period, probe_steps
        self.times: dict[int, list[float]] = {o: [] for o in self.options}
        self.probing, self.skip, self.next_probe = None, 0, time.time() + 3.0
        self.switches, self.history = 0, []

    def reset(self):
        """A new kind of work (step times not comparable with the old ones): measure afresh."""
        self.times = {o: [] for o in self.options}
        self.probing, self.next_probe = None, time.time() + 3.0

    def _rate(self, n: int) -> float:
        t = self.times[n][-self.probe_steps:]
        return sorted(t)[len(t) // 2] if t else float("inf")

    def step_time(self, seconds: float, allow_probe: bool = True):
        """Call after every training step with its wall seconds; may change torch's thread count. A run near
        its deadline passes allow_probe=False: a probe step at the other setting can take seconds under load."""
        if len(self.options) < 2:
            return
        if not allow_probe and self.probing is None:
            self.times.setdefault(self.torch.get_num_threads(), []).append(seconds)
            return
        if self.skip:
            self.skip -= 1
            return
        cur = self.torch.get_num_threads()
        self.times.setdefault(cur, []).append(seconds)
        if self.probing is not None and len(self.times[cur]) == 1:
            other = [o for o in self.options if o != cur][0]
            if seconds > 2.0 * self._rate(other):  # clearly slower: do not spend more steps on the probe
                self.history.append({cur: round(seconds, 4), other: round(self._rate(other), 4)})
                self._set(other)
                self.probing, self.next_probe = None, time.time() + self.period
                return
        if self.probing is not None:
            if len(self.times[cur]) >= self.probe_steps:
                other = [o for o in self.options if o != cur][0]
                best = min(self.options, key=self._rate)
                self.history.append({o: round(self._rate(o), 4) for o in self.options})
                if best != cur:
                    self._set(best)
                else:
                    self.switches += 1
                    self.times[other] = []
                self.probing, self.next_probe = None, time.time() + self.period
        elif time.time() >= self.next_probe and len(self.times[cur]) >= self.probe_steps:
            other = [o for o in self.options if o != cur][0]
            self.times[other] = []
            self.probing = other
            self._set(other)

    def _set(self, n: int):
        self.torch.set_num_threads(n)
        self.skip = 1


# --- planning a budgeted run (called by kd2edge.distill.stage.train) ---
# fewer epochs than this and a budgeted run says so at planning time: KD beat hard labels at 12 epochs (the
# quickstart, 3 seeds) and lost to them at 5-7 (377 s on an AVX2-only CPU); benchmarks/distill.md
FEW_EPOCHS = 12


def few_epochs_note(budget: float, epochs: float, epoch_s: float) -> str | None:
    """A line for a budget that fits fewer than FEW_EPOCHS epochs here (`epochs` at `epoch_s` seconds each), naming
    the budget that fits FEW_EPOCHS; None when enough fit."""
    if epochs >= FEW_EPOCHS:
        return None
    return (f"note: at least {epochs:.1f} epoch(s) fit in {budget:.0f}s on this CPU (more if two threads train "
            f"faster); below ~{FEW_EPOCHS} the student stays far below what the recipe reaches with more time, and "
            f"hard labels can beat KD (benchmarks/distill.md, 'On a real AVX2-only CPU'): --time-budget "
            f"{math.ceil(budget + (FEW_EPOCHS - epochs) * epoch_s)}s fits at least {FEW_EPOCHS}")


def probe_student_rate(student, method, normalizer, x: torch.Tensor, batch: int, amp: bool, device: str,
                       num_classes: int, steps: int = 2) -> float:
    """Training images/s of the student here and now: a warm-up step and `steps` timed steps on a copy."""
    import copy

    from kd2edge.distill.loop import autocast

    s = copy.deepcopy(student).train()
    opt = torch.optim.SGD(s.parameters(), lr=0.0, momentum=0.9)
    xb = x[:batch].to(device)
    yb = torch.zeros(len(xb), dtype=torch.int64, device=device)
    tb = torch.zeros(len(xb), num_classes, device=device)
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        with autocast(device, amp):
            out = s(normalizer(xb))
        loss = torch.nn.functional.cross_entropy(out.float(), yb) + 0.0 * tb.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * len(xb) / (time.perf_counter() - t0)


def pick_amp(student, normalizer, x_np, batch: int, num_classes: int) -> tuple[bool, dict]:
    """`amp: auto` on a CPU with native bf16: (bf16 autocast or not, the training images/s measured for each).
    bf16 is taken only where it trains this student faster here, which depends on both: fastcnn and the resnets
    trained 1.4-1.6x faster in bf16 on an AMX Xeon but 1.2-1.3x faster in fp32 on a Xeon with AVX-512 BF16 and
    no AMX; shufflenetv2 1.7-2x faster in fp32 on both, mobilenetv2 faster in fp32 on the one and in bf16 on the
    other (benchmarks/distill.md, "bf16 or fp32: measured, not assumed")."""
    x = torch.from_numpy(x_np[:batch])
    rates = {amp: probe_student_rate(student, None, normalizer, x, len(x), amp, "cpu", num_classes)
             for amp in (True, False)}
    return rates[True] > rates[False], {"bf16_img_s": round(rates[True], 1), "fp32_img_s": round(rates[False], 1),
                                         "threads": torch.get_num_threads()}


def probe_seconds(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def plan_budget(cfg: dict, clock, teacher, student, method, normalizer, x_np, n_train: int, n_val: int,
                env, num_classes: int, log) -> dict:
    """Measure the teacher's and the student's speed here, reserve the end, and size the cache to the budget."""
    from kd2edge.distill.loop import predict_logits
    from kd2edge.distill.methods import METHODS

    try:  # the plots' import (seconds on a loaded machine) happens now, in the measured start-up
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
    except ImportError:
        pass

    x = torch.from_numpy(x_np[:max(cfg["batch_size"], 256)])
    bs = min(cfg["batch_size"], n_train)
    if cfg["threads"] == "auto":
        # plan with one thread: on a loaded machine two threads can be several times slower (and a probe of
        # them costs seconds); the ThreadTuner tries all threads once training runs and keeps the faster
        torch.set_num_threads(1)
    s_ips = probe_student_rate(student, method, normalizer, x, bs, env.amp, env.device, num_classes)
    # final evaluation (student over the test set) + outputs, with margin
    predict_logits(student, normalizer, x[:64], env.device, 64, env.amp)  # warm-up
    t_eval = probe_seconds(predict_logits, student, normalizer, x[:256], env.device, 256, env.amp) * n_val / 256
    # with ema: the last step's weights are scored too, and the average's BN statistics are recomputed over the
    # training images (a forward pass each, ~ an evaluation per n_val images)
    evals = (2 + n_train / n_val) if cfg["ema"] else 1
    reserve = 1.3 * evals * t_eval + 4.0 + 0.005 * clock.budget  # (+ process exit; scaled up by Clock.observe under load)
    plan = {"budget_s": clock.budget, "student_train_ips_probe": s_ips, "reserve_s": reserve,
            "threads_start": torch.get_num_threads(), "setup_s": clock.elapsed()}
    t_fwd = 0.0
    need_teacher = teacher is not None and cfg["cache"] and not METHODS[cfg["method"]].needs_features
    if teacher is not None:
        # the cache build runs at whichever thread count the ThreadTuner finds faster: plan with the faster (an
        # onnxruntime teacher keeps its own threads: one probe of it)
        tune = cfg["threads"] == "auto" and teacher.torch_threads
        threads = sorted({1, torch.get_num_threads(), os.cpu_count() or 1}) if tune else [None]
        rates = {}
        for n in threads:  # 1 thread: 256 images; more threads: 64 (a probe of them can take seconds under load)
            if n is not None:
                torch.set_num_threads(n)
            k = 64 if n is not None and n > 1 else 256
            teacher.logits(x[:16])  # warm-up
            key = n if n is not None else (torch.get_num_threads() if teacher.torch_threads else "own")
            rates[key] = k / probe_seconds(teacher.logits, x[:k])
        if threads != [None]:
            torch.set_num_threads(plan["threads_start"])
        plan["teacher_forwards_per_s_probe"] = t_fwd = max(rates.values())
        plan["teacher_forwards_per_s_by_threads"] = {str(k): round(v, 1) for k, v in rates.items()}
    one_epoch = n_train / s_ips
    if teacher is not None and not need_teacher:  # live teacher: every step pays a teacher forward
        one_epoch += n_train / t_fwd
    cache_one = n_train / t_fwd if need_teacher else 0.0
    if cfg["method"] == "kd":  # a partial cache is fine for kd (labels for the rest): plan a slice of the budget
        cache_one = min(cache_one, cfg["cache_fraction"] * clock.budget)
    need = clock.elapsed() + cache_one + one_epoch + reserve
    if need > clock.budget:
        raise too_small(clock.budget, 1.3 * need + 2.0, f"start-up {clock.elapsed():.0f}s + teacher cache "
                        f"{cache_one:.0f}s + one epoch {one_epoch:.0f}s + evaluation and outputs {reserve:.0f}s")
    views = 0
    if need_teacher:
        avail = clock.remaining() - reserve
        views = round(cfg["cache_fraction"] * avail * t_fwd / n_train)  # (a view cut short trains on labels)
        views = max(1, min(int(cfg["views_per_image"]), views))
        plan["cache_build_s_planned"] = views * n_train / t_fwd
        plan["cache_time_cap_s"] = max(cfg["cache_fraction"] * avail, 1.0)  # KD: one view may be cut short
    plan["views_per_image"] = views
    # epochs that fit at the probed (one-thread) speed: a floor, two threads may train faster
    build = min(plan.get("cache_build_s_planned", 0.0), plan.get("cache_time_cap_s", float("inf")))
    plan["epochs_floor"] = epochs = max(0.0, clock.remaining() - reserve - build) / one_epoch
    log(f"time budget {clock.budget:.0f}s: setup {plan['setup_s']:.1f}s, student {s_ips:.0f} img/s "
        f"({torch.get_num_threads()} thread(s))" + (f", teacher {t_fwd:.0f} forwards/s -> {views} cached view(s) "
                                                    f"per image" if need_teacher else "") + f", reserve {reserve:.0f}s")
    note = few_epochs_note(clock.budget, epochs, one_epoch)
    if note:
        log(note)
    return plan
