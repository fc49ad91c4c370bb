"""The continuation's logprob and greediness read from the echoed tokens by bisection equal a read of
every token, for token boundaries on, inside and around the context's end, and offsets out of order."""

from __future__ import annotations

import random

from flageval.datasets.lmeval.task import loglikelihood
from flageval.datasets.mmlu import continuation_logprob
from flageval.engine.types import Reply


def every_token(logprobs: dict, context_chars: int, prompt_chars: int) -> tuple[float, bool]:
    total, greedy = 0.0, True
    tops = logprobs["top_logprobs"]
    for i, (token, logprob, start) in enumerate(zip(logprobs["tokens"], logprobs["token_logprobs"],
                                                    logprobs["text_offset"])):
        if start >= prompt_chars:
            break
        if start + len(token) > context_chars and logprob is not None:
            total += logprob
            if logprob < max(tops[i].values()):
                greedy = False
    return total, greedy


def echo(prompt: str, rng: random.Random, shuffled: bool) -> dict:
    tokens, offsets, at = [], [], 0
    while at < len(prompt):
        size = rng.randint(1, 4)
        tokens.append(prompt[at:at + size])
        offsets.append(at)
        at += size
    tokens.append("\n")
    offsets.append(len(prompt))
    if shuffled:
        offsets[1], offsets[2] = offsets[2], offsets[1]
    logprobs = [None] + [-rng.random() for _ in tokens[1:]]
    tops = [None] + [{t: lp + (0.1 if rng.random() < 0.05 else 0.0)} for t, lp in zip(tokens[1:], logprobs[1:])]
    return {"tokens": tokens, "token_logprobs": logprobs, "text_offset": offsets, "top_logprobs": tops}


def test_bisection_reads_what_a_read_of_every_token_reads():
    rng = random.Random(7)
    for case in range(400):
        context = "".join(rng.choice("ab c") for _ in range(rng.randint(1, 300)))
        continuation = "".join(rng.choice("xy z") for _ in range(rng.randint(1, 40)))
        logprobs = echo(context + continuation, rng, shuffled=case % 10 == 0)
        prompt_chars = len(context) + len(continuation)
        expected = every_token(logprobs, len(context), prompt_chars)
        total, greedy = loglikelihood(Reply(text="", logprobs=logprobs), context, continuation)
        assert (round(total, 9), greedy) == (round(expected[0], 9), expected[1])
        assert round(continuation_logprob(logprobs, len(context), prompt_chars), 9) == round(expected[0], 9)
