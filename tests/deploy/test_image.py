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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy import tools
from tests.deploy.chart import CHART, render
from tests.deploy.runc import Sandbox
from tests.servers import free_port, wait_until

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
        wait_until(lambda: _answers(port) or container.process.poll() is not None, 120, "/healthz")
        assert container.process.poll() is None, container.log.read_text()
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").json() == {"status": "ready"}
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
    env = _pod_env(manifests)
    (migrate,) = pod["initContainers"]
    output = sandbox.run("migrate", [*migrate["command"], *migrate.get("args", [])], env)
    assert "sqlite:////data/receiver.db is ready" in output and (sandbox.data / "receiver.db").is_file()
    (web,) = pod["containers"]
    with sandbox.running("web", [*web["command"], *web["args"]], env) as container:
        wait_until(lambda: _answers(port) or container.process.poll() is not None, 120, "/healthz")
        assert container.process.poll() is None, container.log.read_text()
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
        assert ready.json() == {"status": "ready"}
        token = env["RECEIVER_API_TOKENS"].split(",")[0]
        jobs = httpx.get(f"http://127.0.0.1:{port}/v1/jobs", headers={"Authorization": f"Bearer {token}"})
        assert jobs.status_code == 200


def _pod_env(manifests: list[dict[str, Any]]) -> dict[str, str]:
    """The ConfigMap's variables and the chart's Secret decoded: what the pod's env resolves to."""
    (config,) = (m for m in manifests if m["kind"] == "ConfigMap")
    (secret,) = (m for m in manifests if m["kind"] == "Secret")
    decoded = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    return {**config["data"], **decoded}


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
