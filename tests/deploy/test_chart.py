"""The Helm chart, with real helm 3 and helm 4 binaries: it passes every check, and broken copies do not."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import tools
from tests.deploy.chart import CHART, check_chart, helm_run, render
from tests.deploy.pss import Manifest

SQLITE = CHART / "ci" / "sqlite-values.yaml"
POSTGRES = CHART / "ci" / "postgres-values.yaml"


@pytest.fixture(scope="module", params=sorted(tools.HELMS), ids=lambda major: f"helm{major}")
def helm(request: pytest.FixtureRequest) -> Path:
    return tools.helm(request.param)


@pytest.fixture(scope="module")
def helm4() -> Path:
    return tools.helm("4")


def test_chart_passes_lint_schemas_and_pod_security(helm: Path) -> None:
    assert check_chart(helm) == []


def test_both_modes_have_their_values_file() -> None:
    assert {p.name for p in (CHART / "ci").glob("*.yaml")} >= {"sqlite-values.yaml", "postgres-values.yaml"}


def test_sqlite_mode_runs_one_pod_on_a_volume_with_recreate(helm4: Path) -> None:
    manifests = render(helm4, CHART, SQLITE, "1.37.0")
    (web,) = of_kind(manifests, "Deployment")
    assert web["spec"]["replicas"] == 1
    assert web["spec"]["strategy"] == {"type": "Recreate"}
    assert container(web)["args"][:2] == ["serve", "--host=0.0.0.0"]
    (claim,) = of_kind(manifests, "PersistentVolumeClaim")
    volumes = {v["name"]: v for v in web["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    (config,) = of_kind(manifests, "ConfigMap")
    assert config["data"]["RECEIVER_STORE_URL"] == "sqlite:////data/receiver.db"
    assert config["data"]["RECEIVER_PUBLIC_URL"] == "https://receiver.example.com"


def test_postgres_mode_renders_no_secret_and_references_every_credential(helm4: Path) -> None:
    manifests = render(helm4, CHART, POSTGRES, "1.37.0")
    assert of_kind(manifests, "Secret") == []
    web, worker = sorted(of_kind(manifests, "Deployment"), key=lambda d: str(d["metadata"]["name"]))
    assert "--no-worker" in container(web)["args"]
    assert container(worker)["args"][0] == "worker"
    assert "replicas" not in web["spec"]  # the HorizontalPodAutoscaler owns it
    assert worker["spec"]["replicas"] == 2
    for deployment in (web, worker):
        env = {e["name"]: e for e in container(deployment)["env"]}
        references = {name: e["valueFrom"]["secretKeyRef"]["name"] for name, e in env.items()}
        assert references["RECEIVER_STORE_URL"] == "kontext-receiver-postgres"
        assert references["AWS_ACCESS_KEY_ID"] == references["AWS_SECRET_ACCESS_KEY"] == "kontext-receiver-s3"
        assert references["RECEIVER_SINKS"] == "kontext-receiver-sinks"
        assert references["BFL_API_KEY"] == references["RECEIVER_SIGNING_KEYS"] == "kontext-receiver"
    (config,) = of_kind(manifests, "ConfigMap")
    assert config["data"]["RECEIVER_BLOB_URL"].startswith("s3://")
    assert not {"RECEIVER_STORE_URL", "RECEIVER_SINKS"} & set(config["data"])
    kinds = {m["kind"] for m in manifests}
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor", "NetworkPolicy"} <= kinds


def test_ingress_exposes_only_the_webhooks_over_tls(helm4: Path) -> None:
    (ingress,) = of_kind(render(helm4, CHART, POSTGRES, "1.37.0"), "Ingress")
    (rule,) = ingress["spec"]["rules"]
    assert [p["path"] for p in rule["http"]["paths"]] == ["/webhooks/"]
    assert ingress["spec"]["tls"][0]["hosts"] == [rule["host"]] == ["receiver.example.com"]


def test_notes_tell_the_webhook_url(helm4: Path) -> None:
    result = helm_run(helm4, "install", "release", str(CHART), "--dry-run=client", f"--values={SQLITE}")
    assert result.returncode == 0, result.stderr
    assert "https://receiver.example.com/webhooks/bfl/<job_id>" in result.stdout


def test_defaults_generate_the_signing_key_and_token_and_warn_about_the_api_key(helm4: Path) -> None:
    (secret,) = of_kind(render(helm4, CHART, None, "1.37.0"), "Secret")
    assert len(secret["data"]["RECEIVER_SIGNING_KEYS"]) > 40
    assert len(secret["data"]["RECEIVER_API_TOKENS"]) > 40
    notes = helm_run(helm4, "install", "release", str(CHART), "--dry-run=client").stdout
    assert "BFL cannot reach" in notes and "no BFL API key" in notes


def test_the_daily_credit_cap_is_unset_by_default_and_rendered_when_given(
    helm4: Path, tmp_path: Path
) -> None:
    (default,) = of_kind(render(helm4, CHART, SQLITE, "1.37.0"), "ConfigMap")
    assert "RECEIVER_MAX_CREDITS_PER_DAY" not in default["data"]
    for given in ["1500", "12.5"]:
        file = tmp_path / "values.yaml"
        file.write_text(f"config: {{maxCreditsPerDay: {given}}}")
        (config,) = of_kind(render(helm4, CHART, file, "1.37.0"), "ConfigMap")
        assert config["data"]["RECEIVER_MAX_CREDITS_PER_DAY"] == given


def test_input_hosts_and_fetch_timeout_are_unset_by_default_and_rendered_when_given(
    helm4: Path, tmp_path: Path
) -> None:
    (default,) = of_kind(render(helm4, CHART, SQLITE, "1.37.0"), "ConfigMap")
    assert not {"RECEIVER_INPUT_HOSTS", "RECEIVER_INPUT_FETCH_TIMEOUT_S"} & set(default["data"])
    for hosts, timeout, rendered in [
        ('["images.example.com", "*.cdn.example:8443"]', "2.5", "images.example.com,*.cdn.example:8443"),
        ("[]", "30", ""),  # set and empty: images given by URL are refused
    ]:
        file = tmp_path / "values.yaml"
        file.write_text(f"config: {{inputHosts: {hosts}, inputFetchTimeoutSeconds: {timeout}}}")
        (config,) = of_kind(render(helm4, CHART, file, "1.37.0"), "ConfigMap")
        assert config["data"]["RECEIVER_INPUT_HOSTS"] == rendered
        assert config["data"]["RECEIVER_INPUT_FETCH_TIMEOUT_S"] == timeout


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ("web: {replicaCount: 2}", "store.type=sqlite runs one web replica"),
        (
            "store: {type: postgresql, postgresql: {existingSecret: db}}\nworker: {enabled: true}",
            "several pods need shared image storage",
        ),
        ("store: {type: postgresql}", "set store.postgresql.existingSecret"),
        ("replicas: 2", "additional properties 'replicas' not allowed"),
        ("web: {port: 80}", "minimum"),
        ("config: {maxCreditsPerDay: 0}", "exclusiveminimum"),
        ("config: {maxCreditsPerDay: lots}", "maxcreditsperday"),
        ("config: {inputHosts: images.example.com}", "inputhosts"),
        ('config: {inputHosts: [""]}', "inputhosts"),
        ("config: {inputFetchTimeoutSeconds: 0}", "minimum"),
        ("config: {inputFetchTimeoutSeconds: soon}", "inputfetchtimeoutseconds"),
    ],
)
def test_values_that_would_lose_data_or_are_unknown_are_refused(
    helm4: Path, tmp_path: Path, values: str, message: str
) -> None:
    file = tmp_path / "values.yaml"
    file.write_text(values)
    result = helm_run(helm4, "template", "release", str(CHART), f"--values={file}")
    assert result.returncode != 0
    assert message in result.stderr.lower() or message in result.stderr


BreakChart = Callable[[Path], None]


def _edit(relative: str, old: str, new: str) -> BreakChart:
    def edit(chart: Path) -> None:
        path = chart / relative
        text = path.read_text()
        assert old in text, f"{old!r} is not in {relative}"
        path.write_text(text.replace(old, new, 1))

    return edit


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (_edit("templates/service.yaml", "{{- end }}", "{{- end"), "helm lint --strict"),
        (
            _edit(
                "templates/deployment.yaml",
                "revisionHistoryLimit: 5",
                "revisionHistoryLimit: 5\n  paused: maybe",
            ),
            "invalid for Kubernetes",
        ),
        (_edit("templates/deployment.yaml", "command: [", "commands: ["), "'commands' was unexpected"),
        (_edit("templates/pdb.yaml", "policy/v1", "policy/v1beta1"), "unknown kind or removed API"),
        (
            _edit("values.yaml", "allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true"),
            "allowPrivilegeEscalation must be false",
        ),
        (_edit("values.yaml", "drop: [ALL]", "drop: [NET_RAW]"), "capabilities.drop must include ALL"),
        (
            _edit("values.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false"),
            "readOnlyRootFilesystem must be true",
        ),
        (
            _edit(
                "templates/_helpers.tpl",
                "emptyDir: {medium: Memory",
                "hostPath: {path: /tmp, type: Directory",
            ),
            "hostPath is not an allowed volume type",
        ),
        (
            _edit("values.yaml", "extraEnv: {}", "extraEnv: {AWS_SECRET_ACCESS_KEY: hunter2}"),
            "AWS_SECRET_ACCESS_KEY is rendered in plain text",
        ),
        (
            _edit("templates/_helpers.tpl", "(mul 2 (int .Values.config.shutdownGraceSeconds)) 10", "1"),
            "is not above 2 x 20 s",
        ),
        (
            _edit("templates/ingress.yaml", "port: {name: http}", "port: {name: metrics}"),
            "is no Service port",
        ),
        (_edit("templates/service.yaml", "targetPort: http", "targetPort: web"), "is no container port"),
    ],
    ids=[
        "template-syntax",
        "invalid-value",
        "unknown-field",
        "removed-api",
        "privilege-escalation",
        "capabilities",
        "writable-root",
        "host-path",
        "plain-secret",
        "short-grace",
        "ingress-backend",
        "service-port",
    ],
)
def test_a_broken_copy_of_the_chart_fails_the_check(
    helm4: Path, tmp_path: Path, breakage: BreakChart, expected: str
) -> None:
    chart = tmp_path / "kontext-receiver"
    shutil.copytree(CHART, chart)
    breakage(chart)
    problems = check_chart(helm4, chart)
    assert any(expected in problem for problem in problems), problems


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def container(deployment: Manifest) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)
