"""The official BFL client (`blackforest`, sync, polling) works against the simulator unchanged."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from receiver.settings import SimSettings
from receiver.simulator import create_sim_app
from tests.servers import serve, wait_until

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # blackforest's models use pydantic v1 idioms
    from blackforest import BFLClient, BFLError
    from blackforest.types.general.client_config import ClientConfig

KEY = "bfl-key"
PROMPT = "Change the car color to red"


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with serve(create_sim_app(SimSettings(api_keys=(KEY,), latency_s=0.2))) as url:
        yield url


@pytest.fixture
def car(tmp_path: Path) -> Path:
    path = tmp_path / "car.png"
    Image.new("RGB", (640, 480), (200, 200, 200)).save(path)
    return path


def test_sync_generate_polls_until_ready_and_the_sample_downloads(sim_url: str, car: Path) -> None:
    client = BFLClient(KEY, base_url=sim_url)
    config = ClientConfig(sync=True, polling_interval=0.1, timeout=10)

    # blackforest reads and base64-encodes a file path given as input_image.
    response = client.generate(
        "flux-kontext-pro", {"prompt": PROMPT, "input_image": str(car), "seed": 7}, config
    )
    sample = httpx.get(response.result["sample"])

    assert (response.result["prompt"], response.result["seed"]) == (PROMPT, 7)
    assert sample.status_code == 200
    assert sample.headers["content-type"] == "image/png"  # blackforest asks for png by default
    assert Image.open(io.BytesIO(sample.content)).size == (1184, 896)
    described = httpx.get(f"{sim_url}/_sim/tasks/{response.id}").json()
    assert described["get_result_calls"] >= 2  # polled while Pending, then once Ready


def test_async_generate_returns_the_polling_url_the_client_then_follows(sim_url: str, car: Path) -> None:
    client = BFLClient(KEY, base_url=sim_url)

    submitted = client.generate(
        "flux-kontext-pro",
        {"prompt": PROMPT, "input_image": str(car), "output_format": "jpeg"},
        ClientConfig(),
    )
    wait_until(lambda: client.get_task_status(submitted.id).status == "Ready", 5, "the task to be ready")
    status = client.get_task_status(submitted.id)

    assert submitted.polling_url == f"{sim_url}/v1/get_result?id={submitted.id}"
    assert status.result["sample"].startswith(f"{sim_url}/results/{submitted.id}/sample.jpeg?")


def test_a_wrong_key_surfaces_as_a_client_error(sim_url: str, car: Path) -> None:
    client = BFLClient("not-the-key", base_url=sim_url)

    with pytest.raises(BFLError, match="401"):
        client.generate("flux-kontext-pro", {"prompt": PROMPT, "input_image": str(car)}, ClientConfig())
