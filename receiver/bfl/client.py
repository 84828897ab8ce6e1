"""A thin httpx adapter over `sansio`: submit an edit, ask for a task's result."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from receiver.bfl.sansio import Submitted, TaskReport, decode_json, parse_result, parse_submit
from receiver.catalog import ModelSpec
from receiver.errors import UpstreamError
from receiver.retry import parse_retry_after


class BflClient:
    def __init__(self, http: httpx.AsyncClient, base_url: str, api_key: str) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self._headers = {"x-key": api_key, "accept": "application/json"}

    async def submit(self, model: ModelSpec, body: dict[str, Any]) -> Submitted:
        response = await self._send("POST", self.base_url + model.path, json=body)
        try:
            return parse_submit(response.status_code, _json(response))
        except UpstreamError as exc:
            exc.retry_after = parse_retry_after(response.headers.get("retry-after"), time.time())
            raise

    async def get_result(self, task_id: str, polling_url: str | None = None) -> TaskReport:
        """Prefer the task's own `polling_url` (BFL routes tasks to regional hosts), but send our key
        only to BFL's hosts or the configured API host."""
        if polling_url and self._trusted(polling_url):
            response = await self._send("GET", polling_url)
        else:
            response = await self._send("GET", f"{self.base_url}/v1/get_result", params={"id": task_id})
        return parse_result(response.status_code, _json(response))

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self.http.request(method, url, headers=self._headers, **kwargs)
        except httpx.TransportError as exc:
            raise UpstreamError(0, f"{type(exc).__name__}: {exc}", retryable=True) from exc

    def _trusted(self, url: str) -> bool:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if host == urlsplit(self.base_url).hostname:
            return True
        return parts.scheme == "https" and (host == "bfl.ai" or host.endswith(".bfl.ai"))


def _json(response: httpx.Response) -> Any:
    try:
        return decode_json(response.content)
    except (ValueError, UnicodeDecodeError):
        if response.status_code == 200:  # a success we cannot read: ask again later
            raise UpstreamError(200, "answer is not standard JSON", retryable=True) from None
        return {"detail": response.text[:500]}
