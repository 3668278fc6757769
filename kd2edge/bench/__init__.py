"""The device stage: `bench(artifact folders) -> rows` (stage.py), the machine's fingerprint, the reports
(bench-*.json, bench.csv, bench.png) and the import of TFLite benchmark_model logs. Torch-free."""
from kd2edge.bench.stage import bench

__all__ = ["bench"]


from kd2edge import api_module  # noqa: E402

api_module(__name__)  # `from kd2edge import bench` is callable (kd2edge.api)
