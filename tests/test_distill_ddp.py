"""DistributedDataParallel through torchrun with two CPU processes (gloo), tiny budget."""
import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_torchrun_two_cpu_processes(tmp_path, cifar10_dir, teacher_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    cfg = {"teacher": str(teacher_path("resnet20")), "teacher_arch": "resnet20", "student": "resnet8",
           "student_kwargs": {"width": 8}, "method": "kd", "epochs": 2, "batch_size": 128, "limit_train": 512,
           "limit_val": 300, "latency": False, "progress": False, "out": str(tmp_path / "run"),
           "cache_dir": str(tmp_path / "cache"), "data_dir": str(ROOT / "data"), "threads": 1}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    p = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "kd2edge", "distill",
                        "--config", str(tmp_path / "c.yaml"), "--json"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout[p.stdout.index("{"):])
    hist = (Path(r["run_dir"]) / "history.csv").read_text().splitlines()
    header = hist[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in hist[1:]]
    assert len(rows) == 2
    assert all(int(row["train_images"]) == 512 for row in rows)  # 2 ranks x 4 steps x 64 images
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    # both ranks wrote their own shards into the one shared teacher cache: in epoch 1 every image was seen
    import numpy as np

    folder = next((tmp_path / "cache" / "teacher_logits").glob("*/meta.json")).parent
    meta = json.loads((folder / "meta.json").read_text())
    filled = np.memmap(folder / "filled.u8", np.uint8, "r", shape=(meta["n"], meta["views_per_image"]))
    assert (filled[:512].sum(1) >= 1).all() and filled[512:].sum() == 0
    assert 512 <= filled.sum() <= 1024
