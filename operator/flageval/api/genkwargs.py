"""gen_kwargs strings, parsed exactly as lm-evaluation-harness 0.4.13 parses them, mapped to OpenAI request fields."""

from __future__ import annotations

from typing import Any


def coerce_value(arg: str) -> Any:
    """One value string → bool, None, int, float or str, as lm_eval.utils.handle_arg_string does."""
    arg = arg.strip()
    # Matching quotes keep a value a string ("123" stays "123").
    if len(arg) >= 2 and arg[0] == arg[-1] and arg[0] in ("'", '"'):
        return arg[1:-1]
    lower = arg.lower()
    if lower == "true":
        return True
    if lower == "false":
        return False
    if lower == "none":
        return None
    if arg.lstrip("+-").isdigit() and arg not in ("", "+", "-"):
        try:
            return int(arg)
        except ValueError:  # e.g. "+-1", or digits int() rejects such as superscripts
            pass
    try:
        return float(arg)
    except ValueError:
        return arg


def parse_gen_kwargs(text: str | None) -> dict[str, Any]:
    """'temperature=0.6,max_gen_toks=16000' → {'temperature': 0.6, 'max_gen_toks': 16000}.

    Same result as lm_eval.utils.simple_parse_args_string for well-formed input: comma-separated
    k=v pairs (empty pieces skipped, a later key wins, a value may contain '='), values coerced by
    `coerce_value`. Two differences, both for input lm-eval would turn into fields no server accepts:
    a piece without '=' (or with an empty key) raises ValueError naming it, and whitespace around a
    key is dropped.
    """
    if text is None:
        return {}
    text = text.strip()
    if not text:
        return {}
    out: dict[str, Any] = {}
    for pair in text.split(","):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"gen_kwargs: '{pair.strip()}' is not key=value")
        out[key] = coerce_value(value)
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
