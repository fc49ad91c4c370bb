"""Fixtures for the operator's tests: the generated CRDs installed into the session's control plane."""

from __future__ import annotations

import pytest
from kubernetes.client.rest import ApiException

from flageval.api.crd import CRDS
from support.cluster import wait_for


@pytest.fixture(scope="session")
def crds(kube):
    names = []
    for build in CRDS.values():
        crd = build()
        names.append(crd["metadata"]["name"])
        try:
            kube.apiext.create_custom_resource_definition(crd)
        except ApiException as exc:
            if exc.status != 409:
                raise
            current = kube.apiext.read_custom_resource_definition(crd["metadata"]["name"])
            crd["metadata"]["resourceVersion"] = current.metadata.resource_version
            kube.apiext.replace_custom_resource_definition(crd["metadata"]["name"], crd)
    for name in names:
        wait_for(lambda: any(c.type == "Established" and c.status == "True"
                             for c in kube.apiext.read_custom_resource_definition(name).status.conditions or []), 30, f"{name} established")
    return names
