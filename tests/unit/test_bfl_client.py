"""The BFL client over httpx's MockTransport (BFL's answers made up, our code real)."""

from __future__ import annotations

import httpx
import pytest

from receiver.bfl.client import BflClient
from receiver.bfl.sansio import Report
from receiver.errors import UpstreamError

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def client(content: bytes, status: int = 200) -> BflClient:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, content=content))
    return BflClient(httpx.AsyncClient(transport=transport), "https://api.bfl.test", "key")


@pytest.mark.parametrize(
    "content",
    [
        b'{"id": "t", "status": "Ready", "result": {"sample": "https://x.bfl.ai/a.jpg", "end_time": NaN}}',
        b'{"id": "t", "status": "Ready", "result": {"sample": "https://x.bfl.ai/a.jpg", "seed": Infinity}}',
        b"not json",
    ],
)
async def test_a_result_that_is_not_standard_json_is_asked_again_not_stored(content: bytes) -> None:
    with pytest.raises(UpstreamError) as caught:
        await client(content).get_result("t")
    assert caught.value.retryable


async def test_an_error_page_keeps_its_text_as_detail() -> None:
    with pytest.raises(UpstreamError) as caught:
        await client(b"<html>bad gateway</html>", 502).get_result("t")
    assert caught.value.status == 502 and "bad gateway" in caught.value.detail


async def test_a_standard_answer_is_read() -> None:
    report = await client(b'{"id": "t", "status": "Pending"}').get_result("t")
    assert report.report is Report.RUNNING
