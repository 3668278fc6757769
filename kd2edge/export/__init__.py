"""The export stage: a checkpoint -> verified artifact folders, one module per target (onnx, tflite, coreml,
registered in targets.py), the CoreML numpy evaluator (mil_eval) and the verification (verify)."""
from kd2edge.export.stage import export, load_source, summary_rows
from kd2edge.export.verify import parity

__all__ = ["export", "load_source", "parity", "summary_rows"]


from kd2edge import api_module  # noqa: E402

api_module(__name__)  # `from kd2edge import export` is callable (kd2edge.api)
