"""The loop a backend runs without the receiver, as BFL's guide shows it: submit an edit, then
`sleep(interval)` and `GET polling_url` until the status is `Ready`. At most `max_active` edits are
active at once (BFL's limit), the rest wait their turn; a 429 is waited out and tried again."""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class Polled:
    prompt: str
    task_id: str
    known_at: float  # wall-clock time the first poll that saw Ready was answered
    status: str
    polls: int


async def poll_edit(
    client: httpx.AsyncClient, prompt: str, image: str, interval: float, slots: asyncio.Semaphore
) -> Polled:
    async with slots:
        while True:
            response = await client.post(
                "/v1/flux-kontext-pro", json={"prompt": prompt, "input_image": image}
            )
            if response.status_code != 429:
                break
            await asyncio.sleep(1.0)
        response.raise_for_status()
        submitted = response.json()
        polls = 0
        while True:
            await asyncio.sleep(interval)
            answer = await client.get(submitted["polling_url"])
            polls += 1
            body = answer.json()
            if answer.status_code == 200 and body["status"] not in ("Pending", "Processing"):
                return Polled(prompt, submitted["id"], time.time(), body["status"], polls)


async def poll_all(
    sim_url: str, key: str, prompts: list[str], image: bytes, interval: float, max_active: int
) -> list[Polled]:
    encoded = base64.b64encode(image).decode()
    slots = asyncio.Semaphore(max_active)
    limits = httpx.Limits(max_connections=max_active, max_keepalive_connections=max_active)
    async with httpx.AsyncClient(
        base_url=sim_url, headers={"x-key": key}, limits=limits, timeout=30
    ) as client:
        return await asyncio.gather(*(poll_edit(client, p, encoded, interval, slots) for p in prompts))
