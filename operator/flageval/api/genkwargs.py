"""gen_kwargs strings, parsed exactly as lm-evaluation-harness parses them, mapped to OpenAI request fields."""

from __future__ import annotations

from typing import Any


def _coerce(value: str) -> Any:
    # lm_eval.utils.handle_arg_string
    if value.lower() == "true":
        return True
    if value.lower() == "false":
        return False
    if value.isnumeric():
        return int(value)
    try:
        return float(value)
    except ValueError:
        return value


def parse_gen_kwargs(text: str) -> dict[str, Any]:
    """'temperature=0.6,max_gen_toks=16000' → {'temperature': 0.6, 'max_gen_toks': 16000}.

    Same rules as lm_eval.utils.simple_parse_args_string: comma-separated k=v pairs, values coerced
    (true/false, ints, floats; 'none' stays as the string lm-eval keeps, mapped to None here).
    """
    text = (text or "").strip()
    if not text:
        return {}
    out: dict[str, Any] = {}
    for pair in text.split(","):
        pair = pair.strip()
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"gen_kwargs: '{pair}' is not key=value")
        coerced = _coerce(value.strip())
        out[key] = None if isinstance(coerced, str) and coerced.lower() == "none" else coerced
    return out


def to_request_fields(gen_kwargs: dict[str, Any]) -> dict[str, Any]:
    """lm-eval names → OpenAI request fields: max_gen_toks→max_tokens, until→stop, do_sample dropped."""
    fields: dict[str, Any] = {}
    for key, value in gen_kwargs.items():
        if key == "do_sample":
            continue
        if key == "max_gen_toks":
            fields["max_tokens"] = value
        elif key == "until":
            fields["stop"] = value if isinstance(value, list) else [value]
        else:
            fields[key] = value
    return fields
