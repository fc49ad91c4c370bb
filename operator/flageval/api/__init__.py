"""Pydantic types shared by every layer: the single source of truth for the CRD and OpenAPI schemas."""

from flageval.api.evalinfo import DEFAULT_CHIP, EvalInfo, format_validation_error
from flageval.api.results import DatasetResult, Progress, SampleRecord, Status

__all__ = [
    "DEFAULT_CHIP",
    "DatasetResult",
    "EvalInfo",
    "Progress",
    "SampleRecord",
    "Status",
    "format_validation_error",
]
