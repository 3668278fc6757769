"""Distillation throughput, side by side in ONE process on this CPU:

  tutorial  the loop users write from the official PyTorch KD tutorial: torchvision CIFAR10 Dataset with
            per-sample PIL transforms (RandomCrop(32, 4), RandomHorizontalFlip, ToTensor, Normalize),
            DataLoader(2 workers, shuffle), teacher forward at every step, KD loss, SGD step.
  kd2edge   `kd2edge.distill.distill()` itself with a warm teacher cache (in-memory uint8 batches,
            whole-tensor augmentation, cached fp16 teacher logits), and without the cache (live teacher).

Same student, same teacher (shared resnet56), same batch size, same images (the first N of CIFAR-10 train).
Rows are interleaved (tutorial, kd2edge, tutorial, kd2edge) so a change in machine load hits both alike.
Also the one-time cost of building the cache (teacher on every (image, pool view)).

    .venv/bin/python benchmarks/distill_speed.py --n 5120 --student resnet8
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TEACHER = "cifar10-resnet56"  # a known name: found under $KD2EDGE_WEIGHTS (default ./models), as kd2edge does
DATA_DIR = Path(os.environ.get("KD2EDGE_DATA", ROOT / "data"))


def machine() -> dict:
    """CPU ISA (bf16 / VNNI / AVX2), oneDNN / ATen ISA limits in force, threads and load: recorded with every number."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tb", Path(__file__).with_name("time_budget.py"))
    tb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tb)
    from kd2edge.distill.config import bf16_supported

    return {**tb.cpu_isa(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_used_by_amp_auto": bf16_supported(), "threads": torch.get_num_threads(),
            "loadavg": tb.loadavg()}


def tutorial_loop(student_arch, n, batch_size, data_dir, workers=2) -> float:
    import torch.nn.functional as F
    import torchvision
    import torchvision.transforms as T

    from kd2edge.checkpoint import load_model
    from kd2edge.zoo import create_model

    class CIFAR10(torchvision.datasets.CIFAR10):
        def _check_integrity(self):  # the materialized copy is the same data but not the archive's files
            return True

        def _load_meta(self):  # torchvision checks the archive's md5 here too
            import pickle

            with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))])
    ds = torch.utils.data.Subset(CIFAR10(str(data_dir), train=True, transform=tf), range(n))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=False)
    teacher, _ = load_model(TEACHER)
    teacher.eval()
    # the shared teacher was trained with ImageNet stats: re-normalize its input (cheap, done on the batch)
    m10 = torch.tensor((0.4914, 0.4822, 0.4465)).view(1, 3, 1, 1)
    s10 = torch.tensor((0.2470, 0.2435, 0.2616)).view(1, 3, 1, 1)
    mi = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    si = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    torch.manual_seed(0)
    student = create_model(student_arch)
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    T_, alpha, seen = 4.0, 0.9, 0
    t0 = time.perf_counter()
    for x, y in loader:
        with torch.no_grad():
            t_logits = teacher((x * s10 + m10 - mi) / si)
        s_logits = student(x)
        kd = F.kl_div(F.log_softmax(s_logits / T_, 1), F.softmax(t_logits / T_, 1), reduction="batchmean") * T_ * T_
        loss = alpha * kd + (1 - alpha) * F.cross_entropy(s_logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(y)
    return seen / (time.perf_counter() - t0)


def kd2edge_run(student_arch, n, batch_size, cache_dir, out_dir, cache=True, amp="auto", epochs=2,
                channels_last=True, teacher_precision="int8") -> dict:
    from kd2edge.distill import distill

    r = distill({"teacher": TEACHER, "student": student_arch, "method": "kd",
                 "epochs": epochs, "batch_size": batch_size, "limit_train": n, "limit_val": 1000,
                 "cache": cache, "cache_dir": str(cache_dir), "out": str(out_dir), "overwrite": True,
                 "amp": amp, "channels_last": channels_last, "latency": False, "progress": False,
                 "teacher_precision": teacher_precision,  # the precision the cache was built with: it hits
                 "threads": "auto",  # measured 1-vs-2-thread choice (what a --time-budget run does)
                 "data_dir": str(DATA_DIR)})
    hist = list(csv_rows(Path(r["run_dir"]) / "history.csv"))
    return {"ips": float(hist[-1]["train_ips"]), "ips_epochs": [float(h["train_ips"]) for h in hist],
            "teacher_seconds": [float(h["teacher_seconds"]) for h in hist]}


def csv_rows(path):
    import csv

    with open(path) as f:
        yield from csv.DictReader(f)


def build_cache(n, cache_dir, views_per_image=8, precision="int8") -> dict:
    from kd2edge.data import load_dataset
    from kd2edge.distill.teacher import load_teacher
    from kd2edge.distill.teacher_cache import TeacherCache
    from kd2edge.distill.teacher_int8 import to_int8

    train = load_dataset("cifar10", "train", DATA_DIR)
    t0, c0 = time.perf_counter(), time.process_time()
    teacher = load_teacher(TEACHER, bf16=precision == "bf16")
    if precision == "int8":  # what kd2edge distill does (teacher_precision int8): quantized once per teacher
        teacher = to_int8(teacher, train.x, cache_dir)
    int8_build = time.perf_counter() - t0
    cache = TeacherCache(teacher, train.x, "cifar10", views_per_image, root=cache_dir)
    setup = time.perf_counter() - t0
    t1 = time.perf_counter()
    done = cache.fill(torch.from_numpy(train.x), n)
    sec = time.perf_counter() - t1
    return {"cpu_seconds": time.process_time() - c0, "load_avg": os.getloadavg(), "loadavg_end": open("/proc/loadavg").read().strip(), "images": n, "views_per_image": views_per_image, "teacher_precision": precision,
            "int8_teacher_build_seconds": int8_build if precision == "int8" else None, "forwards": done,
            "seconds": sec, "forwards_per_s": done / sec, "setup_seconds": setup,
            "cache_bytes_on_disk": sum(os.stat(p).st_blocks * 512 for p in Path(cache.dir).iterdir())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5120)
    ap.add_argument("--student", default="resnet8")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/distill_speed.json"))
    ap.add_argument("--cache-dir", help="reuse a teacher cache built before (its build cost is then not re-measured)")
    ap.add_argument("--amp", choices=["both", "auto", "false"], default="both",
                    help="kd2edge rows: bf16 autocast as on this CPU (auto), fp32 only (false: a no-bf16 CPU), or both")
    ap.add_argument("--teacher-precision", choices=["int8", "bf16", "fp32"], default="int8",
                    help="the teacher that builds the cache and that the kd2edge rows read it with (kd2edge distill's "
                         "teacher_precision; int8: onnxruntime, what a --time-budget run picks)")
    ap.add_argument("--no-live", action="store_true", help="skip the live-teacher row")
    a = ap.parse_args()
    from kd2edge.files import write_json

    work = Path(tempfile.mkdtemp(prefix="kd2edge-speed-"))
    if a.cache_dir:
        shutil.copytree(a.cache_dir, work / "cache")
    result = {"n": a.n, "student": a.student, "batch_size": a.batch_size, "threads": torch.get_num_threads(),
              "cpu_count": os.cpu_count(), "load_avg_start": os.getloadavg(), "machine": machine()}
    t_all = time.perf_counter()
    print("building the teacher cache (one-time cost) ...", flush=True)
    result["teacher_precision"] = a.teacher_precision
    result["cache_build"] = build_cache(a.n, work / "cache", precision=a.teacher_precision)
    print(json.dumps(result["cache_build"]), flush=True)
    if not a.cache_dir:
        write_json(Path(a.out).with_name(Path(a.out).stem + "_cache_build.json"), result["cache_build"])
    from kd2edge.distill.config import bf16_supported

    tut, ours, ours_fp32 = [], [], []
    for r in range(a.rounds):
        tut.append(tutorial_loop(a.student, a.n, a.batch_size, DATA_DIR))
        print(f"round {r}: tutorial {tut[-1]:.0f} img/s", flush=True)
        if a.amp in ("both", "auto"):  # bf16 autocast where the CPU has bf16 (amp auto measures it against fp32
            # and keeps the faster: this row and the fp32 row are its two choices)
            ours.append(kd2edge_run(a.student, a.n, a.batch_size, work / "cache", work / "run",
                                    amp=True if bf16_supported() else "auto",
                                    teacher_precision=a.teacher_precision)["ips"])
            print(f"round {r}: kd2edge cached, bf16 where supported {ours[-1]:.0f} img/s  "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)
        if a.amp in ("both", "false"):
            ours_fp32.append(kd2edge_run(a.student, a.n, a.batch_size, work / "cache", work / "run", amp=False,
                                         teacher_precision=a.teacher_precision)["ips"])
            print(f"round {r}: kd2edge cached, fp32 {ours_fp32[-1]:.0f} img/s  load {os.getloadavg()[0]:.2f}", flush=True)
    live = None if a.no_live else kd2edge_run(a.student, a.n, a.batch_size, work / "cache", work / "run", cache=False,
                                              epochs=1, teacher_precision=a.teacher_precision)
    if live:
        print(f"kd2edge live teacher (no cache): {live['ips']:.0f} img/s", flush=True)
    med = statistics.median
    result.update({
        "tutorial_ips": tut, "kd2edge_cached_bf16_ips": ours, "kd2edge_cached_fp32_ips": ours_fp32,
        "kd2edge_live_teacher_ips": live and live["ips"],
        "speedup_cached_bf16": ours and med(ours) / med(tut),
        "speedup_cached_fp32": ours_fp32 and med(ours_fp32) / med(tut),
        "speedup_per_round_amp_auto": [o / t for o, t in zip(ours, tut)],
        "speedup_per_round_fp32": [o / t for o, t in zip(ours_fp32, tut)],
        "speedup_live": live and live["ips"] / med(tut),
        "speedup_cached_faster_precision": max(med(o) for o in (ours, ours_fp32) if o) / med(tut),
        "load_avg_end": os.getloadavg(), "machine_end": machine(), "wall_seconds": time.perf_counter() - t_all})
    print(json.dumps(result, indent=2))
    write_json(a.out, result)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
