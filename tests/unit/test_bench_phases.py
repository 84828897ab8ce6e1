"""`python -m tests.bench --only`: which phases a key picks."""

from __future__ import annotations

from tests.bench.harness import chosen, scenarios

NAMES = [name for name, _ in scenarios()]


def picked(*keys: str) -> list[str]:
    return [name for name in NAMES if chosen(name, set(keys))]


def test_a_number_picks_that_phase_alone() -> None:
    assert picked("1") == ["1 ack throughput"]
    assert picked("10") == ["10 cpu per edit"]
    assert picked("1s") == ["1s ack throughput, S3 blobs"]


def test_a_shared_number_picks_each_phase_of_it_and_more_words_pick_one() -> None:
    assert picked("8") == ["8 postgres", "8 redis sink"]
    assert picked("8 redis") == ["8 redis sink"]
    assert picked("1", "3") == ["1 ack throughput", "3 completions"]


def test_part_of_a_word_picks_nothing() -> None:
    assert picked("8 red") == [] and picked("ack") == []
