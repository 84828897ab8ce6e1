"""How the deployment tests find their programs: skipped on a laptop, required in CI, helm unpacked."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.deploy import tools


def test_missing_image_tools_skip_outside_ci_with_the_command_that_installs_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(tools, "RUNC", "/nonexistent/runc")
    with pytest.raises(pytest.skip.Exception, match="apt-get install buildah skopeo umoci debootstrap runc"):
        tools.image_tools()


def test_without_root_the_image_tests_fail_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.fail.Exception, match="CI=true: building and running the image needs root"):
        tools.image_tools()


def test_helm_is_taken_from_the_layer_zip_inside_the_wheels_jsii_package(tmp_path: Path) -> None:
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as archive:
        archive.writestr("helm/helm", b"\x7fELF helm")
        archive.writestr("kubectl/kubectl", b"\x7fELF kubectl")
    package = io.BytesIO()
    with tarfile.open(fileobj=package, mode="w:gz") as tar:
        info = tarfile.TarInfo("package/lib/layer.zip")
        info.size = len(layer.getvalue())
        tar.addfile(info, io.BytesIO(layer.getvalue()))
    wheel = tmp_path / "layer-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("aws_cdk/layer/_jsii/layer@1.0.jsii.tgz", package.getvalue())
        archive.writestr("aws_cdk/layer/__init__.py", "")
    assert tools._helm_from_wheel(wheel) == b"\x7fELF helm"
