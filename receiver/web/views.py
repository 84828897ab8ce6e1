"""How jobs look in API answers; pure."""

from __future__ import annotations

import dataclasses
from typing import Any

from receiver.models import Job, isotime
from receiver.stores import Delivery, DeliveryState


def job_view(job: Job, deliveries: list[Delivery] | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": job.id,
        "state": job.state.value,
        "outcome": job.outcome.value if job.outcome else None,
        "model": job.request.model,
        "prompt": job.request.prompt,
        "metadata": job.request.metadata,
        "bfl_task_id": job.bfl_task_id,
        "via": job.via.value if job.via else None,
        "image": dataclasses.asdict(job.image) if job.image else None,
        "inputs": [
            {
                "sha256": stored.sha256,
                "bytes": stored.bytes,
                "content_type": stored.content_type,
                "width": stored.width,
                "height": stored.height,
                "url": f"/v1/jobs/{job.id}/input?index={index}",
                "source_url": stored.source_url,
            }
            for index, stored in enumerate(job.inputs)
        ],
        "error": job.error,
        "cost": dataclasses.asdict(job.cost) if job.cost else None,
        "hold": job.hold,
        "created_at": isotime(job.created_at),
        "timings": {
            "submitted_at": isotime(job.submitted_at),
            "bfl_finished_at": isotime(job.bfl_finished_at),
            "received_at": isotime(job.received_at),
            "stored_at": isotime(job.stored_at),
            "finished_at": isotime(job.finished_at),
            "published_at": isotime(job.published_at),
        },
        "links": {"self": f"/v1/jobs/{job.id}"}
        | ({"image": f"/v1/jobs/{job.id}/image"} if job.image else {})
        | ({"input": f"/v1/jobs/{job.id}/input"} if job.inputs else {}),
    }
    if deliveries is not None:
        view["deliveries"] = [
            {
                "sink": d.sink,
                "state": d.state.value,
                "attempts": d.attempts,
                "last_error": d.last_error,
                "delivered_at": isotime(d.delivered_at),
                "next_attempt_at": isotime(d.next_at) if d.state is DeliveryState.PENDING else None,
            }
            for d in deliveries
        ]
    return view
