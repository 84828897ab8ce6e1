"""The Pod Security Standards "restricted" check on hand-made pods (pure logic)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.pss import pod_templates, violations

RESTRICTED_CONTEXT: dict[str, Any] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
RESTRICTED_CONTAINER: dict[str, Any] = {"name": "app", "securityContext": RESTRICTED_CONTEXT}
RESTRICTED_POD: dict[str, Any] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def pod(container: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    merged_container = {**RESTRICTED_CONTAINER, **(container or {})}
    context = spec.pop("securityContext", RESTRICTED_POD)
    return {"metadata": {}, "spec": {"securityContext": context, "containers": [merged_container], **spec}}


def test_a_restricted_pod_is_admitted() -> None:
    assert violations(pod(volumes=[{"name": "tmp", "emptyDir": {}}])) == []


def test_container_settings_override_the_pods() -> None:
    context = {**RESTRICTED_CONTEXT, "runAsNonRoot": False}
    assert violations(pod({"securityContext": context})) == [
        "containers[app]: runAsNonRoot must be true (in the container's or the pod's securityContext)"
    ]


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        (pod(hostNetwork=True), "hostNetwork must be unset or false"),
        (pod(securityContext={**RESTRICTED_POD, "runAsUser": 0}), "securityContext.runAsUser must not be 0"),
        (
            pod(securityContext={"runAsNonRoot": True}),
            "seccompProfile.type must be RuntimeDefault or Localhost",
        ),
        (
            pod(securityContext={**RESTRICTED_POD, "sysctls": [{"name": "kernel.msgmax", "value": "1"}]}),
            "kernel.msgmax is not a safe sysctl",
        ),
        (
            pod({"securityContext": {**RESTRICTED_CONTEXT, "privileged": True}}),
            "privileged must be unset or false",
        ),
        (
            pod(
                {
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]},
                    }
                }
            ),
            "SYS_ADMIN is not allowed",
        ),
        (pod({"ports": [{"containerPort": 80, "hostPort": 80}]}), "hostPort 80 is not allowed"),
        (
            pod(volumes=[{"name": "sock", "hostPath": {"path": "/run"}}]),
            "hostPath is not an allowed volume type",
        ),
        (
            pod(initContainers=[{"name": "init"}]),
            "initContainers[init]: securityContext.allowPrivilegeEscalation must be false",
        ),
    ],
)
def test_each_rule_names_what_breaks_it(template: dict[str, Any], problem: str) -> None:
    assert any(problem in found for found in violations(template)), violations(template)


def test_pod_templates_are_found_in_every_workload_kind() -> None:
    spec: dict[str, Any] = {"template": {"spec": {}}}
    kinds: dict[str, dict[str, Any]] = {
        "Deployment": spec,
        "Job": spec,
        "CronJob": {"jobTemplate": {"spec": spec}},
        "Pod": {},
        "ConfigMap": {},
    }
    found = [name for kind, s in kinds.items() for name, _ in pod_templates({"kind": kind, "spec": s})]
    assert found == ["Deployment/None", "Job/None", "CronJob/None", "Pod/None"]
