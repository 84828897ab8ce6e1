"""schemathesis's command line, as the API tests run it: every check, a fixed seed, bounded examples,
no example database, one worker, from a scratch folder (schemathesis keeps a cache in its working
directory)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_schemathesis(
    spec: str,
    *options: str,
    seed: int,
    max_examples: int,
    cwd: Path,
    env: dict[str, str] | None = None,
    config: Path | None = None,
    timeout: float = 540,
) -> subprocess.CompletedProcess[str]:
    """`st run SPEC --checks all ...` with `options` (e.g. `--url`, `--header`); never raises on failure."""
    config_options = ["--config-file", str(config)] if config else []
    command = [sys.executable, "-m", "schemathesis.cli", *config_options, "--no-color", "run", spec]
    command += ["--checks", "all", "--seed", str(seed), "--max-examples", str(max_examples)]
    command += ["--generation-database", "none", "--workers", "1", *options]
    return subprocess.run(
        command,
        env=os.environ | (env or {}),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
