"""schemathesis with every check against the receiver's own /openapi.json: 0 failures.

The receiver serves HTTP only (no background loops), so nothing it accepts is sent upstream; every
request goes to loopback. Image URLs in the bodies are pointed at a loopback image host (see the hooks),
the only host RECEIVER_INPUT_HOSTS names: any other URL is refused before it is looked up.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from receiver.web.app import create_app
from tests.images import encode_image
from tests.integration.stack import TOKEN, receiver_settings
from tests.schemathesis_cli import run_schemathesis
from tests.servers import free_port, serve

SEED = 20261201
MAX_EXAMPLES = 60
ROOT = Path(__file__).parents[2]


def image_host() -> Starlette:
    png = encode_image("PNG", (40, 24))
    return Starlette(routes=[Route("/{path:path}", lambda request: Response(png, media_type="image/png"))])


def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    port = free_port()
    images_port = free_port()
    # BFL is never called: the app runs without its background loops. Port 9 (discard) is a stand-in.
    settings = receiver_settings(
        tmp_path, "http://127.0.0.1:9", port, input_hosts=(f"127.0.0.1:{images_port}",)
    )
    with (
        serve(image_host(), port=images_port) as images_url,
        serve(create_app(settings, workers=False), port=port) as url,
    ):
        # Run from a scratch folder: schemathesis keeps a cache in its working directory.
        result = run_schemathesis(
            f"{url}/openapi.json",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            "--request-timeout",
            "30",
            # An event stream never ends; tests/integration/test_events.py covers it.
            "--exclude-path",
            "/v1/events",
            seed=SEED,
            max_examples=MAX_EXAMPLES,
            cwd=tmp_path,
            env={
                "SCHEMATHESIS_HOOKS": "tests.api.schemathesis_hooks",
                "PYTHONPATH": str(ROOT),
                "TEST_INPUT_IMAGE_URL": f"{images_url}/input.png",
            },
        )
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
