"""`/metrics` across one edit: every counter, histogram and gauge moves as the edit goes through."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.stack import stack

Samples = Mapping[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    answer = httpx.get(f"{url}/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((f"kontext_receiver_{name}", frozenset(labels.items())), 0.0)


def test_metrics_change_as_expected_across_a_simulated_edit(tmp_path: Path) -> None:
    with stack(tmp_path, metrics_store_ttl_s=0.0) as running:  # the store's gauges read at each scrape
        before = scrape(running.url)
        job_id = running.submit()["id"]
        job = running.wait_state(job_id, "published")
        after = scrape(running.url)
    sink = job["deliveries"][0]["sink"]

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("edits_total") == 1
    assert grew("webhooks_total", outcome="accepted") == 1
    assert grew("submits_total", outcome="accepted") == 1
    assert grew("submit_seconds_count") == 1
    for from_state, to_state in [
        ("created", "submitted"),
        ("submitted", "received"),
        ("received", "stored"),
        ("stored", "published"),
    ]:
        assert grew("job_transitions_total", from_state=from_state, to_state=to_state) == 1
    assert grew("downloads_total", outcome="stored") == 1
    assert grew("download_seconds_count") == 1
    assert grew("download_bytes_count") == 1 and grew("download_bytes_sum") == job["image"]["bytes"]
    assert grew("sample_url_remaining_seconds_count") == 1
    assert 0 < grew("sample_url_remaining_seconds_sum") <= 600  # the simulator's URLs live 10 minutes
    assert grew("deliveries_total", sink=sink, outcome="delivered") == 1
    assert grew("end_to_end_seconds_count", sink=sink) == 1
    assert not any(name == "kontext_receiver_polls_total" for name, _ in after)  # the webhook came
    assert value(before, "jobs", state="published") == 0 and value(after, "jobs", state="published") == 1
    assert value(after, "jobs", state="created") == 0
    assert value(after, "outbox_backlog", sink=sink) == 0
    assert value(after, "outbox_oldest_age_seconds", sink=sink) == 0
