"""The Pod Security Standards "restricted" profile (baseline included), checked on rendered manifests.

Each rule follows the Kubernetes documentation of the profile as of 1.30-1.37; `violations` names every
field that breaks one, so a failing chart test says what to change.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

Manifest = dict[str, Any]

ALLOWED_VOLUME_SOURCES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SELINUX_TYPES = {None, "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


def pod_templates(manifest: Manifest) -> Iterator[tuple[str, Manifest]]:
    """Every pod (`metadata`, `spec`) a manifest creates, named `Kind/name`."""
    kind, spec = manifest.get("kind"), manifest.get("spec") or {}
    name = f"{kind}/{manifest.get('metadata', {}).get('name')}"
    if kind == "Pod":
        yield name, manifest
    elif kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
        yield name, spec["template"]
    elif kind == "CronJob":
        yield name, spec["jobTemplate"]["spec"]["template"]


def violations(template: Manifest) -> list[str]:
    """What in a pod (`metadata` and `spec`) the restricted profile refuses; empty when it is admitted."""
    pod = template.get("spec") or {}
    problems = [*_pod_level(pod), *_apparmor_annotations(template.get("metadata") or {})]
    pod_context = pod.get("securityContext") or {}
    containers = [(f"{field}[{c.get('name')}]", c) for field in CONTAINER_LISTS for c in pod.get(field) or []]
    for where, container in containers:
        problems += [f"{where}: {p}" for p in _container(container, pod_context)]
    return problems


def _pod_level(pod: Manifest) -> Iterator[str]:
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            yield f"{field} must be unset or false"
    context = pod.get("securityContext") or {}
    yield from _common_context(context, "securityContext")
    if context.get("runAsUser") == 0:
        yield "securityContext.runAsUser must not be 0"
    for sysctl in context.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            yield f"securityContext.sysctls: {sysctl.get('name')} is not a safe sysctl"
    for volume in pod.get("volumes") or []:
        sources = set(volume) - {"name"}
        if not sources <= ALLOWED_VOLUME_SOURCES:
            yield f"volume {volume.get('name')}: {', '.join(sorted(sources))} is not an allowed volume type"


def _container(container: Manifest, pod_context: Manifest) -> Iterator[str]:
    context = container.get("securityContext") or {}
    yield from _common_context(context, "securityContext")
    if context.get("privileged"):
        yield "securityContext.privileged must be unset or false"
    if context.get("procMount") not in (None, "Default"):
        yield "securityContext.procMount must be Default"
    if context.get("allowPrivilegeEscalation") is not False:
        yield "securityContext.allowPrivilegeEscalation must be false"
    if context.get("runAsUser") == 0:
        yield "securityContext.runAsUser must not be 0"
    non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
    if non_root is not True:
        yield "runAsNonRoot must be true (in the container's or the pod's securityContext)"
    seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
    if seccomp not in {"RuntimeDefault", "Localhost"}:
        yield "seccompProfile.type must be RuntimeDefault or Localhost (in the container or the pod)"
    capabilities = context.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        yield "securityContext.capabilities.drop must include ALL"
    for added in capabilities.get("add") or []:
        if added != "NET_BIND_SERVICE":
            yield f"securityContext.capabilities.add: {added} is not allowed (only NET_BIND_SERVICE)"
    for port in container.get("ports") or []:
        if port.get("hostPort"):
            yield f"hostPort {port['hostPort']} is not allowed"


def _common_context(context: Manifest, where: str) -> Iterator[str]:
    """Rules that hold for a pod's and a container's securityContext alike."""
    if (context.get("windowsOptions") or {}).get("hostProcess"):
        yield f"{where}.windowsOptions.hostProcess must be unset or false"
    if (context.get("seccompProfile") or {}).get("type") == "Unconfined":
        yield f"{where}.seccompProfile.type must not be Unconfined"
    if (context.get("appArmorProfile") or {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
        yield f"{where}.appArmorProfile.type must be RuntimeDefault or Localhost"
    selinux = context.get("seLinuxOptions") or {}
    if selinux.get("type") not in SELINUX_TYPES:
        yield f"{where}.seLinuxOptions.type {selinux['type']} is not allowed"
    if selinux.get("user") or selinux.get("role"):
        yield f"{where}.seLinuxOptions.user and .role must be unset"


def _apparmor_annotations(metadata: Manifest) -> Iterator[str]:
    for key, value in (metadata.get("annotations") or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            yield f"annotation {key}={value} is not allowed"
