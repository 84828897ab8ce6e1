"""The chart check: helm lint, helm template, strict schema validation, Pod Security, our own rules.

`check_chart` returns every problem it finds (empty when the chart is fine), so the same function shows
the real chart passing and a deliberately broken copy failing.
"""

from __future__ import annotations

import functools
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import yaml

from tests.deploy.pss import Manifest, pod_templates, violations

CHART = Path(__file__).resolve().parents[2] / "helm" / "kontext-receiver"
KUBE_VERSIONS = ("1.30.0", "1.37.0")
# Custom resources the chart may render: their schemas are not Kubernetes' own.
CUSTOM_RESOURCES = {("monitoring.coreos.com/v1", "ServiceMonitor")}
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)", re.IGNORECASE)
CREDENTIALS_IN_URL = re.compile(r"://[^/@\s]*:[^/@\s]+@")

# kubernetes-validate parses a version's schema files (megabytes of JSON) again on every call; the check
# validates hundreds of manifests. The parsed schemas are only read.
kubernetes_validate.utils.schema_contents = functools.cache(kubernetes_validate.utils.schema_contents)


class RenderError(Exception):
    """helm refused to render the chart; the message is its output."""


def values_files(chart: Path = CHART) -> list[Path | None]:
    """The chart's defaults (None) and every file in its ci/ folder."""
    return [None, *sorted((chart / "ci").glob("*.yaml"))]


def helm_run(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120, check=False)


def lint(helm: Path, chart: Path, values: Path | None) -> list[str]:
    result = helm_run(helm, "lint", "--strict", str(chart), *_values_args(values))
    if result.returncode == 0:
        return []
    return [f"helm lint --strict ({_label(values)}): {result.stdout}{result.stderr}".strip()]


def render(helm: Path, chart: Path, values: Path | None, kube_version: str, *more: str) -> list[Manifest]:
    """`helm template` of the chart (test pods included; `more` arguments for helm) as parsed manifests."""
    result = helm_run(
        helm,
        "template",
        "release",
        str(chart),
        "--namespace=receiver",
        f"--kube-version={kube_version}",
        "--api-versions=monitoring.coreos.com/v1",
        *_values_args(values),
        *more,
    )
    if result.returncode != 0:
        raise RenderError(f"helm template ({_label(values)}, {kube_version}): {result.stderr.strip()}")
    return [doc for doc in yaml.load_all(result.stdout, Loader=yaml.CSafeLoader) if doc]


def check_chart(helm: Path, chart: Path = CHART) -> list[str]:
    """Every problem of `chart` with every values file, for every Kubernetes version we support."""
    problems: list[str] = []
    for values in values_files(chart):
        problems += lint(helm, chart, values)
        for kube_version in KUBE_VERSIONS:
            try:
                manifests = render(helm, chart, values, kube_version)
            except RenderError as exc:
                problems.append(str(exc))
                continue
            where = f"{_label(values)}, Kubernetes {kube_version}"
            problems += [f"{where}: {p}" for p in release_problems(manifests, kube_version)]
    return problems


def release_problems(manifests: list[Manifest], kube_version: str) -> list[str]:
    """What is wrong with one rendered release, each problem prefixed with its manifest."""
    problems = [p for manifest in manifests for p in manifest_problems(manifest, kube_version)]
    problems += _grace_problems(manifests)
    problems += _reference_problems(manifests)
    return problems


def manifest_problems(manifest: Manifest, kube_version: str) -> list[str]:
    name = f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"
    problems = [f"{name}: {p}" for p in _schema_problems(manifest, kube_version)]
    problems += [f"{name}: {p}" for p in _plain_secrets(manifest)]
    for pod_name, template in pod_templates(manifest):
        problems += [f"{pod_name}: {p}" for p in violations(template)]
        problems += [f"{pod_name}: {p}" for p in _container_rules(template["spec"])]
    return problems


def _schema_problems(manifest: Manifest, kube_version: str) -> Iterator[str]:
    try:
        kubernetes_validate.validate(manifest, kube_version, strict=True)
    except kubernetes_validate.SchemaNotFoundError as exc:
        if (manifest.get("apiVersion"), manifest.get("kind")) not in CUSTOM_RESOURCES:
            yield f"unknown kind or removed API: {exc.message}"
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(part) for part in exc.path)
        yield f"invalid for Kubernetes {exc.version} at {path}: {exc.message}"


def _container_rules(pod: Manifest) -> Iterator[str]:
    """Ours, beyond Pod Security: a read-only root, resource bounds, probes on long-running containers."""
    long_running = pod.get("restartPolicy", "Always") == "Always"
    for field in ("initContainers", "containers"):
        for container in pod.get(field) or []:
            where = f"{field}[{container.get('name')}]"
            if (container.get("securityContext") or {}).get("readOnlyRootFilesystem") is not True:
                yield f"{where}: securityContext.readOnlyRootFilesystem must be true"
            resources = container.get("resources") or {}
            for bound in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(resources.get(bound) or {}):
                    yield f"{where}: resources.{bound} must name cpu and memory"
            if field == "containers" and long_running:
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    if probe not in container:
                        yield f"{where}: {probe} is missing"


def _plain_secrets(manifest: Manifest) -> Iterator[str]:
    """Secret-looking settings rendered as plain values instead of references to a Secret."""
    plain: dict[str, Any] = {}
    if manifest.get("kind") == "ConfigMap":
        plain.update(manifest.get("data") or {})
    for _, template in pod_templates(manifest):
        for field in ("initContainers", "containers"):
            for container in template["spec"].get(field) or []:
                plain.update({e["name"]: e["value"] for e in container.get("env") or [] if "value" in e})
    for name, value in plain.items():
        if SECRET_NAME.search(name) and value:
            yield f"{name} is rendered in plain text; take it from a Secret"
        elif CREDENTIALS_IN_URL.search(str(value)):
            yield f"{name} holds a URL with a password in plain text; take it from a Secret"


def _grace_problems(manifests: list[Manifest]) -> Iterator[str]:
    """terminationGracePeriodSeconds above twice RECEIVER_SHUTDOWN_GRACE_S (answer in flight, then drain)."""
    config: dict[str, str] = {}
    for manifest in manifests:
        if manifest.get("kind") == "ConfigMap":
            config.update(manifest.get("data") or {})
    grace = float(config.get("RECEIVER_SHUTDOWN_GRACE_S", "20"))
    for manifest in manifests:
        if manifest.get("kind") != "Deployment":
            continue
        period = manifest["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        if period <= 2 * grace:
            name = manifest["metadata"]["name"]
            yield f"Deployment/{name}: terminationGracePeriodSeconds {period} is not above 2 x {grace:g} s"


def _reference_problems(manifests: list[Manifest]) -> Iterator[str]:
    """Selectors that select nothing and names that name nothing the release renders."""
    by_kind: dict[str, dict[str, Manifest]] = {}
    for manifest in manifests:
        by_kind.setdefault(manifest["kind"], {})[manifest["metadata"]["name"]] = manifest
    services, deployments = by_kind.get("Service", {}), by_kind.get("Deployment", {})
    pods = {name: d["spec"]["template"] for name, d in deployments.items()}

    def selected(selector: dict[str, str], candidates: dict[str, Manifest], labels_at: str) -> list[str]:
        return [
            name
            for name, candidate in candidates.items()
            if selector.items() <= (candidate.get(labels_at) or {}).get("labels", {}).items()
        ]

    for name, service in services.items():
        targets = selected(service["spec"]["selector"], pods, "metadata")
        if not targets:
            yield f"Service/{name}: its selector matches no Deployment's pods"
        ports = {
            p["name"] for t in targets for c in pods[t]["spec"]["containers"] for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            if isinstance(port["targetPort"], str) and port["targetPort"] not in ports:
                yield f"Service/{name}: targetPort {port['targetPort']} is no container port of its pods"
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        for name, manifest in by_kind.get(kind, {}).items():
            field = "selector" if kind == "PodDisruptionBudget" else "podSelector"
            if not selected(manifest["spec"][field]["matchLabels"], pods, "metadata"):
                yield f"{kind}/{name}: its selector matches no Deployment's pods"
    for name, hpa in by_kind.get("HorizontalPodAutoscaler", {}).items():
        if hpa["spec"]["scaleTargetRef"]["name"] not in deployments:
            yield f"HorizontalPodAutoscaler/{name}: scales no Deployment of this release"
    for name, ingress in by_kind.get("Ingress", {}).items():
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                ports = {
                    p["name"] for p in services.get(backend["name"], {}).get("spec", {}).get("ports", [])
                }
                if backend["port"].get("name") not in ports:
                    yield f"Ingress/{name}: {backend['name']}:{backend['port']} is no Service port"
    for name, monitor in by_kind.get("ServiceMonitor", {}).items():
        scraped = selected(monitor["spec"]["selector"]["matchLabels"], services, "metadata")
        if not scraped:
            yield f"ServiceMonitor/{name}: its selector matches no Service"
        for endpoint in monitor["spec"]["endpoints"]:
            for target in scraped:
                if endpoint["port"] not in {p["name"] for p in services[target]["spec"]["ports"]}:
                    yield f"ServiceMonitor/{name}: Service/{target} has no port {endpoint['port']}"


def _values_args(values: Path | None) -> list[str]:
    return [] if values is None else [f"--values={values}"]


def _label(values: Path | None) -> str:
    return "default values" if values is None else f"{values.parent.name}/{values.name}"
