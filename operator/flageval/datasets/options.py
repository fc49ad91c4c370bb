"""Which option a free-form reply chose, read without a judge model (PCA-EVAL's replies).

PCA-EVAL's published scores map each reply to an option with a GPT judge. This is a deterministic
parser instead, so its accuracy can differ from a judged one on replies a reader would interpret.
Two rules, both over the reply with reasoning removed (text after the first `</think>`; the content of
an `<answer>…</answer>` block when there is one, as RoboBrain-style models write):

lenient (`accuracy`), the first of these that finds something:
  declared  the last answer statement: a keyword (answer, option, choice, choose, select, pick; any
            case) then, after an optional "is / would be / should be / will be", ":" or a dash and markdown
            emphasis, a capital letter in brackets — "(B)", "[B]" — or alone, followed by the end of
            the line, by . ) ] : , ; ! * or by is / would / should / will — "The answer is (A)",
            "Answer: **B**", "I choose C.", "Option D is best" (not "Answer: A good step is…")
  bare      the whole reply is one letter, with brackets, emphasis and a final "." allowed ("a" too)
  leading   the first or last line starts with "(B)", "B.", "B)" or "B:" and a space (or ends there)
  text      the reply contains an option's own text (case and spacing ignored, final "." optional);
            options contained in a longer option found too are dropped; of those left, the one
            mentioned last
strict (`strict_accuracy`):
  bare, else declared when every answer statement names the same letter, else a last line that is
  exactly one option's text. Nothing else.

A letter past the last option is kept as extracted (the reply chose it) and scores wrong.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_LETTER_END = r"(?=[*_`]*\s*(?:$|[.)\]:,;!]|(?:is|would|should|will)\b))"
_DECLARED = re.compile(
    r"(?i:answer|option|choice|choose|select|pick)(?:\s+(?i:is|would\s+be|should\s+be|will\s+be))?"
    r"\s*[:：\-–]?[\s*_`]*(?:[(\[]([A-Z])[)\]]|([A-Z])" + _LETTER_END + ")",
    re.MULTILINE,
)
_BARE = re.compile(r"[*_`\s]*[(\[]?[*_`]*([A-Za-z])[*_`]*[)\]]?[*_`]*\.?[*_`\s]*")
_LEADING = re.compile(r"\s*[*_`]*(?:\(([A-Z])\)|([A-Z])[.):])(?:\s|$)")
_ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Choice:
    letter: str | None  # None: no rule found an option
    rule: str | None  # declared, bare, leading, text


def answer_part(reply: str) -> str:
    """The reply without reasoning: after the first </think>, inside <answer>…</answer> if present."""
    reply = reply.split("</think>", 1)[1] if "</think>" in reply else reply
    block = _ANSWER_BLOCK.findall(reply)
    return block[-1] if block else reply


def _normal(text: str) -> str:
    return _SPACES.sub(" ", text.lower()).strip().rstrip(".").strip()


def declared_letters(reply: str) -> list[str]:
    return [m.group(1) or m.group(2) for m in _DECLARED.finditer(reply)]


def bare_letter(reply: str) -> str | None:
    match = _BARE.fullmatch(reply)
    return match.group(1).upper() if match else None


def leading_letter(reply: str) -> str | None:
    lines = [line for line in reply.splitlines() if line.strip()]
    for line in (lines[:1] + lines[-1:]) if lines else []:
        match = _LEADING.match(line)
        if match:
            return match.group(1) or match.group(2)
    return None


def text_option(reply: str, options: Sequence[str]) -> int | None:
    """The option whose text the reply mentions (see the module docstring), or None."""
    said = _normal(reply)
    texts = [_normal(o) for o in options]
    found = {i: said.rfind(t) for i, t in enumerate(texts) if t and t in said}
    found = {i: at for i, at in found.items() if not any(j != i and texts[i] in texts[j] for j in found)}
    if not found:
        return None
    return max(found, key=lambda i: (found[i] + len(texts[i]), len(texts[i])))


def exact_option(reply: str, options: Sequence[str]) -> int | None:
    lines = [line for line in reply.splitlines() if line.strip()]
    if not lines:
        return None
    last = _normal(lines[-1].strip("*_` "))
    matches = [i for i, o in enumerate(options) if _normal(o) == last]
    return matches[0] if len(matches) == 1 else None


def lenient_choice(reply: str, options: Sequence[str]) -> Choice:
    answer = answer_part(reply)
    declared = declared_letters(answer)
    if declared:
        return Choice(declared[-1], "declared")
    for rule, found in (("bare", bare_letter(answer)), ("leading", leading_letter(answer))):
        if found:
            return Choice(found, rule)
    index = text_option(answer, options)
    return Choice(chr(ord("A") + index), "text") if index is not None else Choice(None, None)


def strict_choice(reply: str, options: Sequence[str]) -> Choice:
    answer = answer_part(reply)
    bare = bare_letter(answer)
    if bare:
        return Choice(bare, "bare")
    declared = set(declared_letters(answer))
    if declared:
        return Choice(declared.pop(), "declared") if len(declared) == 1 else Choice(None, None)
    index = exact_option(answer, options)
    return Choice(chr(ord("A") + index), "text") if index is not None else Choice(None, None)


__all__ = ["Choice", "answer_part", "bare_letter", "declared_letters", "exact_option", "leading_letter",
           "lenient_choice", "strict_choice", "text_option"]
