"""Processes of an image run with runc the way the chart's pods run: its user and working directory, a
read-only root, no capabilities, no new privileges, an in-memory /tmp and a volume at /data.

They share the host's network namespace, so what they serve must listen on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.deploy import tools


@dataclass(frozen=True)
class Sandbox:
    """Runs processes of the image whose root filesystem is mounted at `rootfs`, with `data` at /data."""

    rootfs: Path
    image_config: Mapping[str, Any]
    data: Path
    workdir: Path

    def run(self, name: str, args: Sequence[str], env: Mapping[str, str], timeout: float = 120) -> str:
        """Run to completion; the output, or AssertionError when it fails."""
        log = self.workdir / f"{name}.log"
        with self._process(name, args, env, log) as container:
            code = container.process.wait(timeout=timeout)
        assert code == 0, f"{' '.join(args)} exited with {code}:\n{log.read_text()}"
        return log.read_text()

    @contextmanager
    def running(self, name: str, args: Sequence[str], env: Mapping[str, str]) -> Iterator[Running]:
        """Start, and on leaving send SIGTERM and insist that it exits 0."""
        log = self.workdir / f"{name}.log"
        with self._process(name, args, env, log) as container:
            yield container
            subprocess.run([tools.RUNC, "kill", container.name, "TERM"], capture_output=True, check=False)
            code = container.process.wait(timeout=60)
            assert code == 0, f"{name} exited with {code} on SIGTERM:\n{log.read_text()}"

    @contextmanager
    def _process(
        self, name: str, args: Sequence[str], env: Mapping[str, str], log: Path
    ) -> Iterator[Running]:
        bundle = self.workdir / f"{name}.bundle"
        bundle.mkdir()
        subprocess.run([tools.RUNC, "spec", "--bundle", str(bundle)], check=True, capture_output=True)
        spec_path = bundle / "config.json"
        spec_path.write_text(json.dumps(self._spec(json.loads(spec_path.read_text()), args, env)))
        unique = f"{name}-{os.getpid()}"
        with log.open("w") as out:
            process = subprocess.Popen(
                [tools.RUNC, "run", "--bundle", str(bundle), unique], stdout=out, stderr=subprocess.STDOUT
            )
        try:
            yield Running(unique, process, log)
        finally:
            if process.poll() is None:
                subprocess.run([tools.RUNC, "kill", unique, "KILL"], capture_output=True, check=False)
                process.wait(timeout=30)
            subprocess.run([tools.RUNC, "delete", "--force", unique], capture_output=True, check=False)

    def _spec(self, spec: dict[str, Any], args: Sequence[str], env: Mapping[str, str]) -> dict[str, Any]:
        user, _, group = self.image_config["User"].partition(":")
        environment = dict(line.split("=", 1) for line in self.image_config["Env"]) | dict(env)
        spec["root"] = {"path": str(self.rootfs), "readonly": True}
        spec["process"].update(
            terminal=False,
            user={"uid": int(user), "gid": int(group)},
            cwd=self.image_config["WorkingDir"],
            env=[f"{key}={value}" for key, value in environment.items()],
            args=list(args),
            noNewPrivileges=True,
            capabilities={kind: [] for kind in ("bounding", "effective", "permitted", "ambient")},
        )
        linux = spec["linux"]
        linux["namespaces"] = [ns for ns in linux["namespaces"] if ns["type"] != "network"]
        tmp = {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "size=64m"]}
        data = {"destination": "/data", "type": "bind", "source": str(self.data), "options": ["rbind", "rw"]}
        spec["mounts"] += [tmp, data]
        return spec


@dataclass(frozen=True)
class Running:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        """Run `command` inside the running container."""
        return subprocess.run(
            [tools.RUNC, "exec", self.name, *command],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
