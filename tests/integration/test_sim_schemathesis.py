"""Schemathesis against the simulator in its seed flavour, with the seed spec and every check.

The spec is a copy of BFL's seed spec (`schemathesis/seed-openapi.yml`); `schemathesis.toml` beside it
says why a schema-valid request may be answered 400. The run is bounded and seeded, so it repeats.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from receiver.settings import SimSettings
from receiver.simulator import create_sim_app
from tests.images import base64_image
from tests.schemathesis_cli import run_schemathesis
from tests.servers import serve

HERE = Path(__file__).parent / "schemathesis"
KEY = "schemathesis-key"
SEED = 20261201
MAX_EXAMPLES = 40


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    settings = SimSettings(
        api_keys=(KEY,), latency_s=1.0, max_active=1_000_000, max_active_kontext_max=1_000_000
    )
    with serve(create_sim_app(settings)) as url:
        yield url


def test_the_seed_flavour_passes_every_schemathesis_check_against_the_seed_spec(
    sim_url: str, tmp_path: Path
) -> None:
    submitted = httpx.post(
        f"{sim_url}/v1/flux-kontext-pro",
        json={"prompt": "Change the car color to red", "image": base64_image()},
        headers={"x-key": KEY},
    )
    assert submitted.status_code == 200, submitted.text
    run = run_schemathesis(
        str(HERE / "seed-openapi.yml"),
        "--url",
        f"{sim_url}/v1",
        "--header",
        f"X-Key: {KEY}",
        seed=SEED,
        max_examples=MAX_EXAMPLES,
        cwd=tmp_path,
        env={"SIM_TASK_ID": submitted.json()["id"]},
        config=HERE / "schemathesis.toml",
        timeout=300,
    )

    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout or " passed" in run.stdout, run.stdout[-3000:]
