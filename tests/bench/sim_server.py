"""The BFL simulator (`create_sim_app`) with a seeded duration per edit.

`SIM_LATENCY_S` is one duration for every task, which would make a polling loop's delay the same for
every edit (and an artefact of how that duration divides by the poll interval). Real tasks take
varying times, so this wrapper gives each edit the duration `BENCH_SIM_DURATIONS` (a JSON file of
prompt -> seconds) names for its prompt: the three runs of the upstream scenario see the same
durations whatever order their tasks are submitted in.

`python -m uvicorn --factory tests.bench.sim_server:create_app` with `BENCH_SIM_DURATIONS` and
`BENCH_SIM_KEY` set.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from starlette.applications import Starlette

from receiver.settings import SimSettings
from receiver.simulator import create_sim_app
from receiver.simulator.state import SimState, Submission, Task


def create_app() -> Starlette:
    durations: dict[str, float] = json.loads(Path(os.environ["BENCH_SIM_DURATIONS"]).read_text())
    settings = SimSettings(api_keys=(os.environ["BENCH_SIM_KEY"],), seed=20261121)
    app = create_sim_app(settings)
    with_durations(app.state.sim, durations)
    return app


def with_durations(state: SimState, durations: dict[str, float]) -> None:
    """Make each new task take the duration named for its prompt (the default latency otherwise).

    The simulator has no setting for this, so the task is adjusted as it is made, before it is
    recorded or counted as active."""
    make_task = state._new_task

    def new_task(submission: Submission, now: float) -> Task:
        task = make_task(submission, now)
        duration = durations.get(task.prompt)
        return task if duration is None else dataclasses.replace(task, ready_at=now + duration)

    state._new_task = new_task  # type: ignore[method-assign]
