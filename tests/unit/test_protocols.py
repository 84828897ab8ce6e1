"""Every backend implements its protocol: checked by mypy --strict, and at run time."""

from __future__ import annotations

import inspect

import pytest

from receiver.blobs import BlobStore
from receiver.blobs.local import LocalBlobStore
from receiver.blobs.memory import MemoryBlobStore
from receiver.sinks import Sink
from receiver.sinks.file import FileSink
from receiver.sinks.http import HttpSink
from receiver.sinks.stdout import StdoutSink
from receiver.stores import Store
from receiver.stores.memory import MemoryStore
from receiver.stores.postgres import PostgresStore
from receiver.stores.sqlite import SQLiteStore

# Assignments mypy checks against the protocols: a missing or misspelt method fails the type check.
STORES: list[type[Store]] = [MemoryStore, SQLiteStore, PostgresStore]
BLOB_STORES: list[type[BlobStore]] = [MemoryBlobStore, LocalBlobStore]
SINKS: list[type[Sink]] = [StdoutSink, FileSink, HttpSink]


@pytest.mark.parametrize(
    ("protocol", "backend"),
    [(Store, b) for b in STORES] + [(BlobStore, b) for b in BLOB_STORES] + [(Sink, b) for b in SINKS],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_backend_has_every_method_of_its_protocol(protocol: type, backend: type) -> None:
    wanted = {
        name for name, _ in inspect.getmembers(protocol, inspect.isfunction) if not name.startswith("_")
    }
    assert wanted <= set(dir(backend))
    assert callable(getattr(backend, "from_url", None))
