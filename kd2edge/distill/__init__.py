"""The distill stage: a teacher -> a compact student checkpoint + run folder.

config.py (every key, validated) -> stage.py (`distill()`: run folder, epochs) uses inputs.py (device, data,
teacher, student), loop.py (one epoch, optimizers), methods/ (one module per loss, registry METHODS),
schedules.py (T/alpha and LR schedules), teacher.py + teacher_cache.py + probe.py (teacher logits),
outputs.py (checkpoint, history, metrics, plots, summary).
"""
from kd2edge.distill.config import DEFAULTS, load_config_file, resolve_config
from kd2edge.distill.stage import distill

__all__ = ["DEFAULTS", "distill", "load_config_file", "resolve_config"]


from kd2edge import api_module  # noqa: E402

api_module(__name__)  # `from kd2edge import distill` is callable (kd2edge.api)
