"""CustomResourceDefinitions built from the pydantic types: a structural OpenAPI v3 schema with the
types' descriptions, defaults, bounds, enums and CEL rules."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from flageval.api import evaluation

_KEEP = {
    "type", "description", "default", "enum", "pattern", "format", "minimum", "maximum", "minLength", "maxLength",
    "minItems", "maxItems", "items", "properties", "required", "additionalProperties", "nullable",
    "x-kubernetes-validations",
}


def _resolve(node: dict[str, Any], defs: dict[str, Any], *, defaults: bool) -> dict[str, Any]:
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}  # the field's own description and default win over the type's
    nullable = False
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        nullable = len(options) == 1
        if len(options) != 1:
            raise ValueError(f"cannot express a union in a structural schema: {options}")
        inner = _resolve(options[0], defs, defaults=defaults)
        node = {**inner, **node}  # the field's description, default and rules sit beside anyOf
    if "exclusiveMinimum" in node:  # JSON Schema 2020 → OpenAPI v3.0
        node["minimum"], node["exclusiveMinimum"] = node.pop("exclusiveMinimum"), True
    if "exclusiveMaximum" in node:
        node["maximum"], node["exclusiveMaximum"] = node.pop("exclusiveMaximum"), True
    if "enum" in node and "type" not in node:
        node["type"] = "string"
    out = {k: v for k, v in node.items() if k in _KEEP or k in ("exclusiveMinimum", "exclusiveMaximum")}
    if nullable and not defaults:
        out["nullable"] = True
    if "default" in out and (out["default"] is None or not defaults):
        del out["default"]
    if "properties" in out:
        out["properties"] = {k: _resolve(v, defs, defaults=defaults) for k, v in out["properties"].items()}
        out["type"] = "object"
    if isinstance(out.get("items"), dict):
        out["items"] = _resolve(out["items"], defs, defaults=defaults)
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _resolve(out["additionalProperties"], defs, defaults=defaults)
    elif "additionalProperties" in out:
        del out["additionalProperties"]  # `false` is the structural default
    if out.get("required") == []:
        del out["required"]
    first = [k for k in ("type", "description") if k in out]
    return {k: out[k] for k in first + sorted(set(out) - set(first))}


def schema_of(model: type[BaseModel], *, defaults: bool = True) -> dict[str, Any]:
    """The structural schema of a model (defaults kept for spec, dropped for status)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _resolve(raw, raw.get("$defs", {}), defaults=defaults)


def _metadata_and_kind(description: str) -> dict[str, Any]:
    return {
        "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."},
        "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."},
        "metadata": {"type": "object"},
    }


def evaluation_crd() -> dict[str, Any]:
    properties = _metadata_and_kind(evaluation.Evaluation.__doc__ or "")
    properties["spec"] = schema_of(evaluation.EvaluationSpec)
    properties["status"] = schema_of(evaluation.EvaluationStatus, defaults=False)
    schema = {"type": "object", "description": evaluation.Evaluation.__doc__, "required": ["spec"], "properties": properties,
              # The name is a label value on every Job and report of the Evaluation, and label values stop at 63.
              "x-kubernetes-validations": [{"rule": "self.metadata.name.size() <= 63",
                                            "message": "metadata.name must be at most 63 characters: it labels the Evaluation's Jobs"}]}
    return _crd(
        kind=evaluation.KIND, plural=evaluation.PLURAL, short=["feval"], schema=schema, status=True,
        columns=[
            {"name": "Domain", "type": "string", "jsonPath": ".spec.domain", "description": "Benchmark domain."},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Pending, Running, Suspended, Succeeded or Failed."},
            {"name": "Progress", "type": "string", "jsonPath": ".status.progress", "description": "Datasets finished / datasets."},
            {"name": "Release", "type": "boolean", "jsonPath": ".status.release", "description": "Every service released."},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


def task_result_crd() -> dict[str, Any]:
    properties = _metadata_and_kind(evaluation.EvaluationTaskResult.__doc__ or "")
    full = schema_of(evaluation.EvaluationTaskResult, defaults=False)
    for name in ("progress", "result", "attempt"):
        properties[name] = full["properties"][name]
    schema = {"type": "object", "description": evaluation.EvaluationTaskResult.__doc__, "properties": properties}
    return _crd(
        kind=evaluation.TASK_RESULT_KIND, plural=evaluation.TASK_RESULT_PLURAL, short=["fevaltr"], schema=schema, status=False,
        columns=[
            {"name": "Dataset", "type": "string", "jsonPath": ".progress.dataset"},
            {"name": "Done", "type": "integer", "jsonPath": ".progress.done"},
            {"name": "Total", "type": "integer", "jsonPath": ".progress.total"},
            {"name": "Status", "type": "string", "jsonPath": ".result.status"},
            {"name": "Accuracy", "type": "number", "jsonPath": ".result.accuracy"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


def _crd(*, kind: str, plural: str, short: list[str], schema: dict, status: bool, columns: list[dict]) -> dict[str, Any]:
    version: dict[str, Any] = {
        "name": evaluation.VERSION, "served": True, "storage": True,
        "schema": {"openAPIV3Schema": schema},
        "additionalPrinterColumns": columns,
    }
    if status:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{evaluation.GROUP}"},
        "spec": {
            "group": evaluation.GROUP,
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower(), "shortNames": short, "categories": ["flageval"]},
            "scope": "Namespaced",
            "versions": [version],
        },
    }


CRDS = {
    f"{evaluation.GROUP}_{evaluation.PLURAL}.yaml": evaluation_crd,
    f"{evaluation.GROUP}_{evaluation.TASK_RESULT_PLURAL}.yaml": task_result_crd,
}
