# The receiver's image: `make image` builds it offline with buildah (deploy/build-image.sh).
# The wheels of the project and of every dependency (extras included) are made on the host into
# build/wheels, so neither stage needs a compiler or the network.

FROM python:3.11-slim AS build
COPY build/wheels/ /wheels/
# `python3` is /usr/local/bin/python3 in the official image and /usr/bin/python3 in a Debian one: the
# virtualenv points at whichever the base has, and the final stage has the same base.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links=/wheels \
        --requirement /wheels/requirements.txt \
    && /opt/venv/bin/pip uninstall --no-cache-dir --yes pip setuptools

FROM python:3.11-slim
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="kontext-receiver" \
      org.opencontainers.image.description="Webhook receiver for BFL FLUX.1 Kontext image edits" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /opt/venv /opt/venv
# Absolute defaults under /data: the only writable path besides /tmp when the root filesystem is
# read-only (mount a volume there, or point RECEIVER_STORE_URL, RECEIVER_BLOB_URL, RECEIVER_SINKS elsewhere).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RECEIVER_STORE_URL=sqlite:////data/receiver.db \
    RECEIVER_BLOB_URL=file:///data/images \
    RECEIVER_SINKS=file:///data/events.jsonl
RUN mkdir -m 0750 /data && chown 10001:10001 /data
WORKDIR /data
USER 10001:10001
EXPOSE 8080
CMD ["kontext-receiver", "serve", "--host", "0.0.0.0", "--port", "8080"]
