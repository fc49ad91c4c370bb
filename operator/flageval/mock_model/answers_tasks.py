"""The reference model's knowledge of lm-eval tasks: it builds each task's requests from the same task
files the evaluator uses and answers each document right exactly when `intends_correct` says so —
generated answers in the form the task's filters read, loglikelihood requests with the intended choice
the likely one (both by sum and per character, so acc and acc_norm agree)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flageval.mock_model.answerer import Answerer, intends_correct

LIKELY, UNLIKELY = -0.01, -60.0  # a continuation's total logprob: intended choice, every other
_TOKEN = re.compile(r"\s?\w+|\s?[^\w\s]|\s+")


def _fingerprint(value: Any) -> bytes:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    return hashlib.sha1(text.encode()).digest()


def task_names(spec: str) -> list[str]:
    """Comma-separated task names; an NLP suite name (built in or FLAGEVAL_SUITES') stands for its lm-eval tasks."""
    from flageval.datasets import DATASETS, suites

    named = suites("NLP")
    names: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if part in named:
            names += [n for n in named[part] if n not in DATASETS]
        elif part:
            names.append(part)
    return list(dict.fromkeys(names))


def sample_key(task: str, doc_id: int) -> str:
    return f"{task}:{doc_id}"


@dataclass(frozen=True)
class _Choice:
    key: str
    context_chars: int
    likely: bool


def _gold(task: Any, doc: dict) -> list[int]:
    """Indices of the right choices, as lm-eval's process_results reads them."""
    if "mc2_targets" in doc:  # truthfulqa_mc2: every true answer
        return [i for i, label in enumerate(doc["mc2_targets"]["labels"]) if label == 1]
    choices = task.doc_to_choice(doc)
    gold = task.doc_to_text(doc) if task.multiple_input else task.doc_to_target(doc)
    if isinstance(gold, str):
        gold = choices.index(gold) if gold in choices else 0
    return list(gold) if isinstance(gold, list) else [int(gold)]


def answer_text(task_name: str, target: str, right: bool) -> str:
    """A generated answer in the form the task's filters and process_results read."""
    shown = target if right else _wrong(target)
    if task_name.startswith("bbh_cot"):
        return f"Let's think step by step.\nEach option was checked in turn. So the answer is {shown}."
    if task_name.startswith(("minerva_math", "hendrycks_math")):
        return f"Solving it gives the result.\nFinal Answer: The final answer is {shown}. I hope it is correct."
    if task_name.startswith("aime"):
        return f"Working through the cases gives $\\boxed{{{shown}}}$."
    if task_name.startswith("gsm8k"):
        return f"Let me compute it step by step.\n#### {shown}"
    return shown


def _wrong(target: str) -> str:
    text = target.strip()
    if text.lstrip("-").isdigit():
        return str(int(text) + 1)
    options = {"True": "False", "False": "True", "Yes": "No", "No": "Yes", "valid": "invalid", "invalid": "valid"}
    if text in options:
        return options[text]
    letter = re.fullmatch(r"\(([A-R])\)", text)
    if letter:
        return f"({'B' if letter.group(1) == 'A' else 'A'})"
    return "no answer found"


class TaskAnswerer:
    """Answers the requests of the named lm-eval tasks (first `limit` documents of each); hands
    everything else to `fallback`."""

    def __init__(self, data_dir: Path, tasks: Sequence[str], accuracy: float = 0.8, seed: int = 0,
                 fallback: Answerer | None = None, limit: int | None = None,
                 include_paths: Sequence[Path] = ()):
        from flageval.datasets.base import DatasetError
        from flageval.datasets.lmeval import LMEvalTask

        self.accuracy, self.seed, self.fallback = accuracy, seed, fallback
        self.generated: dict[bytes, tuple[str, str]] = {}
        self.scored: dict[bytes, _Choice] = {}
        self.verdicts: dict[str, bool] = {}  # where the answer's rightness is its scorer's call, not ours
        self.keys: dict[str, list[tuple[int, str]]] = {}  # name → (doc id, sample key) of every document
        for name in tasks:
            for kind in ("chat", "completions"):
                try:
                    dataset = LMEvalTask(name, data_dir, limit, kind=kind, include_paths=include_paths,
                                         allow_code_execution=True)
                except DatasetError:
                    continue  # e.g. a loglikelihood task has no chat form
                keys = []
                for item in dataset.items(kind):
                    task_name, doc_id, doc, instances = item.meta
                    key = sample_key(task_name, doc_id)
                    keys.append((doc_id, key))
                    self._learn(dataset.tasks[task_name], task_name, doc, instances, item.bodies, key)
                self.keys[name] = keys

    def right(self, key: str) -> bool:
        return intends_correct(key, self.accuracy, self.seed)

    def _learn(self, task: Any, task_name: str, doc: dict, instances: list, bodies: list[dict], key: str) -> None:
        if instances[0].request_type == "generate_until":
            body = bodies[0]
            target = task.doc_to_target(doc)
            if task.config.doc_to_choice is not None and isinstance(target, int):
                target = task.doc_to_choice(doc)[target]
            if task_name.startswith("humaneval"):
                text = doc["canonical_solution"] if self.right(key) else "    raise NotImplementedError\n"
            elif task_name.startswith("ifeval"):
                text = ifeval_reply(doc) if self.right(key) else "No, I WILL NOT."
                # whether the reply follows every instruction is IFEval's own checkers' call
                self.verdicts[key] = bool(task.process_results(doc, [text])["prompt_level_strict_acc"])
            else:
                text = self.write(task_name, doc, str(target[0] if isinstance(target, list) else target), self.right(key))
            self.generated[_fingerprint(body.get("messages") or body.get("prompt"))] = (key, text)
            return
        gold = _gold(task, doc)
        right = self.right(key)
        n = len(instances)
        likely = set(gold) if right else ({i for i in range(n) if i not in gold} or {(gold[0] + 1) % n})
        if not right and "mc2_targets" not in doc:
            likely = {min(likely)}
        for i, (instance, body) in enumerate(zip(instances, bodies)):
            self.scored[_fingerprint(body["prompt"])] = _Choice(key, len(instance.args[0]), i in likely)

    def write(self, task_name: str, doc: dict, target: str, right: bool) -> str:
        return answer_text(task_name, target, right)

    def intended(self, name: str, limit: int | None = None) -> float:
        """Percent of the task's (or group's) first `limit` documents per task the model means to answer right."""
        keys = [key for doc_id, key in self.keys[name] if limit is None or doc_id < limit]
        return round(100.0 * sum(self.verdicts.get(k, self.right(k)) for k in keys) / len(keys), 2)

    # -- Answerer -----------------------------------------------------------------------------------

    def chat(self, messages: list[dict[str, Any]], body: dict[str, Any]) -> tuple[str, str]:
        found = self.generated.get(_fingerprint(messages))
        if found:
            return found
        if self.fallback is not None:
            return self.fallback.chat(messages, body)
        return "unknown", "I do not know."

    def completion(self, prompt: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if body.get("echo"):
            choice = self.scored.get(_fingerprint(prompt))
            if choice is not None:
                return choice.key, _echo(prompt, choice)
        else:
            found = self.generated.get(_fingerprint(prompt))
            if found:
                return found[0], {"text": found[1], "finish_reason": "stop", "logprobs": None}
        if self.fallback is not None:
            return self.fallback.completion(prompt, body)
        return "unknown", {"text": "I do not know.", "finish_reason": "stop", "logprobs": None}


def _echo(prompt: str, choice: _Choice) -> dict[str, Any]:
    """The echoed prompt's tokens with logprobs: context tokens -0.5 each; the continuation's tokens share
    LIKELY or UNLIKELY; each token's top alternative is itself when likely (so is_greedy holds)."""
    context, continuation = prompt[:choice.context_chars], prompt[choice.context_chars:]
    context_tokens = _TOKEN.findall(context)
    continuation_tokens = _TOKEN.findall(continuation) or [continuation]
    share = (LIKELY if choice.likely else UNLIKELY) / len(continuation_tokens)
    tokens = context_tokens + continuation_tokens + ["\n"]
    logprobs: list[float | None] = [-0.5] * len(context_tokens) + [share] * len(continuation_tokens) + [-1.0]
    if logprobs:
        logprobs[0] = None
    tops: list[dict[str, float] | None] = [None]
    for token, logprob in zip(tokens[1:], logprobs[1:]):
        tops.append({token: logprob} if choice.likely or logprob != share else {token: logprob, " ": -0.001})
    offsets, at = [], 0
    for token in tokens:
        offsets.append(at)
        at += len(token)
    return {"text": prompt + "\n", "finish_reason": "length",
            "logprobs": {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets}}


# -- IFEval --------------------------------------------------------------------------------------------

_FILLER = ["we", "walk", "along", "the", "quiet", "river", "every", "morning", "and", "listen", "to", "simple",
           "music", "from", "an", "open", "window", "near", "our", "small", "house", "in", "town"]
_LANGUAGE_TEXT = {
    "de": "Das ist eine einfache Antwort auf die Frage und sie ist auf Deutsch geschrieben.",
    "fr": "Ceci est une réponse simple à la question et elle est écrite en français.",
    "es": "Esta es una respuesta sencilla a la pregunta y está escrita en español.",
    "it": "Questa è una risposta semplice alla domanda ed è scritta in italiano.",
    "pt": "Esta é uma resposta simples para a pergunta e está escrita em português.",
    "ru": "Это простой ответ на вопрос, и он написан на русском языке.",
    "hi": "यह प्रश्न का एक सरल उत्तर है और यह हिंदी में लिखा गया है।",
    "ar": "هذه إجابة بسيطة على السؤال وهي مكتوبة باللغة العربية.",
    "ja": "これは質問に対する簡単な答えで、日本語で書かれています。",
    "ko": "이것은 질문에 대한 간단한 대답이며 한국어로 작성되었습니다.",
    "zh-cn": "这是对这个问题的简单回答，它是用中文写的。",
    "fa": "این یک پاسخ ساده به این سوال است و به زبان فارسی نوشته شده است.",
    "sw": "Hili ni jibu rahisi kwa swali hili na limeandikwa kwa Kiswahili.",
    "fi": "Tämä on yksinkertainen vastaus kysymykseen ja se on kirjoitettu suomeksi.",
    "vi": "Đây là một câu trả lời đơn giản cho câu hỏi và nó được viết bằng tiếng Việt.",
    "th": "นี่คือคำตอบง่ายๆ สำหรับคำถามนี้และเขียนเป็นภาษาไทย",
    "bn": "এটি প্রশ্নের একটি সহজ উত্তর এবং এটি বাংলায় লেখা হয়েছে।",
    "ur": "یہ سوال کا ایک آسان جواب ہے اور یہ اردو میں لکھا گیا ہے۔",
    "ta": "இது கேள்விக்கு ஒரு எளிய பதில் மற்றும் இது தமிழில் எழுதப்பட்டுள்ளது.",
    "te": "ఇది ప్రశ్నకు ఒక సాధారణ సమాధానం మరియు ఇది తెలుగులో వ్రాయబడింది.",
    "mr": "हे प्रश्नाचे एक सोपे उत्तर आहे आणि ते मराठीत लिहिले आहे.",
    "gu": "આ પ્રશ્નનો એક સરળ જવાબ છે અને તે ગુજરાતીમાં લખાયેલ છે.",
    "kn": "ಇದು ಪ್ರಶ್ನೆಗೆ ಒಂದು ಸರಳ ಉತ್ತರ ಮತ್ತು ಇದನ್ನು ಕನ್ನಡದಲ್ಲಿ ಬರೆಯಲಾಗಿದೆ.",
    "pa": "ਇਹ ਸਵਾਲ ਦਾ ਇੱਕ ਸਧਾਰਨ ਜਵਾਬ ਹੈ ਅਤੇ ਇਹ ਪੰਜਾਬੀ ਵਿੱਚ ਲਿਖਿਆ ਗਿਆ ਹੈ।",
    "ne": "यो प्रश्नको एक सरल उत्तर हो र यो नेपालीमा लेखिएको छ।",
    "bg": "Това е прост отговор на въпроса и е написан на български език.",
}


def ifeval_reply(doc: dict) -> str:
    """A reply that means to follow every instruction of an IFEval prompt (the scorer decides if it does)."""
    specs = {i: {k: v for k, v in (kw or {}).items() if v is not None}
             for i, kw in zip(doc["instruction_id_list"], doc["kwargs"])}
    forbidden = {w.lower() for w in specs.get("keywords:forbidden_words", {}).get("forbidden_words", [])}
    letter_rule = specs.get("keywords:letter_frequency", {})
    avoid = letter_rule.get("letter", "").lower() if letter_rule.get("let_relation") == "less than" else ""
    words = [w for w in _FILLER if w not in forbidden and (not avoid or avoid not in w)] or ["ok"]
    n_words = 12
    rule = specs.get("length_constraints:number_words")
    if rule:
        n_words = rule["num_words"] + 20 if rule["relation"] == "at least" else max(1, min(n_words, rule["num_words"] // 3))
    n_sent = 3
    rule = specs.get("length_constraints:number_sentences")
    if rule:
        n_sent = rule["num_sentences"] + 1 if rule["relation"] == "at least" else max(1, rule["num_sentences"] - 1)
    language = specs.get("language:response_language", {}).get("language")
    per_sentence = max(1, n_words // n_sent)

    def sentence(i: int) -> str:
        if language in _LANGUAGE_TEXT:
            return _LANGUAGE_TEXT[language]
        chosen = [words[(i + j) % len(words)] for j in range(per_sentence)]
        return " ".join(chosen).capitalize() + "."

    extra: list[str] = []
    for keyword in specs.get("keywords:existence", {}).get("keywords", []):
        extra.append(f"It mentions {keyword}.")
    rule = specs.get("keywords:frequency")
    if rule and rule.get("relation") != "less than":
        extra += [f"Again {rule['keyword']}." for _ in range(rule["frequency"])]
    if letter_rule and letter_rule.get("let_relation") != "less than":
        extra.append((letter_rule["letter"] * letter_rule["let_frequency"]) + ".")
    rule = specs.get("detectable_format:number_highlighted_sections")
    if rule:
        extra += [f"See *part {i + 1}* here." for i in range(rule["num_highlights"])]
    rule = specs.get("detectable_content:number_placeholders")
    if rule:
        extra += [f"Ask [item{i}]." for i in range(rule["num_placeholders"])]
    if "detectable_format:constrained_response" in specs:
        extra = ["My answer is yes."]
    rule = specs.get("change_case:capital_word_frequency")
    if rule and rule.get("capital_relation") != "less than":
        extra.append(" ".join(["NOTE"] * rule["capital_frequency"]) + ".")

    body_sentences = [sentence(i) for i in range(n_sent)]
    budget = n_sent if "length_constraints:number_sentences" in specs else None
    if budget is not None and extra:  # fold the extras into the counted sentences
        body_sentences[-1] = body_sentences[-1].rstrip(".") + " " + " ".join(e.rstrip(".") for e in extra) + "."
    else:
        body_sentences += extra
    paragraphs = 1
    rule = specs.get("length_constraints:number_paragraphs") or specs.get("length_constraints:nth_paragraph_first_word")
    if rule:
        paragraphs = rule["num_paragraphs"]
    chunks = [body_sentences[i::paragraphs] for i in range(paragraphs)]
    chunks = [c or [sentence(0)] for c in chunks]
    first = specs.get("length_constraints:nth_paragraph_first_word")
    texts = [" ".join(c) for c in chunks]
    if first:
        nth = first["nth_paragraph"] - 1
        if 0 <= nth < len(texts):
            texts[nth] = f"{first['first_word']} " + texts[nth]
    separator = "\n\n" if first else "\n***\n"
    text = separator.join(texts)
    rule = specs.get("detectable_format:multiple_sections")
    if rule:
        text = "\n".join(f"{rule['section_spliter']} {i + 1}\n{text}" for i in range(rule["num_sections"]))
    rule = specs.get("detectable_format:number_bullet_lists")
    if rule:
        text += "\n" + "\n".join(f"* point {i + 1}" for i in range(rule["num_bullets"]))
    if "detectable_format:title" in specs:
        text = "<<a short title>>\n" + text
    rule = specs.get("detectable_content:postscript")
    if rule:
        text += f"\n{rule['postscript_marker']} that is all"
    if "change_case:english_lowercase" in specs:
        text = text.lower()
    if "change_case:english_capital" in specs:
        text = text.upper()
    if "punctuation:no_comma" in specs:
        text = text.replace(",", "")
    if "detectable_format:json_format" in specs:
        text = json.dumps({"answer": text})
    rule = specs.get("startend:end_checker")
    if rule:
        text = text.rstrip() + "\n" + rule["end_phrase"]
    if "startend:quotation" in specs:
        text = f'"{text}"'
    rule = specs.get("combination:repeat_prompt")
    if rule:
        text = rule["prompt_to_repeat"] + "\n" + text
    if "combination:two_responses" in specs:
        text = text + "\n******\n" + text.replace("river", "lake").replace("stone", "pebble") + " Also."
    return text
