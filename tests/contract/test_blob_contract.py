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
from receiver.errors import NotFound
from receiver.models import Event
from receiver.sinks.file import FileSink

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
