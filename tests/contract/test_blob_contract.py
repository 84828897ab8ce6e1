"""One contract for every image store, subclassed per backend; and the JSON Lines event file sink."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from receiver.blobs import BlobStore
from receiver.blobs.local import LocalBlobStore
from receiver.blobs.memory import MemoryBlobStore
from receiver.blobs.s3 import S3BlobStore
from receiver.errors import ConfigError, NotFound
from receiver.models import Event
from receiver.sinks.file import FileSink
from tests.s3 import S3Server

pytestmark = pytest.mark.anyio


class StreamBroke(Exception):
    pass


async def stream(*chunks: bytes, fail: bool = False) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
    if fail:
        raise StreamBroke("connection reset mid-download")


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


async def read_all(blobs: BlobStore, key: str) -> bytes:
    return b"".join([chunk async for chunk in blobs.read(key)])


class BlobContract:
    """Every backend's test class subclasses this and provides an open store as the `blobs` fixture."""

    async def test_put_then_read_round_trips(self, blobs: BlobStore) -> None:
        data = b"\x89PNG\r\n" + b"rest" * 100_000
        stored = await blobs.put("job-1.png", stream(b"\x89PNG", b"\r\n", b"rest" * 100_000), "image/png")
        assert "job-1.png" in stored.url
        assert (stored.sha256, stored.size) == (hashlib.sha256(data).hexdigest(), len(data))
        assert await read_all(blobs, "job-1.png") == data

    async def test_put_overwrites_in_place(self, blobs: BlobStore) -> None:
        first = await blobs.put("job-1.jpg", stream(b"first"), "image/jpeg")
        second = await blobs.put("job-1.jpg", stream(b"second"), "image/jpeg")
        assert first.url == second.url and second.sha256 == hashlib.sha256(b"second").hexdigest()
        assert await read_all(blobs, "job-1.jpg") == b"second"

    async def test_reading_a_missing_blob_is_not_found(self, blobs: BlobStore) -> None:
        with pytest.raises(NotFound):
            await read_all(blobs, "job-404.png")

    async def test_a_stream_that_breaks_stores_nothing(self, blobs: BlobStore) -> None:
        with pytest.raises(StreamBroke):
            await blobs.put("job-1.png", stream(b"half an ", b"image", fail=True), "image/png")
        with pytest.raises(NotFound):
            await read_all(blobs, "job-1.png")

    async def test_a_stream_that_breaks_keeps_the_earlier_blob(self, blobs: BlobStore) -> None:
        await blobs.put("job-1.png", stream(b"complete image"), "image/png")
        with pytest.raises(StreamBroke):
            await blobs.put("job-1.png", stream(b"half an ", fail=True), "image/png")
        assert await read_all(blobs, "job-1.png") == b"complete image"

    async def test_a_range_reads_just_those_bytes(self, blobs: BlobStore) -> None:
        data = bytes(range(256)) * 4096  # 1 MiB, so a range spans several chunks of any backend
        await blobs.put("job-1.png", stream(data), "image/png")
        assert b"".join([c async for c in blobs.read("job-1.png", 1000, 700_001)]) == data[1000:700_001]
        assert b"".join([c async for c in blobs.read("job-1.png", len(data) - 5)]) == data[-5:]
        assert b"".join([c async for c in blobs.read("job-1.png", 0, 1)]) == data[:1]

    async def test_delete_removes_and_skips_what_is_not_there(self, blobs: BlobStore) -> None:
        await blobs.put("job-1.png", stream(b"one"), "image/png")
        await blobs.put("job-2.png", stream(b"two"), "image/png")
        await blobs.delete(["job-1.png", "job-404.png"])
        with pytest.raises(NotFound):
            await read_all(blobs, "job-1.png")
        assert await read_all(blobs, "job-2.png") == b"two"
        await blobs.delete([])


class TestMemoryBlobStore(BlobContract):
    @pytest.fixture
    async def blobs(self, tmp_path: Path) -> AsyncIterator[BlobStore]:
        async with MemoryBlobStore() as blobs:
            yield blobs


class TestLocalBlobStore(BlobContract):
    @pytest.fixture
    async def blobs(self, tmp_path: Path) -> AsyncIterator[BlobStore]:
        async with LocalBlobStore(tmp_path / "images") as blobs:
            yield blobs

    async def test_url_is_the_file_and_no_temp_file_is_left(self, tmp_path: Path) -> None:
        async with LocalBlobStore.from_url(f"file://{tmp_path}/images") as blobs:
            url = (await blobs.put("job-1.png", stream(b"image"), "image/png")).url
            with pytest.raises(StreamBroke):
                await blobs.put("job-2.png", stream(b"ima", fail=True), "image/png")
            with pytest.raises(StreamBroke):
                await blobs.put("job-1.png", stream(b"ima", fail=True), "image/png")
        final = tmp_path / "images" / "job-1.png"
        assert url == final.as_uri()
        assert final.read_bytes() == b"image"
        assert files_under(tmp_path / "images") == ["job-1.png"]

    @pytest.mark.parametrize("key", ["../escaped.png", "sub/dir.png", "/etc/escaped.png", "..", ""])
    async def test_a_key_outside_the_folder_is_refused(self, tmp_path: Path, key: str) -> None:
        async with LocalBlobStore(tmp_path / "images") as blobs:
            with pytest.raises(NotFound):
                await blobs.put(key, stream(b"image"), "image/png")
            with pytest.raises(NotFound):
                await read_all(blobs, key)
        assert files_under(tmp_path) == ["images"]

    def test_from_url_resolves_a_relative_folder(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        assert LocalBlobStore.from_url("file://data/images").root == tmp_path.resolve() / "data" / "images"

    async def test_a_relative_root_works(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)
        async with LocalBlobStore(Path("images")) as blobs:
            await blobs.put("job-1.png", stream(b"image"), "image/png")
            assert await read_all(blobs, "job-1.png") == b"image"


class TestS3BlobStore(BlobContract):
    """Against moto's S3 server on loopback, in a bucket of each test's own."""

    @pytest.fixture
    def bucket(self, s3: S3Server) -> str:
        return s3.new_bucket()

    @pytest.fixture
    async def blobs(self, s3: S3Server, bucket: str) -> AsyncIterator[BlobStore]:
        async with S3BlobStore.from_url(s3.url(bucket)) as blobs:
            yield blobs

    async def test_url_is_the_object_and_the_content_type_is_kept(
        self, s3: S3Server, bucket: str, blobs: BlobStore
    ) -> None:
        stored = await blobs.put("job-1.png", stream(b"\x89PNG image"), "image/png")
        assert stored.url == f"s3://{bucket}/images/job-1.png"
        head = s3.client.head_object(Bucket=bucket, Key="images/job-1.png")
        assert head["ContentType"] == "image/png" and head["ContentLength"] == len(b"\x89PNG image")
        assert s3.keys(bucket) == ["images/job-1.png"]  # the start-up probe is gone

    async def test_a_large_blob_goes_up_in_parts_and_comes_back_whole(
        self, s3: S3Server, bucket: str, blobs: BlobStore
    ) -> None:
        data = bytes(range(256)) * (48 * 1024)  # 12 MiB: three parts
        stored = await blobs.put(
            "job-1.png", stream(*(data[i : i + 65536] for i in range(0, len(data), 65536))), "image/png"
        )
        assert (stored.sha256, stored.size) == (hashlib.sha256(data).hexdigest(), len(data))
        assert s3.read(bucket, "images/job-1.png") == data
        assert s3.client.head_object(Bucket=bucket, Key="images/job-1.png")["ETag"].endswith('-3"')

    async def test_a_large_stream_that_breaks_leaves_no_incomplete_upload(
        self, s3: S3Server, bucket: str, blobs: BlobStore
    ) -> None:
        chunks = [bytes([n]) * 1024 * 1024 for n in range(12)]  # past two parts, then the stream breaks
        with pytest.raises(StreamBroke):
            await blobs.put("job-1.png", stream(*chunks, fail=True), "image/png")
        assert s3.keys(bucket) == [] and s3.incomplete_uploads(bucket) == []

    async def test_a_cancelled_upload_leaves_nothing(
        self, s3: S3Server, bucket: str, blobs: BlobStore
    ) -> None:
        started = anyio.Event()

        async def endless() -> AsyncIterator[bytes]:
            for n in range(100):
                if n == 8:
                    started.set()
                yield b"x" * 1024 * 1024
            await anyio.sleep_forever()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(blobs.put, "job-1.png", endless(), "image/png")
            await started.wait()
            tasks.cancel_scope.cancel()
        assert s3.keys(bucket) == [] and s3.incomplete_uploads(bucket) == []

    async def test_start_up_fails_clearly_without_the_bucket(self, s3: S3Server) -> None:
        with pytest.raises(ConfigError, match=r"not writable.*the bucket must exist"):
            async with S3BlobStore.from_url(s3.url("no-such-bucket")):
                pass

    async def test_start_up_fails_clearly_with_half_a_credential(
        self, s3: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "only-half-a-credential")
        with pytest.raises(ConfigError, match=f"s3://{bucket}/images"):
            async with S3BlobStore.from_url(s3.url(bucket)):
                pass


# --- the file sink -----------------------------------------------------------------------------------------


def event(n: int, padding: int = 0) -> Event:
    job_id = f"job-{n:03d}"
    return Event(
        id=job_id,
        source="urn:kontext-receiver:test",
        type="kontext.edit.completed",
        subject=job_id,
        time="2023-11-14T22:13:50.000Z",
        dataref=f"file:///images/{job_id}.png",
        data={
            "job_id": job_id,
            "outcome": "completed",
            "metadata": {"note": "\u00e9t\u00e9", "pad": "x" * padding},
        },
    )


def read_lines(path: Path) -> list[dict[str, object]]:
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    return [json.loads(line) for line in raw.decode("utf-8").splitlines()]


async def test_file_sink_appends_one_cloudevent_per_line(tmp_path: Path) -> None:
    path = tmp_path / "out" / "events.jsonl"
    async with FileSink.from_url(f"file://{path}") as sink:
        await sink.publish(event(1))
        await sink.publish(event(2))
    lines = read_lines(path)
    assert [Event.from_dict(line) for line in lines] == [event(1), event(2)]
    assert lines[0]["specversion"] == "1.0" and lines[0]["datacontenttype"] == "application/json"
    assert sink.name == f"file://{path}"


async def test_file_sink_keeps_what_was_there(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    for n in (1, 2):
        async with FileSink(path) as sink:
            await sink.publish(event(n))
    assert [line["id"] for line in read_lines(path)] == ["job-001", "job-002"]


async def test_concurrent_publishes_do_not_interleave(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    # Two sinks on one file stand in for two replicas; each event is large enough to need many pages.
    async with FileSink(path) as one, FileSink(path) as two, anyio.create_task_group() as tasks:
        for n in range(40):
            tasks.start_soon((one if n % 2 else two).publish, event(n, padding=100_000))
    lines = read_lines(path)
    assert sorted(str(line["id"]) for line in lines) == [f"job-{n:03d}" for n in range(40)]
    assert all(Event.from_dict(line) == event(int(str(line["id"])[4:]), padding=100_000) for line in lines)
