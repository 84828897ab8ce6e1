"""Per-process slots: refused at once when all are held, given back however their holder ends."""

from __future__ import annotations

import pytest

from receiver.errors import Overloaded
from receiver.web.limits import Slots


def test_slots_refuse_one_more_holder_at_once_and_free_up_when_released() -> None:
    slots = Slots(2, "all 2 event streams are open")
    slots.acquire()  # a stream: held past the request's handler, until the response ends
    with slots.take(), pytest.raises(Overloaded, match="all 2 event streams are open"):
        slots.acquire()
    slots.acquire()
    slots.release()
    slots.release()
    assert slots.used == 0


def test_a_block_gives_its_slot_back_when_it_raises() -> None:
    slots = Slots(1, "busy")
    with pytest.raises(ValueError, match="invalid"), slots.take():
        raise ValueError("the body was invalid")
    with slots.take():
        assert slots.used == 1
