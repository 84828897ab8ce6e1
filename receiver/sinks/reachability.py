"""Whether each sink can be reached, for `/readyz` and `/v1/overview`: each sink is pinged at most once
per `ttl_s`, however many probes and dashboards ask, and callers asking meanwhile share the ping."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import anyio

from receiver.sinks.base import Sink

Answer = dict[str, object]  # {"reachable": True} or {"reachable": False, "error": "..."}

TTL_S = 5.0
# Short, so `/readyz` answers well within a readiness probe's timeout even while a broker hangs.
PING_TIMEOUT_S = 0.5


async def ping(sink: Sink, timeout_s: float = PING_TIMEOUT_S) -> Answer:
    """Whether `sink` answered a ping within `timeout_s`, and the error if not."""
    try:
        with anyio.fail_after(timeout_s):
            await sink.ping()
    except Exception as exc:  # any failure to reach a sink is reported, never raised
        return {"reachable": False, "error": f"{type(exc).__name__}: {exc}".rstrip(": ")}
    return {"reachable": True}


class Reachability:
    """Each sink's last answer, kept `ttl_s` seconds of `clock`."""

    def __init__(
        self,
        sinks: Mapping[str, Sink],
        *,
        ttl_s: float = TTL_S,
        timeout_s: float = PING_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sinks = sinks
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.clock = clock
        self._answers: dict[str, tuple[float, Answer]] = {}  # sink -> (when answered, answer)
        self._pinging: dict[str, anyio.Event] = {}

    async def report(self) -> dict[str, Answer]:
        """Every sink by name, pinged again where its answer is older than `ttl_s`."""
        answers: dict[str, Answer] = {}

        async def one(name: str) -> None:
            answers[name] = await self._answer(name)

        async with anyio.create_task_group() as tg:
            for name in self.sinks:
                tg.start_soon(one, name)
        return dict(sorted(answers.items()))

    async def _answer(self, name: str) -> Answer:
        while True:
            known = self._answers.get(name)
            if known is not None and self.clock() - known[0] < self.ttl_s:
                return known[1]
            pinging = self._pinging.get(name)
            if pinging is None:
                break
            await pinging.wait()  # then the answer it got, or (if it was cancelled) a ping of our own
        done = self._pinging[name] = anyio.Event()
        try:
            answer = await ping(self.sinks[name], self.timeout_s)
            self._answers[name] = (self.clock(), answer)
            return answer
        finally:
            del self._pinging[name]
            done.set()
