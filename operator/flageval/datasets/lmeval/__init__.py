"""lm-evaluation-harness tasks on our engine: any task, group or tag by name, data from local files."""

from flageval.datasets.lmeval.task import LMEvalTask, known

__all__ = ["LMEvalTask", "known"]
