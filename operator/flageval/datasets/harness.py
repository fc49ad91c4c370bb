"""lm-evaluation-harness 0.4.13 semantics the NLP datasets share: filters, exact_match, stop handling.

Each function mirrors a named piece of lm-eval so a sample scores here exactly as it scores there.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

FALLBACK = "[invalid]"  # lm_eval.filters.extraction.RegexFilter's default fallback
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def regex_filter(text: str, pattern: re.Pattern[str], group_select: int = 0) -> str:
    """RegexFilter.apply for one response (then take_first)."""
    matches = pattern.findall(text if isinstance(text, str) else "")
    if not matches:
        return FALLBACK
    match = matches[group_select]
    if isinstance(match, tuple):
        groups = [m for m in match if m]
        match = groups[0] if groups else FALLBACK
    return match.strip()


def exact_match(
    prediction: str,
    reference: str,
    *,
    regexes_to_ignore: Sequence[str] = (),
    ignore_case: bool = False,
    ignore_punctuation: bool = False,
) -> float:
    """lm_eval.api.metrics.exact_match_hf_evaluate for one pair."""
    for pattern in regexes_to_ignore:
        prediction = re.sub(pattern, "", prediction)
        reference = re.sub(pattern, "", reference)
    if ignore_case:
        prediction, reference = prediction.lower(), reference.lower()
    if ignore_punctuation:
        prediction, reference = prediction.translate(_PUNCTUATION), reference.translate(_PUNCTUATION)
    # numpy's fixed-width strings (which lm-eval compares) drop trailing NULs; so do we.
    return float(prediction.rstrip("\0") == reference.rstrip("\0"))


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """postprocess_generated_text: a chat answer is cut at the first occurrence of each stop sequence."""
    for term in stop:
        if term:
            text = text.split(term)[0]
    return text


def mean_percent(values: Sequence[float]) -> float:
    return round(100.0 * sum(values) / len(values), 2) if values else 0.0
