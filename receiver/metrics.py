"""Prometheus metrics, with prometheus-client: what each process counts of its own work (counters and
histograms; summed over replicas they count everything once), and gauges of the shared store (jobs
per state, the outbox per sink), which only one process reports (see `Store.figures`).

The processes of a multi-process `serve` run in prometheus-client's multiprocess mode: the supervisor
names a directory of its own in `PROMETHEUS_MULTIPROC_DIR`, each process writes its values to files
there, and whichever web process answers `/metrics` adds up every process's. The store's gauges are
then the figures read last by any of them (`livemostrecent`); a worker process, which answers no
scrape, reads them every `figures_ttl_s` (`report_figures`).

Every name starts with `kontext_receiver_`; the README lists them all.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection
from typing import Final

import anyio
import structlog
from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from receiver.errors import StoreUnavailable
from receiver.models import Job, JobState, Transition
from receiver.stores import Store, StoreFigures

__all__ = ["CONTENT_TYPE", "MULTIPROCESS_DIR", "Metrics", "Step"]

log = structlog.get_logger("receiver.metrics")

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's: set, every value goes to a file there
MIN_REPORT_EVERY_S = 1.0

_NS = "kontext_receiver"
# Seconds: from a fast loopback download or submit to BFL's slowest minutes.
_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_BYTES = tuple(float(2**n) for n in range(14, 27, 2))  # 16 KiB to 64 MiB
_URL_LEFT = (0, 30, 60, 120, 180, 300, 420, 540, 600)  # BFL's URLs live 10 minutes


class Step:
    """A lifecycle step that notes the state change it makes (see `Metrics.count`)."""

    def __init__(self, change: Callable[[Job], Transition | None]) -> None:
        self.change = change
        self.states: tuple[JobState, JobState] | None = None

    def __call__(self, job: Job) -> Transition | None:
        transition = self.change(job)
        self.states = (job.state, transition.job.state) if transition is not None else None
        return transition


class Metrics:
    """One registry per app, so that several apps in one process (tests, the demo) never clash. The
    store's gauges are read from the store at most every `figures_ttl_s`, whatever the scrape rate.
    In multiprocess mode (`MULTIPROCESS_DIR` set) `/metrics` shows what every process wrote there."""

    def __init__(self, figures_ttl_s: float = 10.0) -> None:
        self.figures_ttl_s = figures_ttl_s
        self._figures_read_at = -float("inf")  # monotonic
        self._reading = anyio.Lock()
        self._reported: set[tuple[Gauge, str]] = set()  # the store's gauges this process set last
        self.registry = CollectorRegistry()
        shared_dir = os.environ.get(MULTIPROCESS_DIR)
        self.multiprocess = bool(shared_dir)
        self.exposed = self.registry  # what `/metrics` shows
        if shared_dir:
            self.exposed = CollectorRegistry()
            MultiProcessCollector(self.exposed, path=shared_dir)  # type: ignore[no-untyped-call]
        r = self.registry
        self.edits = Counter(f"{_NS}_edits", "Edits accepted (POST /v1/edits, not replays)", registry=r)
        self.webhooks = Counter(
            f"{_NS}_webhooks", "BFL webhooks answered, by outcome", ["outcome"], registry=r
        )
        self.transitions = Counter(
            f"{_NS}_job_transitions", "Job state changes written", ["from_state", "to_state"], registry=r
        )
        self.job_step_crashes = Counter(
            f"{_NS}_job_step_crashes",
            "Unexpected errors while handling one job (retried for it alone), by stage",
            ["stage"],
            registry=r,
        )
        self.submits = Counter(f"{_NS}_submits", "Submits to BFL, by outcome", ["outcome"], registry=r)
        self.submit_seconds = Histogram(
            f"{_NS}_submit_seconds", "Time BFL took to answer a submit", buckets=_LATENCY, registry=r
        )
        self.polls = Counter(
            f"{_NS}_polls", "get_result calls by the reconciler, by report", ["status"], registry=r
        )
        self.downloads = Counter(f"{_NS}_downloads", "Result downloads, by outcome", ["outcome"], registry=r)
        self.download_seconds = Histogram(
            f"{_NS}_download_seconds", "Time to fetch and store a result image", buckets=_LATENCY, registry=r
        )
        self.download_bytes = Histogram(
            f"{_NS}_download_bytes", "Size of the result images stored", buckets=_BYTES, registry=r
        )
        self.input_downloads = Counter(
            f"{_NS}_input_downloads",
            "Input images given by URL (POST /v1/edits), by outcome",
            ["outcome"],
            registry=r,
        )
        self.input_download_bytes = Histogram(
            f"{_NS}_input_download_bytes",
            "Size of the input images given by URL stored",
            buckets=_BYTES,
            registry=r,
        )
        self.sample_url_left = Histogram(
            f"{_NS}_sample_url_remaining_seconds",
            "Lifetime its signed URL had left when a result download started",
            buckets=_URL_LEFT,
            registry=r,
        )
        self.deliveries = Counter(
            f"{_NS}_deliveries", "Event deliveries, by sink and outcome", ["sink", "outcome"], registry=r
        )
        self.credits = Counter(
            f"{_NS}_credits",
            "Credits of the edits that reached their outcome (as BFL charged them), by model and outcome",
            ["model", "outcome"],
            registry=r,
        )
        self.end_to_end_seconds = Histogram(
            f"{_NS}_end_to_end_seconds",
            "From BFL finishing a task to its event delivered to a sink",
            ["sink"],
            buckets=_LATENCY,
            registry=r,
        )
        # Figures of the whole store, which every process reading them sees alike: the last one read.
        latest: Final = "livemostrecent"
        self.jobs = Gauge(
            f"{_NS}_jobs", "Jobs in the store, by state", ["state"], registry=r, multiprocess_mode=latest
        )
        self.outbox_backlog = Gauge(
            f"{_NS}_outbox_backlog",
            "Events not yet delivered to a sink",
            ["sink"],
            registry=r,
            multiprocess_mode=latest,
        )
        self.outbox_oldest_seconds = Gauge(
            f"{_NS}_outbox_oldest_age_seconds",
            "Age of the oldest event not yet delivered",
            ["sink"],
            registry=r,
            multiprocess_mode=latest,
        )

    def count(self, step: Step) -> None:
        """Count the state change `step` made, once the store has written it."""
        if step.states is not None and step.states[0] is not step.states[1]:
            self.transitions.labels(step.states[0].value, step.states[1].value).inc()

    def count_credits(self, job: Job) -> None:
        """Count what a job that has just reached its outcome cost."""
        if job.outcome is not None:
            self.credits.labels(job.request.model, job.outcome.value).inc(
                job.cost.credits if job.cost else 0.0
            )

    async def render(self, store: Store, sinks: Collection[str], now: float) -> bytes:
        """The text format of every metric, the store's gauges refreshed when they are older than
        `figures_ttl_s`."""
        async with self._reading:  # one read of the store for scrapes arriving together
            if time.monotonic() - self._figures_read_at >= self.figures_ttl_s:
                await self._read_figures(store, sinks, now)
        return generate_latest(self.exposed)

    async def report_figures(self, store: Store, sinks: Collection[str], clock: Callable[[], float]) -> None:
        """Read the store's figures every `figures_ttl_s` (at least every second), for the processes
        that write them in multiprocess mode without answering scrapes themselves."""
        while True:
            try:
                async with self._reading:
                    await self._read_figures(store, sinks, clock())
            except Exception:  # the counters go on; the figures are read again next time
                log.exception("metrics.figures_failed")
            await anyio.sleep(max(self.figures_ttl_s, MIN_REPORT_EVERY_S))

    async def _read_figures(self, store: Store, sinks: Collection[str], now: float) -> None:
        try:
            figures = await store.figures()
        except StoreUnavailable:  # the counters matter most in an outage: show them without
            figures = None
        self._show_figures(figures, sinks, now)
        self._figures_read_at = time.monotonic()

    def _show_figures(self, figures: StoreFigures | None, sinks: Collection[str], now: float) -> None:
        """The store's gauges from `figures`, or none when another process reports them."""
        values: dict[tuple[Gauge, str], float] = {}
        if figures is not None:
            for state in JobState:
                values[self.jobs, state.value] = figures.jobs.get(state, 0)
            for sink in {*sinks, *figures.outbox}:
                backlog, oldest = figures.outbox.get(sink, (0, now))
                values[self.outbox_backlog, sink] = backlog
                values[self.outbox_oldest_seconds, sink] = max(0.0, now - oldest)
        if self.multiprocess:
            # No value can be taken out of a process's file: those it no longer reports go to 0, once
            # (another process may have reported since).
            for gauge, label in self._reported - values.keys():
                gauge.labels(label).set(0)
        else:
            for gauge in (self.jobs, self.outbox_backlog, self.outbox_oldest_seconds):
                gauge.clear()
        for (gauge, label), value in values.items():
            gauge.labels(label).set(value)
        self._reported = set(values)
