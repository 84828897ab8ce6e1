"""The container image, built offline with buildah and run with runc as the chart's pods run it.

Each container gets the image's user, environment and working directory, a read-only root, no
capabilities, an in-memory /tmp and a volume at /data; it listens on 127.0.0.1 (see `runc.py`).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import anyio
import httpx
import pytest

from receiver.simulator import create_sim_app
from receiver.stores.migrations import POSTGRES as POSTGRES_MIGRATIONS
from tests.deploy import tools
from tests.deploy.chart import CHART, render
from tests.deploy.runc import Running, Sandbox
from tests.integration.stack import FAST_SIM, IMAGE_B64, SIM_KEY, TOKEN
from tests.s3 import CREDENTIALS as S3_CREDENTIALS
from tests.s3 import S3Server
from tests.servers import free_port, serve, wait_until
from tests.services import postgres_url

IMAGE = "localhost/kontext-receiver:test"
UID = 10001
SETTINGS = {
    "BFL_API_URL": "http://127.0.0.2:9",
    "BFL_API_KEY": "test-key",
    "RECEIVER_SIGNING_KEYS": "test-signing-key",
    "RECEIVER_API_TOKENS": "test-token",
}
# Run in the container: prints each requirement of the package, any extra but dev, that is not installed.
MISSING_REQUIREMENTS = """
import importlib.metadata as metadata, re
for requirement in metadata.requires("kontext-receiver") or []:
    name = re.match(r"[A-Za-z0-9._-]+", requirement).group()
    if 'extra == "dev"' in requirement or name == "kontext-receiver":
        continue
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        print(requirement)
"""


@pytest.fixture(scope="module")
def image() -> str:
    tools.image_tools()
    result = subprocess.run(
        [str(tools.ROOT / "deploy" / "build-image.sh")],
        env={**os.environ, "IMAGE": IMAGE, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    assert result.returncode == 0, f"the build failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return IMAGE


@pytest.fixture(scope="module")
def config(image: str) -> dict[str, Any]:
    inspected = _run("buildah", "inspect", "--type", "image", image)
    return dict(json.loads(inspected)["OCIv1"]["config"])


@pytest.fixture(scope="module")
def rootfs(image: str) -> Iterator[Path]:
    container = _run("buildah", "from", "--pull=never", image).strip()
    try:
        yield Path(_run("buildah", "mount", container).strip())
    finally:
        _run("buildah", "rm", container)


@pytest.fixture
def sandbox(config: dict[str, Any], rootfs: Path, tmp_path: Path) -> Sandbox:
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, UID, UID)
    return Sandbox(rootfs, config, data, tmp_path)


def test_image_runs_as_a_numeric_non_root_user_the_receiver(config: dict[str, Any]) -> None:
    user, _, group = config["User"].partition(":")
    assert user.isdigit() and int(user) != 0 and group.isdigit()
    assert config["Cmd"][:2] == ["kontext-receiver", "serve"]


def test_final_stage_has_no_compiler_pip_or_caches(rootfs: Path) -> None:
    for path in (
        "usr/bin/gcc",
        "usr/bin/cc",
        "usr/local/bin/gcc",
        "root/.cache",
        "wheels",
        "opt/venv/bin/pip",
    ):
        assert not (rootfs / path).exists(), path
    assert (rootfs / "opt/venv/bin/kontext-receiver").is_file()


def test_the_image_command_answers_healthz_on_a_read_only_root(
    sandbox: Sandbox, config: dict[str, Any]
) -> None:
    port = free_port()
    # The image's own command, on loopback: argparse keeps the last --host and --port.
    args = [*config["Cmd"], "--host", "127.0.0.1", "--port", str(port)]
    env = {**SETTINGS, "RECEIVER_PUBLIC_URL": f"http://127.0.0.1:{port}"}
    with sandbox.running("serve", args, env) as container:
        _wait_healthy(container, port)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
        assert (ready.status_code, ready.json()["status"]) == (200, "ready")
        store = sandbox.data / "receiver.db"
        assert store.is_file() and store.stat().st_uid == UID
        write = container.exec("python3", "-c", "open('/opt/venv/probe', 'w')")
        assert write.returncode != 0 and "Read-only file system" in write.stderr
        missing = container.exec("python3", "-c", MISSING_REQUIREMENTS)
        assert missing.returncode == 0 and missing.stdout == "", missing.stdout + missing.stderr


def test_the_charts_sqlite_pod_migrates_then_serves(sandbox: Sandbox) -> None:
    """The init container and the web container of ci/sqlite-values.yaml, with the env the pod gets."""
    port = free_port()
    manifests = render(
        tools.helm("4"),
        CHART,
        CHART / "ci" / "sqlite-values.yaml",
        "1.37.0",
        f"--set=bindAddress=127.0.0.1,web.port={port},secrets.bflApiKey=test-key",
    )
    (deployment,) = (m for m in manifests if m["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (migrate,) = pod["initContainers"]
    env = _pod_env(manifests, migrate, {})
    output = sandbox.run("migrate", [*migrate["command"], *migrate.get("args", [])], env)
    assert "sqlite:////data/receiver.db is ready" in output and (sandbox.data / "receiver.db").is_file()
    (web,) = pod["containers"]
    env = _pod_env(manifests, web, {})
    with sandbox.running("web", [*web["command"], *web["args"]], env) as container:
        _wait_healthy(container, port)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
        assert (ready.status_code, ready.json()["status"]) == (200, "ready")
        token = env["RECEIVER_API_TOKENS"].split(",")[0]
        jobs = httpx.get(f"http://127.0.0.1:{port}/v1/jobs", headers={"Authorization": f"Bearer {token}"})
        assert jobs.status_code == 200


@pytest.mark.parametrize("worker", [False, True], ids=["web-alone", "web-and-worker"])
def test_the_charts_postgres_pods_edit_an_image_into_s3(
    sandbox: Sandbox, s3: S3Server, tmp_path: Path, worker: bool
) -> None:
    """ci/postgres-values.yaml's pods on the test PostgreSQL and moto's S3, their secrets resolved from the
    Secrets the values name: the migration, then one edit from the simulator to the event in the sink and
    the image in the bucket; done by the web pod alone, or by a `serve --no-worker` pod and a worker pod."""
    url = postgres_url()
    schema = f"test_chart_{uuid.uuid4().hex[:12]}"
    parts = urlsplit(url)
    dsn = parts._replace(query=urlencode([*parse_qsl(parts.query), ("schema", schema)])).geturl()
    bucket, port, worker_port = s3.new_bucket(), free_port(), free_port()
    with serve(create_sim_app(FAST_SIM)) as sim_url:
        overrides = tmp_path / "loopback-values.yaml"
        overrides.write_text(
            json.dumps(
                {
                    "worker": {"enabled": worker, "port": worker_port},
                    "bindAddress": "127.0.0.1",
                    "web": {"port": port},
                    "blobs": {"url": s3.url(bucket)},
                    "config": {
                        "publicUrl": f"http://127.0.0.1:{port}",
                        "bflApiUrl": sim_url,
                        "sampleHosts": ["127.0.0.1"],
                        "extraEnv": {"AWS_METADATA_ENDPOINT": S3_CREDENTIALS["AWS_METADATA_ENDPOINT"]},
                    },
                }
            )
        )
        manifests = render(
            tools.helm("4"), CHART, CHART / "ci" / "postgres-values.yaml", "1.37.0", f"--values={overrides}"
        )
        pods = {
            m["metadata"]["labels"]["app.kubernetes.io/component"]: m["spec"]["template"]["spec"]
            for m in manifests
            if m["kind"] == "Deployment"
        }
        assert sorted(pods) == (["web", "worker"] if worker else ["web"])
        (migrate,) = pods["web"]["initContainers"]
        existing = {
            ("kontext-receiver", "BFL_API_KEY"): SIM_KEY,
            ("kontext-receiver", "RECEIVER_SIGNING_KEYS"): "test-signing-key",
            ("kontext-receiver", "RECEIVER_API_TOKENS"): TOKEN,
            ("kontext-receiver-postgres", "RECEIVER_STORE_URL"): dsn,
            ("kontext-receiver-s3", "AWS_ACCESS_KEY_ID"): S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            ("kontext-receiver-s3", "AWS_SECRET_ACCESS_KEY"): S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            ("kontext-receiver-sinks", "RECEIVER_SINKS"): "file:///data/events.jsonl",
        }
        try:
            output = sandbox.run("migrate", migrate["command"], _pod_env(manifests, migrate, existing))
            assert f"applied {POSTGRES_MIGRATIONS[0][0]}" in output
            with ExitStack() as stack:
                running: dict[str, Running] = {}
                for component, pod in pods.items():
                    (container,) = pod["containers"]
                    args = [*container["command"], *container["args"]]
                    env = _pod_env(manifests, container, existing)
                    running[component] = stack.enter_context(sandbox.running(component, args, env))
                for component, container in running.items():
                    _wait_healthy(container, port if component == "web" else worker_port)
                edit = httpx.post(
                    f"http://127.0.0.1:{port}/v1/edits",
                    json={"prompt": "Change the car color to red", "image": IMAGE_B64},
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )
                assert edit.status_code == 202, edit.text
                events = sandbox.data / "events.jsonl"
                wait_until(lambda: events.is_file() and events.read_text().strip(), 60, "the event")
        finally:
            anyio.run(_drop_schema, url, schema)
    (event,) = [json.loads(line) for line in events.read_text().splitlines()]
    assert (event["id"], event["data"]["outcome"]) == (edit.json()["id"], "completed")
    key = event["data"]["image"]["url"].removeprefix(f"s3://{bucket}/")
    assert key in s3.keys(bucket)
    for container in running.values():
        assert S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in container.log.read_text()


def _pod_env(
    manifests: list[dict[str, Any]], container: dict[str, Any], existing: dict[tuple[str, str], str]
) -> dict[str, str]:
    """What a container's environment resolves to: the chart's ConfigMap, and for each `secretKeyRef` the
    chart's own Secret or else the `existing` ones (a required key found in neither fails the test)."""
    secrets = dict(existing)
    for secret in (m for m in manifests if m["kind"] == "Secret"):
        for key, value in secret["data"].items():
            secrets[(secret["metadata"]["name"], key)] = base64.b64decode(value).decode()
    (config,) = (m for m in manifests if m["kind"] == "ConfigMap")
    env = dict(config["data"])
    for variable in container["env"]:
        ref = variable["valueFrom"]["secretKeyRef"]
        value = secrets.get((ref["name"], ref["key"]))
        assert value is not None or ref.get("optional"), f"{variable['name']}: no Secret has {ref}"
        if value is not None:
            env[variable["name"]] = value
    return env


async def _drop_schema(url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def _wait_healthy(container: Running, port: int) -> None:
    """Until the container answers /healthz on `port`; fails at once should it stop instead."""
    wait_until(
        lambda: _answers(port) or container.process.poll() is not None, 120, f"{container.name} /healthz"
    )
    assert container.process.poll() is None, container.log.read_text()


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _run(*command: str) -> str:
    if shutil.which(command[0]) is None:
        tools.unavailable(f"{command[0]} is not installed")
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"{' '.join(command)} failed: {result.stderr}"
    return result.stdout
