"""The container image, built offline with buildah and run with runc as Kubernetes would run it.

The container gets the image's own user, environment, working directory and command, a read-only root
filesystem, an in-memory /tmp and a volume at /data. It shares the host's network namespace, so its
receiver listens on 127.0.0.1 only.
"""

from __future__ import annotations

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
from tests.servers import free_port, wait_until

IMAGE = "localhost/kontext-receiver:test"
UID = 10001
# Run in the container: prints each requirement of the package, any extra but dev, that is not installed.
MISSING_REQUIREMENTS = """
import importlib.metadata as metadata, re
for requirement in metadata.requires("kontext-receiver") or []:
    name = re.split(r"[\\s<>=!~;\\[(]", requirement, maxsplit=1)[0]
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
    assert result.returncode == 0, (
        f"the image build failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
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


def test_container_answers_healthz_with_a_read_only_root(
    config: dict[str, Any], rootfs: Path, tmp_path: Path
) -> None:
    port = free_port()
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, UID, UID)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    _run(tools.RUNC, "spec", "--bundle", str(bundle))
    spec_path = bundle / "config.json"
    spec = json.loads(spec_path.read_text())
    spec_path.write_text(json.dumps(_runtime_spec(spec, config, rootfs, data, port)))
    name = f"kontext-receiver-test-{os.getpid()}"
    log = tmp_path / "container.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [tools.RUNC, "run", "--bundle", str(bundle), name], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_until(lambda: _answers(port) or process.poll() is not None, 120, "the container's /healthz")
        assert process.poll() is None, f"the container stopped:\n{log.read_text()}"
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").json() == {"status": "ready"}
        store = data / "receiver.db"
        assert store.is_file() and store.stat().st_uid == UID
        write = _exec(name, "python3", "-c", "open('/opt/venv/probe', 'w')")
        assert write.returncode != 0 and "Read-only file system" in write.stderr
        extras = _exec(name, "python3", "-c", MISSING_REQUIREMENTS)
        assert extras.returncode == 0 and extras.stdout == "", extras.stdout + extras.stderr
    finally:
        subprocess.run([tools.RUNC, "kill", name, "TERM"], capture_output=True, check=False)
        try:
            process.wait(timeout=60)
        finally:
            subprocess.run([tools.RUNC, "delete", "--force", name], capture_output=True, check=False)
    assert process.returncode == 0, log.read_text()


def _runtime_spec(
    spec: dict[str, Any], config: dict[str, Any], rootfs: Path, data: Path, port: int
) -> dict[str, Any]:
    """runc's default spec (no new privileges, few capabilities) with the image's process in it."""
    user, _, group = config["User"].partition(":")
    settings = {
        "BFL_API_URL": "http://127.0.0.2:9",
        "BFL_API_KEY": "test-key",
        "RECEIVER_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "RECEIVER_SIGNING_KEYS": "test-signing-key",
        "RECEIVER_API_TOKENS": "test-token",
    }
    spec["root"] = {"path": str(rootfs), "readonly": True}
    spec["process"].update(
        terminal=False,
        user={"uid": int(user), "gid": int(group)},
        cwd=config["WorkingDir"],
        env=[*config["Env"], *(f"{k}={v}" for k, v in settings.items())],
        # The image's command, listening on loopback (argparse keeps the last --host and --port).
        args=[*config["Cmd"], "--host", "127.0.0.1", "--port", str(port)],
    )
    linux = spec["linux"]
    linux["namespaces"] = [ns for ns in linux["namespaces"] if ns["type"] != "network"]
    spec["mounts"] += [
        {
            "destination": "/tmp",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "nodev", "size=64m"],
        },
        {"destination": "/data", "type": "bind", "source": str(data), "options": ["rbind", "rw"]},
    ]
    return spec


def _exec(container: str, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tools.RUNC, "exec", container, *command], capture_output=True, text=True, timeout=60, check=False
    )


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
