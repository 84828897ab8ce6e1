"""Images in S3 (moto's server on loopback): results stream into the bucket, inputs are kept beside
them, and any replica serves both; downloads that break or are refused leave nothing in the bucket."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from receiver.simulator import create_sim_app
from tests.images import encode_image
from tests.integration.processes import receiver_env
from tests.integration.stack import FAST_SIM, IMAGE_B64, Stack, receiver, stack
from tests.s3 import S3Server
from tests.servers import free_port, serve, wait_until
from tests.services import postgres_url

QUIET_SIM = dataclasses.replace(FAST_SIM, webhook_drop_rate=1.0)
PADDING = 12 * 1024 * 1024  # past two 5 MiB parts: these uploads are multipart


@pytest.fixture
def bucket(s3: S3Server) -> str:
    return s3.new_bucket()


def image_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.suffix in {".jpg", ".png", ".webp", ".part"}]


def served_like_stored(running: Stack, path: str, data: bytes, content_type: str) -> None:
    """`path` serves exactly `data`, whole and by ranges, with its sha256 as ETag."""
    whole = running.client.get(path)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == content_type and whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert whole.headers["content-length"] == str(len(data))
    current = running.client.get(path, headers={"If-None-Match": whole.headers["etag"]})
    assert current.status_code == 304 and current.content == b""
    assert current.headers["etag"] == whole.headers["etag"]
    stale = running.client.get(path, headers={"If-None-Match": '"another"'})
    assert stale.status_code == 200 and stale.content == data
    part = running.client.get(path, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
    tail = running.client.get(path, headers={"Range": "bytes=-7"})
    assert tail.status_code == 206 and tail.content == data[-7:]
    beyond = running.client.get(path, headers={"Range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(data)}"


def test_an_edit_stores_its_input_and_result_in_the_bucket(tmp_path: Path, s3: S3Server, bucket: str) -> None:
    with stack(tmp_path, blob_url=s3.url(bucket)) as running:
        job = running.submit()
        event = running.wait_event(job["id"])
        image = event["data"]["image"]
        key = f"images/{job['id']}.jpg"
        assert image["url"] == event["dataref"] == f"s3://{bucket}/{key}"
        stored = s3.read(bucket, key)
        assert hashlib.sha256(stored).hexdigest() == image["sha256"] and len(stored) == image["bytes"]
        served_like_stored(running, f"/v1/jobs/{job['id']}/image", stored, "image/jpeg")
        sent = base64.b64decode(IMAGE_B64)
        assert s3.read(bucket, f"images/{job['id']}.input-0.jpg") == sent
        served_like_stored(running, f"/v1/jobs/{job['id']}/input", sent, "image/jpeg")
    assert s3.keys(bucket) == [f"images/{job['id']}.input-0.jpg", key]
    assert image_files(tmp_path) == []


def test_retention_deletes_old_jobs_with_their_images_from_the_bucket(
    tmp_path: Path, s3: S3Server, bucket: str
) -> None:
    with stack(tmp_path, blob_url=s3.url(bucket), retention_days=1.5 / 86_400) as running:
        job_id = running.submit()["id"]
        assert running.wait_event(job_id)["data"]["image"]["url"].startswith(f"s3://{bucket}/")
        wait_until(lambda: running.client.get(f"/v1/jobs/{job_id}").status_code == 404, 15, "the purge")
        assert s3.keys(bucket) == []
        assert running.client.get(f"/v1/jobs/{job_id}/image").status_code == 404
        assert running.events()[0]["id"] == job_id  # what was published stays published


def test_an_edit_the_bucket_cannot_take_is_a_503_and_leaves_no_job(
    tmp_path: Path, s3: S3Server, bucket: str
) -> None:
    with stack(tmp_path, blob_url=s3.url(bucket)) as running:
        s3.client.delete_bucket(Bucket=bucket)  # gone after start-up checked it
        refused = running.post_edit({"prompt": "Change the car color to red", "image": IMAGE_B64})
        assert refused.status_code == 503 and f"s3://{bucket}/images" in refused.json()["detail"]
        assert running.jobs() == []


def test_a_missing_bucket_stops_start_up_with_a_clear_message(tmp_path: Path, s3: S3Server) -> None:
    env = receiver_env(
        "http://127.0.0.1:9", free_port(), tmp_path, RECEIVER_BLOB_URL=s3.url("no-such-bucket")
    )
    result = subprocess.run(
        [sys.executable, "-m", "receiver", "serve", "--port", env["RECEIVER_PUBLIC_URL"].rsplit(":", 1)[1]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "s3://no-such-bucket/images" in result.stderr and "the bucket must exist" in result.stderr


class Samples:
    """Result images that BFL would never send: one cut off half-way, one over the pixel cap."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.app = Starlette(routes=[Route("/{name}.png", self.serve)])

    async def serve(self, request: Request) -> StreamingResponse:
        name = request.path_params["name"]
        self.requests[name] = self.requests.get(name, 0) + 1
        if name == "cut":
            header = encode_image("PNG", (64, 48))
            return StreamingResponse(
                self.body(header, PADDING // 2), headers={"Content-Length": str(PADDING)}
            )
        return StreamingResponse(self.body(encode_image("PNG", (7000, 7000), "1"), PADDING))

    async def body(self, header: bytes, padding: int) -> AsyncIterator[bytes]:
        yield header
        for _ in range(padding // 65536):
            yield b"\0" * 65536


@pytest.mark.parametrize(
    ("sample", "outcome", "code"),
    [("cut", "expired", "download_failed"), ("huge", "failed", "sample_rejected")],
)
def test_a_broken_or_refused_download_leaves_nothing_in_the_bucket(
    tmp_path: Path, s3: S3Server, bucket: str, sample: str, outcome: str, code: str
) -> None:
    samples = Samples()
    with (
        serve(samples.app) as samples_url,
        stack(tmp_path, QUIET_SIM, blob_url=s3.url(bucket), give_up_after_s=1.0) as running,
    ):
        job_id = running.submit()["id"]
        task_id = running.wait_state(job_id, "submitted")["bfl_task_id"]
        body = {"task_id": task_id, "status": "SUCCESS", "result": {"sample": f"{samples_url}/{sample}.png"}}
        assert running.webhook(job_id, body).status_code == 200
        event = running.wait_event(job_id)
        assert event["data"]["outcome"] == outcome and event["data"]["error"]["code"] == code
        assert running.client.get(f"/v1/jobs/{job_id}/image").status_code == 404
    assert samples.requests[sample] >= 1
    assert s3.keys(bucket) == [f"images/{job_id}.input-0.jpg"]  # only the input image
    assert s3.incomplete_uploads(bucket) == []


@pytest.fixture
def shared_postgres() -> Iterator[str]:
    """A PostgreSQL URL with a schema of this test's own, dropped afterwards."""
    schema = f"s3_replicas_{uuid.uuid4().hex[:12]}"
    yield f"{postgres_url()}?schema={schema}"

    async def drop() -> None:
        conn = await asyncpg.connect(postgres_url())
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


def test_two_replicas_on_one_database_and_one_bucket_serve_each_others_images(
    tmp_path: Path, s3: S3Server, bucket: str, shared_postgres: str
) -> None:
    shared: dict[str, Any] = {"store_url": shared_postgres, "blob_url": s3.url(bucket)}
    with (
        serve(create_sim_app(FAST_SIM)) as sim_url,
        receiver(tmp_path / "a", sim_url, **shared) as a,
        receiver(tmp_path / "b", sim_url, **shared) as b,
    ):
        jobs = [(a, b, a.submit()["id"]) for _ in range(3)] + [(b, a, b.submit()["id"]) for _ in range(3)]
        for done_by, served_by, job_id in jobs:
            image = done_by.wait_state(job_id, "published")["image"]
            stored = s3.read(bucket, image["url"].removeprefix(f"s3://{bucket}/"))
            assert hashlib.sha256(stored).hexdigest() == image["sha256"]
            assert served_by.client.get(f"/v1/jobs/{job_id}/image").content == stored
            sent = base64.b64decode(IMAGE_B64)
            assert served_by.client.get(f"/v1/jobs/{job_id}/input").content == sent
        events = a.events() + b.events()
        assert sorted(e["id"] for e in events) == sorted(job_id for _, _, job_id in jobs)
    assert image_files(tmp_path) == []  # no image was written to local disk
