"""The `kontext-receiver` command, run as a real process."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.images import encode_image
from tests.integration.stack import TOKEN, Stack, stack
from tests.s3 import CREDENTIALS, S3Server
from tests.servers import free_port, wait_until


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "receiver", *args],
        cwd=cwd,
        env=clean_env() | (env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("RECEIVER_", "BFL_", "SIM_"))}


def store_env(running: Stack) -> dict[str, str]:
    return {
        "RECEIVER_STORE_URL": running.settings.store_url,
        "RECEIVER_SINKS": ",".join(running.settings.sinks),
    }


def test_demo_prints_a_completed_event_whose_image_matches(tmp_path: Path) -> None:
    result = run("demo", "--data", str(tmp_path / "data"), cwd=tmp_path, env={"SIM_LATENCY_S": "0.2"})
    assert result.returncode == 0, result.stderr
    event = json.loads(result.stdout[: result.stdout.index("\n}\n") + 2])
    assert event["type"] == "kontext.edit.completed"
    image = event["data"]["image"]
    assert (
        hashlib.sha256(Path(image["url"].removeprefix("file://")).read_bytes()).hexdigest() == image["sha256"]
    )
    assert "sha256 verified" in result.stdout
    assert event["data"]["prompt"] == "Change the car color to red"


def test_edit_waits_for_the_outcome_and_writes_the_image(tmp_path: Path) -> None:
    source = tmp_path / "car.png"
    source.write_bytes(encode_image("PNG"))
    with stack(tmp_path / "data") as running:
        out = tmp_path / "edited.jpg"
        env = {"RECEIVER_URL": running.url, "RECEIVER_TOKEN": TOKEN}
        result = run(
            "edit", str(source), "Make it blue", "--model", "max", "--out", str(out), cwd=tmp_path, env=env
        )
        assert result.returncode == 0, result.stderr
        job = json.loads(result.stdout[result.stdout.index("{") :])
        assert job["model"] == "flux-kontext-max" and job["outcome"] == "completed"
        assert hashlib.sha256(out.read_bytes()).hexdigest() == job["image"]["sha256"]
        assert "completed" in result.stderr  # the progress display's last line
        shown = [line.rsplit(": ", 1)[-1] for line in result.stderr.splitlines() if line.startswith("[")]
        assert shown == ["created", "submitted", "received", "stored"]  # each state, from /v1/events


def test_edit_sends_references_and_the_flux2_fields_to_any_catalog_model(tmp_path: Path) -> None:
    images = [tmp_path / f"{name}.png" for name in ("person", "jacket", "light")]
    for n, path in enumerate(images):
        path.write_bytes(encode_image("PNG", (64 + 16 * n, 64)))
    with stack(tmp_path / "data") as running:
        env = {"RECEIVER_URL": running.url, "RECEIVER_TOKEN": TOKEN}
        args = ["--model", "flux-2-flex", "--ref", str(images[1]), "--ref", str(images[2])]
        sizes = ["--width", "512", "--height", "256", "--steps", "12", "--guidance", "3.5"]
        result = run("edit", str(images[0]), "Dress the person", *args, *sizes, cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        job = json.loads(result.stdout[result.stdout.index("{") :])
        task = running.sim(f"/_sim/tasks/{job['bfl_task_id']}")
        assert job["model"] == "flux-2-flex" and job["outcome"] == "completed"
        assert [i["sha256"] for i in task["inputs"]] == [
            hashlib.sha256(path.read_bytes()).hexdigest() for path in images
        ]
        assert task["output_size"] == [512, 256]


def test_edit_reports_a_refused_request(tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_text("not an image")
    with stack(tmp_path / "data") as running:
        env = {"RECEIVER_URL": running.url, "RECEIVER_TOKEN": TOKEN}
        result = run("edit", str(source), "Make it blue", cwd=tmp_path, env=env)
        assert result.returncode == 1
        assert "422" in result.stderr and "not a JPEG, PNG or WebP" in result.stderr


def test_edit_names_an_unreadable_image_and_an_unreachable_receiver(tmp_path: Path) -> None:
    missing = run("edit", str(tmp_path / "nope.jpg"), "Make it blue", cwd=tmp_path)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert f"cannot read {tmp_path / 'nope.jpg'}: No such file or directory" in missing.stderr
    source = tmp_path / "car.png"
    source.write_bytes(encode_image("PNG"))
    url = f"http://user:hunter2@127.0.0.1:{free_port()}"  # nothing listens there
    down = run("edit", str(source), "Make it blue", cwd=tmp_path, env={"RECEIVER_URL": url})
    assert down.returncode == 1 and "Traceback" not in down.stderr
    assert f"cannot reach the receiver at http://{url.split('@')[1]}/" in down.stderr
    assert "hunter2" not in down.stderr


def test_jobs_list_show_and_redeliver(tmp_path: Path) -> None:
    with stack(tmp_path / "data") as running:
        job_id = running.submit()["id"]
        running.wait_event(job_id)
        listing = run("jobs", "list", cwd=tmp_path, env=store_env(running))
        assert listing.returncode == 0 and job_id in listing.stdout
        shown = run("jobs", "show", job_id, cwd=tmp_path, env=store_env(running))
        piped = subprocess.Popen(  # `jobs show ID | head -0`: the reader is gone before the first line
            [sys.executable, "-m", "receiver", "jobs", "show", job_id],
            cwd=tmp_path,
            env=clean_env() | store_env(running),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert piped.stdout is not None and piped.stderr is not None
        piped.stdout.close()
        assert piped.wait(timeout=60) == 1 and b"Traceback" not in piped.stderr.read()
        view = json.loads(shown.stdout)
        assert view["event"]["id"] == job_id and view["deliveries"][0]["state"] == "delivered"
        again = run("jobs", "redeliver", job_id, cwd=tmp_path, env=store_env(running))
        assert again.returncode == 0, again.stderr
        wait_until(
            lambda: [e["id"] for e in running.events()] == [job_id, job_id], 10, "the redelivered event"
        )
        assert running.events()[0] == running.events()[1]  # same event, same id, delivered again
        missing = run("jobs", "show", "no-such-job", cwd=tmp_path, env=store_env(running))
        assert missing.returncode == 1 and "no job" in missing.stderr


def test_jobs_refuses_a_sqlite_store_that_does_not_exist_rather_than_create_it(tmp_path: Path) -> None:
    result = run("jobs", "list", cwd=tmp_path, env={"RECEIVER_STORE_URL": "sqlite:///data/receiver.db"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"no store at {tmp_path / 'data' / 'receiver.db'}" in result.stderr
    assert not (tmp_path / "data").exists()


def test_serve_refuses_to_start_without_required_settings(tmp_path: Path) -> None:
    result = run("serve", cwd=tmp_path)
    assert result.returncode == 2
    for name in ("BFL_API_KEY", "RECEIVER_PUBLIC_URL", "RECEIVER_SIGNING_KEYS", "RECEIVER_API_TOKENS"):
        assert name in result.stderr


def test_web_and_worker_processes_each_require_the_settings_of_their_part(tmp_path: Path) -> None:
    web = run("serve", "--no-worker", cwd=tmp_path)
    worker = run("worker", cwd=tmp_path)
    assert web.returncode == worker.returncode == 2
    assert "RECEIVER_API_TOKENS" in web.stderr and "BFL_API_KEY" not in web.stderr
    assert "BFL_API_KEY" in worker.stderr and "RECEIVER_API_TOKENS" not in worker.stderr
    for result in (web, worker):
        assert "RECEIVER_PUBLIC_URL" in result.stderr and "RECEIVER_SIGNING_KEYS" in result.stderr


def production_env(tmp_path: Path) -> dict[str, str]:
    return {
        "BFL_API_KEY": "key",
        "RECEIVER_PUBLIC_URL": "http://127.0.0.1:9",
        "RECEIVER_SIGNING_KEYS": "signing-key-for-tests-1",
        "RECEIVER_API_TOKENS": "t",
        "RECEIVER_STORE_URL": f"sqlite:///{tmp_path / 'receiver.db'}",
        "RECEIVER_BLOB_URL": f"file://{tmp_path / 'images'}",
        "RECEIVER_SINKS": f"file://{tmp_path / 'events.jsonl'}",
    }


def test_serve_refuses_to_start_with_a_malformed_sink_url(tmp_path: Path) -> None:
    production = production_env(tmp_path)
    cases = {
        "redis://:hunter2@127.0.0.1:6379/0?maxlen=10": "127.0.0.1:6379/0?***: stream= is required",
        "nats://127.0.0.1?subject=x&stream_name=S": "unknown query parameter 'stream_name'",
        "mqtt://127.0.0.1?topic=t&qos=3": "qos='3' must be a whole number from 1 to 2",
    }
    for url, message in cases.items():
        result = run("serve", "--port", "9", cwd=tmp_path, env=production | {"RECEIVER_SINKS": url})
        assert result.returncode == 2, result.stderr
        assert "configuration error: sink " in result.stderr and message in result.stderr
        assert "hunter2" not in result.stderr


def only_line(stderr: str, marker: str) -> str:
    """The one line of `stderr` with `marker`, which must be there without a traceback."""
    lines = [line for line in stderr.splitlines() if marker in line]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_serve_and_worker_name_an_unreachable_store_in_one_line(tmp_path: Path) -> None:
    unreachable = production_env(tmp_path) | {"RECEIVER_STORE_URL": "postgresql://ada:hunter2@127.0.0.1:1/x"}
    for command in (["serve", "--processes", "1"], ["serve", "--processes", "2"], ["worker"]):
        result = run(*command, "--port", str(free_port()), cwd=tmp_path, env=unreachable)
        assert result.returncode == 3, result.stderr
        line = only_line(result.stderr, "cannot start")
        assert line.startswith("kontext-receiver: cannot start: cannot open the PostgreSQL store")
        assert "postgresql://***@127.0.0.1:1/x" in line and "hunter2" not in result.stderr


def test_worker_names_a_missing_bucket_in_one_line(tmp_path: Path, s3: S3Server) -> None:
    missing = production_env(tmp_path) | {"RECEIVER_BLOB_URL": s3.url("no-such-bucket")}
    result = run("worker", "--port", str(free_port()), cwd=tmp_path, env=missing)
    assert result.returncode == 3, result.stderr
    line = only_line(result.stderr, "cannot start")
    assert "s3://no-such-bucket/images" in line and "the bucket must exist" in line
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in result.stderr


def test_a_malformed_store_url_is_a_configuration_error_in_one_line(tmp_path: Path) -> None:
    malformed = production_env(tmp_path) | {"RECEIVER_STORE_URL": "mysql://ada:hunter2@127.0.0.1/x"}
    result = run("serve", "--processes", "1", "--port", str(free_port()), cwd=tmp_path, env=malformed)
    assert result.returncode == 2, result.stderr
    line = only_line(result.stderr, "configuration error")
    assert "unknown store URL scheme" in line and "hunter2" not in result.stderr
