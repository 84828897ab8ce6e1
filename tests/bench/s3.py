"""Figures 3s and 7s: figures 3 and 7 again with the images in S3, on moto's S3 server run as a process
of its own on loopback (`python -m moto.server`), a new bucket per figure. moto is an in-process Python
server, far slower than S3 or MinIO: 3s measures the receiver against that server, and 7s shows that
the memory target holds when every image goes up a multipart upload."""

from __future__ import annotations

import uuid
from urllib.parse import quote

from tests.bench import ack, completions
from tests.bench.context import Context
from tests.bench.procs import PYTHON, free_port, python_env
from tests.bench.report import Figure
from tests.s3 import CREDENTIALS, REGION

LABEL = ", S3 blobs (moto server)"


def s3_settings(ctx: Context) -> dict[str, str]:
    """The receiver's environment for a new bucket on the run's moto server (started on first use)."""
    import boto3

    if ctx.s3_endpoint is None:
        port = free_port()
        args = [PYTHON, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        url = f"http://127.0.0.1:{port}"
        ctx.procs.start_server("moto", args, python_env(), f"{url}/moto-api/data.json")
        ctx.s3_endpoint = url
        ctx.progress("s3", f"moto's S3 server at {url}")
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=ctx.s3_endpoint,
        region_name=REGION,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    client.create_bucket(Bucket=bucket)
    endpoint = quote(ctx.s3_endpoint, safe="")
    return CREDENTIALS | {"RECEIVER_BLOB_URL": f"s3://{bucket}/images?endpoint={endpoint}&region={REGION}"}


def ack_throughput_s3(ctx: Context) -> Figure:
    """Figure 1s: figure 1 with the (tiny) images the background work stores going to S3."""
    measured = ack.receiver_closed_loop(
        ctx,
        "ack-s3",
        lambda pool: ctx.seeded_receiver("ack-s3", pool, **s3_settings(ctx)),
        ctx.plan.ack_pools,
    )
    label = f"webhooks acked/s, SQLite store{LABEL}, file sink, closed loop C={ctx.plan.ack_concurrency}"
    return ack.ack_figure("1s", label, measured, ack.bare_rate(ctx), ctx.bare_ack_detail)


def completions_s3(ctx: Context) -> Figure:
    label = "SQLite store, S3 blobs (moto server), file sink"
    return completions.completions(
        ctx, key="3s", label=label, name="completions-s3", settings=s3_settings(ctx)
    )


def peak_memory_s3(ctx: Context) -> Figure:
    return completions.peak_memory(ctx, key="7s", label=LABEL, name="memory-s3", settings=s3_settings(ctx))
