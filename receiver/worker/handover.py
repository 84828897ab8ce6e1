"""What the HTTP side may tell the background work, and ask of it: all the web handlers know of it."""

from __future__ import annotations

from contextlib import AbstractContextManager
from enum import StrEnum
from typing import Protocol

from receiver.models import Job


class Work(StrEnum):
    """The background loops, each woken when there may be work for it."""

    SUBMIT = "submit"
    FETCH = "fetch"
    PUBLISH = "publish"
    RECONCILE = "reconcile"


class Handover(Protocol):
    @property
    def ready(self) -> bool:
        """False from the moment the process is told to stop."""

    def answering_webhook(self) -> AbstractContextManager[None]:
        """Held while a webhook is answered; background work defers to it."""

    def can_take_download(self) -> bool:
        """Room to take a received job straight into this process's downloads."""

    def take_download(self, job: Job) -> None:
        """Fetch `job` (claimed by the caller) now, without looking for it in the store."""

    def wake(self, *work: Work) -> None:
        """There may be new work for these loops."""
