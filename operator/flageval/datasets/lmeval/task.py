"""Any lm-evaluation-harness 0.4.13 task or group, run by our engine.

lm-eval builds each document's requests (prompt, few-shot examples from its sampler and seed, chat
messages as `--apply_chat_template` with few-shot as multi-turn builds them) and scores them (its
filters, `process_results`, aggregations, group aggregation with stderr); the engine sends, retries,
journals and caches. Requests are built lazily, document by document, in lm-eval's order, so the
few-shot sampler draws exactly what it draws in lm-eval and the first request leaves at once.

Loglikelihood requests go to completions endpoints with `echo` and `logprobs` (as the native MMLU
does): the continuation's logprob is summed over the echoed tokens that lie after the context, by
text offset — no tokenizer needed.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from flageval.api import SampleRecord
from flageval.datasets.base import DatasetError
from flageval.datasets.lmeval.index import is_builtin, registry, scan
from flageval.datasets.lmeval.offline import built, local_data
from flageval.datasets.mmlu import continuation_logprob, first_continuation_token
from flageval.engine.types import EndpointKind, Reply, WorkItem

FEWSHOT_SEED = 1234  # lm-eval's default --fewshot_random_seed
REQUEST_SEED = 1234  # the `seed` lm-eval's API models put in every request
MAX_GEN_TOKS = 256  # lm-eval API models' default max_gen_toks
CHAT_MAX_STOP = 4  # local-chat-completions sends at most four stop sequences
BOOTSTRAP_ITERS = 100000  # lm-eval's default, for stderr of non-mean aggregations
LOGLIKELIHOOD_TYPES = ("loglikelihood", "multiple_choice")

# The figure a benchmark is known by, where it is not lm-eval's first metric (keyed by task or group).
PRIMARY_METRIC = {
    "arc_challenge": "acc_norm,none",
    "arc_easy": "acc_norm,none",
    "hellaswag": "acc_norm,none",
}
# Metrics lm-eval reports on their own scale; every other is a fraction, reported here in percent.
_NOT_FRACTIONS = ("perplexity", "bits_per_byte", "bleu", "ter", "chrf", "rouge")


def known(name: str, include_paths: Sequence[Path] = ()) -> bool:
    """Whether `name` is an lm-eval task, group or tag (built in or on an include path)."""
    if is_builtin(name):
        return True
    return bool(include_paths) and name in registry(tuple(Path(p) for p in include_paths))


class ChatContext(str):
    """The JSON text lm-eval's context is, keeping the messages it was made of (not parsed back per request)."""

    messages: list[dict]


def chat_template(messages: list[dict], add_generation_prompt: bool = True) -> str:
    """What lm-eval's API models return without a tokenizer: the messages as JSON, sent as they are."""
    context = ChatContext(orjson.dumps(messages).decode())
    context.messages = messages
    return context


RENDERED_KEPT = 8192  # renderings remembered; a task's few-shot examples are rendered for every document


def _compile_templates_once() -> None:
    """lm-eval compiles a task's Jinja template anew for every document (≈ 2 ms each, most of the time it
    takes to build a prompt); rendering the same compiled template gives the same text. A rendering is also
    remembered for the document object it rendered (held, so its id is not reused): the few-shot examples,
    the same objects for every document, and a document's target, read again when it is scored."""
    from lm_eval import utils

    if getattr(utils.apply_template, "compiled_once", False):
        return
    compile_template = lru_cache(maxsize=1024)(utils.env.from_string)
    rendered: dict[tuple[str, int], tuple[dict, str]] = {}

    def apply_template(template: str, doc: dict) -> str:
        key = (template, id(doc))
        known = rendered.get(key)
        if known is not None and known[0] is doc:
            return known[1]
        text = compile_template(template).render(**doc)
        if len(rendered) >= RENDERED_KEPT:
            rendered.clear()
        rendered[key] = (doc, text)
        return text

    apply_template.compiled_once = True  # type: ignore[attr-defined]
    utils.apply_template = apply_template


def _code_eval_in_sandbox() -> None:
    """lm-eval's code tasks load Hugging Face's `code_eval` metric from a hub when their module is
    imported; ours runs the same checks, each program in the sandbox."""
    import evaluate

    if getattr(evaluate.load, "sandboxed_code_eval", False):
        return
    from flageval.datasets.lmeval.sandbox import CodeEval

    hub_load = evaluate.load

    def load(path: str, *args: Any, **kwargs: Any) -> Any:
        return CodeEval() if path == "code_eval" else hub_load(path, *args, **kwargs)

    load.sandboxed_code_eval = True  # type: ignore[attr-defined]
    evaluate.load = load


def task_manager(include_paths: Sequence[Path] = ()) -> Any:
    """lm-eval's TaskManager over the shipped index (and the include paths), without its scan of every file."""
    from lm_eval.tasks._factory import TaskFactory
    from lm_eval.tasks.manager import TaskManager

    _compile_templates_once()
    manager = TaskManager.__new__(TaskManager)
    manager.include_path, manager.metadata = list(include_paths) or None, None
    manager._factory = TaskFactory(meta=None)
    manager._index = registry(tuple(Path(p) for p in include_paths))
    return manager


def load(name: str, data_dir: Path, include_paths: Sequence[Path] = ()) -> tuple[dict, dict]:
    """lm-eval's TaskManager.load for one name, over our index and local data → (tasks, groups)."""
    manager = task_manager(include_paths)
    entry = manager._index.get(name)
    if entry is None:
        problems = scan(tuple(Path(p) for p in include_paths))[1] if include_paths else ()
        unreadable = f"; task files that could not be read: {'; '.join(problems)}" if problems else ""
        raise DatasetError(f"unknown dataset '{name}' (neither a native dataset nor an lm-eval task, group or tag)"
                           + unreadable)
    if include_paths or entry.kind.name != "TASK" or "ifeval" in str(entry.yaml_path):
        from flageval.datasets.lmeval.nltk_data import ensure_punkt_tab

        ensure_punkt_tab()  # IFEval's checkers split sentences with NLTK's punkt: from a package, not a download
    if include_paths or any(word in str(entry.yaml_path) for word in ("humaneval", "mbpp")):
        _code_eval_in_sandbox()
    with local_data(data_dir):
        try:
            loaded = manager.load([name])
        except DatasetError:
            raise
        except Exception as exc:  # noqa: BLE001 - a task's own config or code failing is that dataset's error
            raise DatasetError(f"{name}: lm-eval could not build the task from {entry.yaml_path or 'its config'}: "
                               f"{_describe(exc)}") from None
    for task in loaded["tasks"].values():
        built(task)
    return loaded["tasks"], loaded.get("groups", {})


def _describe(exc: BaseException) -> str:
    """One line: the error, and for a Jinja template the line within the template."""
    text = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    lineno = getattr(exc, "lineno", None)
    if lineno and type(exc).__module__.startswith("jinja2"):
        text += f" (template line {lineno})"
    return text


def body_for(instance: Any, kind: EndpointKind) -> dict[str, Any]:
    """The request lm-eval's local-(chat-)completions model sends for one Instance (without `model`)."""
    if instance.request_type == "generate_until":
        context, gen_kwargs = instance.args[0], dict(instance.args[1])  # its values are read, never changed
        gen_kwargs.pop("do_sample", None)
        max_tokens = gen_kwargs.pop("max_tokens") if "max_tokens" in gen_kwargs else gen_kwargs.pop("max_gen_toks", MAX_GEN_TOKS)
        temperature = gen_kwargs.pop("temperature", 0)
        until = gen_kwargs.pop("until", None)
        stop = [until] if isinstance(until, str) else list(until or [])
        body = {"max_tokens": max_tokens, "temperature": temperature, "stop": stop, "seed": REQUEST_SEED, **gen_kwargs}
        if kind == "chat":
            messages = context.messages if isinstance(context, ChatContext) else json.loads(context)
            return {"messages": messages, **body, "stop": stop[:CHAT_MAX_STOP]}
        return {"prompt": context, **body}
    context, continuation = instance.args[0], instance.args[1]
    return {"prompt": context + continuation, "max_tokens": 1, "temperature": 0, "logprobs": 1, "echo": True,
            "seed": REQUEST_SEED}


def loglikelihood(reply: Reply, context: str, continuation: str) -> tuple[float, bool]:
    """(sum of the continuation's logprobs, whether each of its tokens was the most likely one)."""
    logprobs = reply.logprobs
    if not logprobs or "token_logprobs" not in logprobs:
        raise ValueError("the completions answer carries no logprobs (the server must support echo with logprobs)")
    prompt_chars = len(context) + len(continuation)
    total = continuation_logprob(logprobs, len(context), prompt_chars)
    greedy = True
    tokens, token_logprobs, offsets = logprobs["tokens"], logprobs["token_logprobs"], logprobs["text_offset"]
    tops = logprobs.get("top_logprobs") or []
    for i in range(first_continuation_token(offsets, len(context)), len(tokens)):
        start, logprob = offsets[i], token_logprobs[i]
        if start >= prompt_chars:
            break
        if start + len(tokens[i]) > len(context) and logprob is not None:
            top = tops[i] if i < len(tops) else None
            if not top or logprob < max(top.values()):
                greedy = False
                break
    return total, greedy


DOCS_BATCH = 256


def _rows(docs: Any) -> Iterator[dict]:
    """The documents as iterating them gives them; a Dataset's are read a batch at a time (one Arrow slice
    made Python per batch, not per row: the same values, as neither decodes a feature here)."""
    import datasets
    from datasets.features.features import require_decoding

    if (not isinstance(docs, datasets.Dataset) or docs.format["type"] is not None
            or any(require_decoding(feature) for feature in docs.features.values())):
        yield from docs
        return
    for batch in docs.iter(batch_size=DOCS_BATCH):
        keys = list(batch)
        for values in zip(*batch.values()):
            yield dict(zip(keys, values))


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    return str(value)


def _scalar(value: Any) -> float | None:
    if isinstance(value, bool) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return float(value)
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return float(value.item())
    return None


class LMEvalTask:
    """One lm-eval task, group or tag as a dataset: its documents' requests in, lm-eval's metrics out."""

    domain = "NLP"

    def __init__(self, name: str, data_dir: Path, limit: int | None = None, *, mode: str | None = None,
                 kind: EndpointKind = "chat", include_paths: Sequence[Path] = (), allow_code_execution: bool = False):
        if mode not in (None, "lm-eval"):
            raise DatasetError(f"{name} is an lm-eval task: it has no mode '{mode}'")
        self.name, self.kind = name, kind
        self.tasks, self.groups = load(name, Path(data_dir), include_paths)
        self.limit = limit
        self.counts: dict[str, int] = {}
        for task_name, task in self.tasks.items():
            self._check(task_name, task, kind, allow_code_execution)
            if task.get_config("num_fewshot") is None:
                task.set_config("num_fewshot", 0)
            task.set_fewshot_seed(seed=FEWSHOT_SEED)
            count = len(task.task_docs)
            self.counts[task_name] = count if limit is None else min(count, limit)
        self.single = len(self.tasks) == 1 and not self.groups
        self.primary = self._primary_metric()

    @staticmethod
    def _check(task_name: str, task: Any, kind: EndpointKind, allow_code_execution: bool) -> None:
        output_type = task.OUTPUT_TYPE
        if output_type in LOGLIKELIHOOD_TYPES and kind == "chat":
            raise DatasetError(f"{task_name} scores answers by loglikelihood ({output_type}): it needs a completions "
                               "endpoint (…/v1/completions) with echo and logprobs; a chat endpoint gives no prompt logprobs")
        if output_type not in LOGLIKELIHOOD_TYPES + ("generate_until",):
            raise DatasetError(f"{task_name}: output type {output_type} is not supported (it needs the model's tokenizer)")
        if getattr(task, "MULTIMODAL", False):
            raise DatasetError(f"{task_name} is multimodal: not supported for lm-eval tasks")
        if (task.get_config("repeats") or 1) != 1:
            raise DatasetError(f"{task_name} asks for {task.get_config('repeats')} answers per question (repeats): not supported")
        if getattr(task, "UNSAFE_CODE", False) and not allow_code_execution:
            raise DatasetError(f"{task_name} runs the model's code: allow it with --allow-code-execution "
                               "(spec.allowCodeExecution); it then runs in a sandbox")

    def _primary_metric(self) -> str:
        """"metric,filter" of the headline figure: a named one, the group's first aggregate, else the first
        task's first metric on its first filter."""
        if self.name in PRIMARY_METRIC:
            return PRIMARY_METRIC[self.name]
        group = self.groups.get(self.name)
        if group is not None and group.aggregate_metric_list:
            first = group.aggregate_metric_list[0]
            filters = first.filter_list or ["none"]
            return f"{first.metric},{filters[0]}"
        task = next(iter(self.tasks.values()))
        metric = next(iter(task._metric_fn_list), "acc")
        first = (task.config.metric_list or [{}])[0]
        if callable(first.get("metric")) and first.get("k"):  # code tasks: pass_at_k reports pass@k
            k = first["k"]
            metric = f"pass@{k[0] if isinstance(k, list) else k}"
        return f"{metric},{task._filters[0].name}"

    def total(self) -> int:
        return sum(self.counts.values())

    def documents(self, task_name: str) -> Iterator[tuple[int, Any]]:
        """(doc id, document) of a task, in lm-eval's order, read as they are needed."""
        # task_docs: the documents lm-eval's doc_iterator walks, already processed when the task was built
        return islice(enumerate(_rows(self.tasks[task_name].task_docs)), self.limit)

    def items(self, kind: EndpointKind) -> Iterator[WorkItem]:
        chat = kind == "chat"
        index = 0
        for task_name, task in self.tasks.items():
            repeats = task.get_config("repeats") or 1
            for doc_id, doc in self.documents(task_name):
                # Build every document's context, even one the journal already holds: the sampler's draws
                # follow the document order.
                sample_id = f"{self.name}/{doc_id}" if self.single else f"{self.name}/{task_name}/{doc_id}"
                try:
                    context = task.fewshot_context(
                        doc, num_fewshot=task.get_config("num_fewshot"), system_instruction=None,
                        apply_chat_template=chat, fewshot_as_multiturn=chat,
                        chat_template=chat_template if chat else None, gen_prefix=task.doc_to_prefix(doc))
                    instances = task.construct_requests(doc=doc, ctx=context, metadata=(task_name, doc_id, repeats),
                                                        apply_chat_template=chat,
                                                        chat_template=chat_template if chat else None)
                    if not isinstance(instances, list):
                        instances = [instances]
                    bodies = [body_for(i, kind) for i in instances]
                except Exception as exc:  # noqa: BLE001 - a document its templates cannot render fails alone
                    problem = f"{task_name} document {doc_id}: the prompt could not be built: {_describe(exc)}"
                    yield WorkItem(id=sample_id, index=index, bodies=[], meta=(task_name, doc_id, doc, problem))
                else:
                    yield WorkItem(id=sample_id, index=index, bodies=bodies, meta=(task_name, doc_id, doc, instances))
                index += 1

    def score(self, item: WorkItem, replies: list[Reply]) -> SampleRecord:
        task_name, _, doc, instances = item.meta
        problem = instances if isinstance(instances, str) else None
        if problem:  # the document's prompt could not be built: nothing was sent
            raise ValueError(problem)
        task = self.tasks[task_name]
        for instance, reply in zip(instances, replies):
            if instance.request_type == "generate_until":
                instance.resps = [reply.text]
            else:
                instance.resps = [loglikelihood(reply, instance.args[0], instance.args[1])]
            instance.filtered_resps = {}
        for ensemble in task._filters:
            ensemble.apply(instances)
        scores: dict[str, float] = {}
        values: dict[str, Any] = {}
        extracted: dict[str, Any] = {}
        for filter_key in instances[0].filtered_resps:
            filtered = [i.filtered_resps[filter_key] for i in instances]
            if instances[0].request_type == "generate_until":
                extracted[filter_key] = _jsonable(filtered[0])
            for metric, value in task.process_results(doc, filtered).items():
                key = f"{metric},{filter_key}"
                number = _scalar(value)
                if number is None:
                    values[key] = _jsonable(value)
                else:
                    scores[key] = number
        if self.primary in scores:  # the headline's per-sample verdict comes first
            scores = {self.primary: scores[self.primary], **scores}
        first = instances[0]
        if first.request_type == "generate_until":
            prompt, response = item.bodies[0].get("messages") or item.bodies[0].get("prompt"), replies[0].text
        else:
            prompt, response = first.args[0], [round(i.resps[0][0], 6) for i in instances]
        return SampleRecord(
            id=item.id, index=item.index, prompt=prompt, response=response, extracted=extracted or None,
            target=_jsonable(task.doc_to_target(doc)), scores=scores, values=values or None, group=task_name,
        )

    def results(self, records: Iterable[SampleRecord]) -> dict[str, dict[str, Any]]:
        """lm-eval's own results table ({task or group: {"metric,filter": value, …}}) from the records."""
        from lm_eval.evaluator_utils import _process_results

        raw: dict[str, dict] = {name: defaultdict(list) for name in self.tasks}
        for record in sorted(records, key=lambda r: r.index):
            metrics = raw[record.group]
            for key, value in {**record.scores, **(record.values or {})}.items():
                metric, _, filter_key = key.rpartition(",")
                metrics[(metric, filter_key)].append(value)
        accumulated = {name: {"task": self.tasks[name], "raw_metrics": metrics, "logged_samples": []}
                       for name, metrics in raw.items() if metrics}
        groups = {name: group for name, group in self.groups.items()
                  if all(t.task_name in accumulated for t in group.get_all_tasks())}
        return _process_results(accumulated, groups, BOOTSTRAP_ITERS)._to_eval_results()["results"]

    def aggregate(self, records: Iterable[SampleRecord]) -> dict[str, float]:
        records = list(records)
        table = self.results(records)
        metrics: dict[str, float] = {}
        top = table.get(self.name)
        for name, row in table.items():
            prefix = "" if name == self.name or self.single else f"{name}/"
            for key, value in row.items():
                if "," not in key or not isinstance(value, (int, float)) or isinstance(value, bool):
                    continue
                if isinstance(value, float) and math.isnan(value):
                    continue
                percent = not any(word in key for word in _NOT_FRACTIONS)
                metrics[prefix + key] = round(100.0 * value if percent else float(value), 4)
        if top is not None and isinstance(top.get(self.primary), (int, float)):
            headline = metrics[self.primary]
        else:  # a tag, or a group without an aggregate of its own: the mean over every sample
            values = [r.scores[self.primary] for r in records if self.primary in r.scores]
            headline = round(100.0 * sum(values) / len(values), 4) if values else 0.0
        metrics["accuracy"] = round(headline, 2)
        return metrics
