"""The device stage: `bench(artifact folders) -> rows` (stage.py), the machine's fingerprint, the reports
(bench-*.json, bench.csv, bench.png) and the import of TFLite benchmark_model logs. Torch-free."""
from kd2edge.bench.stage import bench

__all__ = ["bench"]
