"""One model service to evaluate, with the fields and defaults of FlagEval's Auto-Evaluation API."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_CHIP = "Nvidia-H100"
BASELINE_SUFFIX = "-nvidia-origin"
CHIP_PATTERN = r"^[A-Za-z][A-Za-z0-9]*-[A-Za-z0-9][A-Za-z0-9._-]*$"


def is_baseline_name(eval_model: str) -> bool:
    """An eval_model ending in '-nvidia-origin' marks an NVIDIA baseline run."""
    return eval_model.endswith(BASELINE_SUFFIX)


class ServiceNames:
    """What the names of a model service say: whether it is a baseline, what baselines match it on, its
    chip's vendor. Shared by EvalInfo and the Evaluation's evalInfos entries (which declare the fields)."""

    if TYPE_CHECKING:
        eval_model: str
        model: str
        base_model_name: str | None
        chip: str

    @property
    def is_baseline(self) -> bool:
        return is_baseline_name(self.eval_model)

    @property
    def baseline_key(self) -> str:
        """What baselines are matched on: base_model_name, else the served model name."""
        return self.base_model_name or self.model

    @property
    def chip_vendor(self) -> str:
        return self.chip.split("-", 1)[0].lower()


class EvalInfo(ServiceNames, BaseModel):
    """A model service (one chip) to evaluate; field names and defaults as FlagEval documents them."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    eval_model: str = Field(
        min_length=1,
        max_length=63,
        description="Unique run name; a name ending in '-nvidia-origin' marks an NVIDIA baseline.",
    )
    model: str = Field(min_length=1, description="Served model name sent in each request; runs of one model on one service share a response cache.")
    eval_url: str = Field(description="OpenAI-compatible endpoint, e.g. http://host:9010/v1/chat/completions or …/v1/completions.")
    tokenizer: str = Field(default="", description="Tokenizer name (e.g. Qwen/Qwen3-8B); informational, loglikelihood scoring uses the server's text offsets.")
    api_key: str = Field(default="EMPTY", description="Bearer token for the endpoint.", repr=False)
    batch_size: int = Field(default=1, ge=1, le=256, description="Prompts per call on completions endpoints.")
    num_concurrent: int = Field(default=1, ge=1, le=1024, description="Requests in flight at once.")
    num_retry: int = Field(default=10, ge=1, le=1000, description="Attempts per request before the sample is recorded as failed.")
    gen_kwargs: str = Field(default="", description="lm-evaluation-harness style generation arguments, 'k=v,k=v'.")
    thinking: bool = Field(default=False, description="Ask the server to think (chat_template_kwargs.enable_thinking); reasoning is never scored.")
    retry_time: float = Field(default=3600, gt=0, description="Seconds one sample may take across all its attempts.")
    chip: str = Field(default=DEFAULT_CHIP, pattern=CHIP_PATTERN, description="Accelerator as Vendor-ChipName, e.g. Nvidia-H100, Ascend-910B.")
    base_model_name: str = Field(default="", description="Model family the baselines are matched on (e.g. Qwen3-8B); defaults to model.")

    @field_validator("eval_url")
    @classmethod
    def _url_shape(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s:]+(:\d{1,5})?(/\S*)?$", value):
            raise ValueError("must be an http:// or https:// URL such as http://host:9010/v1/chat/completions")
        return value

    @field_validator("gen_kwargs")
    @classmethod
    def _gen_kwargs_parse(cls, value: str) -> str:
        from flageval.api.genkwargs import parse_gen_kwargs

        parse_gen_kwargs(value)  # raises ValueError naming the bad pair
        return value


def format_validation_error(error: ValidationError) -> str:
    """One line per problem: 'field.path: reason'."""
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "body"
        reason = item["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {reason}")
    return "; ".join(lines)
