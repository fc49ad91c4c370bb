"""Kueue's webhook configurations (kubectl's JSON on stdin: a List, or one object after another) for a control plane without a cluster
network: each webhook called by URL on the local manager, trusted through the local CA. Only the
webhooks of Kueue's own kinds and of batch Jobs are kept: the other integrations are off, and their
webhooks would refuse every Pod or Deployment.

    kubectl create --dry-run=client -o json -f webhooks.yaml | python3 kueue_webhooks.py https://127.0.0.1:PORT ca.crt
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

KEPT_GROUPS = {"kueue.x-k8s.io", "batch"}
LABEL = {"app.kubernetes.io/part-of": "flageval-kueue"}  # how hack/control-plane finds them to remove them


def objects(text: str) -> list[dict]:
    """Every object of kubectl's output, whether a List or several documents back to back."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (at := len(text) - len(text[at:].lstrip())) < len(text):
        value, at = decoder.raw_decode(text, at)
        found += value.get("items") or [] if value.get("kind") == "List" else [value]
    return found


def local(configurations: list[dict], base_url: str, ca_bundle: str) -> dict:
    items = []
    for conf in configurations:
        hooks = []
        for hook in conf.get("webhooks") or []:
            groups = {group for rule in hook.get("rules") or [] for group in rule.get("apiGroups") or []}
            if not groups or not groups <= KEPT_GROUPS:
                continue
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": base_url.rstrip("/") + path, "caBundle": ca_bundle}
            hooks.append(hook)
        if hooks:
            kind = "mutating" if conf["kind"] == "MutatingWebhookConfiguration" else "validating"
            conf["metadata"] = {"name": f"kueue-{kind}-webhook-configuration", "labels": LABEL}
            conf["webhooks"] = hooks
            items.append(conf)
    return {"apiVersion": "v1", "kind": "List", "items": items}


def main() -> None:
    base_url, ca_file = sys.argv[1], sys.argv[2]
    ca_bundle = base64.b64encode(Path(ca_file).read_bytes()).decode()
    json.dump(local(objects(sys.stdin.read()), base_url, ca_bundle), sys.stdout)


if __name__ == "__main__":
    main()
