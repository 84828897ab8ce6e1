"""Configuration. This is the only module that reads the environment (and an optional `.env` file)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from receiver.catalog import ModelSpec
from receiver.errors import ConfigError
from receiver.hosts import INPUT_HOSTS, SAMPLE_HOSTS, is_loopback, parse_patterns
from receiver.registry import redact

T = TypeVar("T")


def read_environ(env_file: str | Path | None = ".env") -> dict[str, str]:
    """The process environment layered over `env_file` (KEY=VALUE lines; the environment wins)."""
    values: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        for raw in Path(env_file).read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, _, value = line.removeprefix("export ").partition("=")
            values[key.strip()] = value.strip().strip("'\"")
    values.update(os.environ)
    return values


class _Reader:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def get(self, name: str, default: T, cast: Callable[[str], T]) -> T:
        raw = self.environ.get(name, "").strip()
        if not raw:
            return default
        try:
            return cast(raw)
        except ValueError as exc:
            raise ConfigError(f"{name}={raw!r} is invalid: {exc}") from None

    def text(self, name: str, default: str = "") -> str:
        return self.get(name, default, str)

    def items(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        return self.get(name, default, _split)

    def listing(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """Like `items`, but a variable that is set and empty is an empty list, not the default."""
        return _split(self.environ[name]) if name in self.environ else default

    def number(self, name: str, default: float, minimum: float = 0.0) -> float:
        return self.get(name, default, lambda raw: _at_least(float(raw), minimum))

    def integer(self, name: str, default: int, minimum: int = 0) -> int:
        return self.get(name, default, lambda raw: _at_least(int(raw), minimum))


def _split(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _at_least(value: T, minimum: float) -> T:
    if value < minimum:  # type: ignore[operator]
        raise ValueError(f"must be at least {minimum:g}")
    return value


def _positive(raw: str) -> float:
    value = float(raw)
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a positive number")
    return value


def _rate(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be between 0 and 1")
    return value


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true or false")


def _http_host(url: str) -> str | None:
    """The host of an absolute http(s) URL, else None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        return None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return None
    return parts.hostname


MIN_KEY_CHARS = 16


@dataclass(frozen=True)
class Settings:
    """The receiver's configuration. Field names follow the `RECEIVER_*`/`BFL_*` variables. Its repr
    shows no key, token, or URL credentials and query strings (where DSN passwords and tokens go)."""

    bfl_api_url: str = "https://api.bfl.ai"
    bfl_api_key: str = field(default="", repr=False)
    public_url: str = ""
    signing_keys: tuple[str, ...] = field(default=(), repr=False)
    api_tokens: tuple[str, ...] = field(default=(), repr=False)
    store_url: str = "sqlite:///data/receiver.db"
    blob_url: str = "file://data/images"
    sinks: tuple[str, ...] = ("file://data/events.jsonl",)
    http_sink_secret: str = field(default="", repr=False)
    sink_concurrency: int = 16
    sink_timeout_s: float = 10.0
    sample_hosts: tuple[str, ...] = ("*.bfl.ai",)
    input_hosts: tuple[str, ...] = ("*",)  # `*`: every host whose addresses are all public; (): none
    input_fetch_timeout_s: float = 10.0
    reconcile_after_s: float = 60.0
    give_up_after_s: float = 1800.0
    max_sample_bytes: int = 52_428_800
    max_active: int = 24
    max_credits_per_day: float | None = None  # None: no cap
    max_sample_pixels: int = 40_000_000
    download_concurrency: int = 16
    download_timeout_s: float = 60.0
    retry_base_s: float = 1.0
    delivery_attempts: int = 12
    lease_s: float = 120.0
    max_polls_per_s: float = 10.0
    shutdown_grace_s: float = 20.0
    max_streams: int = 500  # open GET /v1/events streams per process
    heartbeat_s: float = 15.0  # a comment on an idle event stream this often keeps proxies from closing it
    metrics_store_ttl_s: float = 10.0
    retention_days: float | None = None  # None: keep finished jobs and their images forever
    log_level: str = "info"
    log_json: bool | None = None  # None: JSON lines unless stderr is a terminal
    confirm_webhooks: bool = False
    store_timeout_s: float = 10.0
    max_uploads: int = 8
    max_queued: int = 100_000
    body_timeout_s: float = 60.0
    demo: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = _Reader(read_environ() if environ is None else environ)
        defaults = cls()
        return cls(
            bfl_api_url=env.text("BFL_API_URL", defaults.bfl_api_url).rstrip("/"),
            bfl_api_key=env.text("BFL_API_KEY"),
            public_url=env.text("RECEIVER_PUBLIC_URL").rstrip("/"),
            signing_keys=env.items("RECEIVER_SIGNING_KEYS"),
            api_tokens=env.items("RECEIVER_API_TOKENS"),
            store_url=env.text("RECEIVER_STORE_URL", defaults.store_url),
            blob_url=env.text("RECEIVER_BLOB_URL", defaults.blob_url),
            sinks=env.items("RECEIVER_SINKS", defaults.sinks),
            http_sink_secret=env.text("RECEIVER_HTTP_SINK_SECRET"),
            sink_concurrency=env.integer("RECEIVER_SINK_CONCURRENCY", defaults.sink_concurrency, 1),
            sink_timeout_s=env.number("RECEIVER_SINK_TIMEOUT_S", defaults.sink_timeout_s, 0.1),
            sample_hosts=env.items("RECEIVER_SAMPLE_HOSTS", defaults.sample_hosts),
            input_hosts=env.listing("RECEIVER_INPUT_HOSTS", defaults.input_hosts),
            input_fetch_timeout_s=env.number(
                "RECEIVER_INPUT_FETCH_TIMEOUT_S", defaults.input_fetch_timeout_s, 0.1
            ),
            reconcile_after_s=env.number("RECEIVER_RECONCILE_AFTER_S", defaults.reconcile_after_s),
            give_up_after_s=env.number("RECEIVER_GIVE_UP_AFTER_S", defaults.give_up_after_s),
            max_sample_bytes=env.integer("RECEIVER_MAX_SAMPLE_BYTES", defaults.max_sample_bytes, 1),
            max_active=env.integer("RECEIVER_MAX_ACTIVE", defaults.max_active, 1),
            max_credits_per_day=env.get(
                "RECEIVER_MAX_CREDITS_PER_DAY",
                defaults.max_credits_per_day,
                lambda raw: _at_least(float(raw), 0.0),
            ),
            max_sample_pixels=env.integer("RECEIVER_MAX_SAMPLE_PIXELS", defaults.max_sample_pixels, 1),
            download_concurrency=env.integer(
                "RECEIVER_DOWNLOAD_CONCURRENCY", defaults.download_concurrency, 1
            ),
            download_timeout_s=env.number("RECEIVER_DOWNLOAD_TIMEOUT_S", defaults.download_timeout_s, 0.1),
            retry_base_s=env.number("RECEIVER_RETRY_BASE_S", defaults.retry_base_s, 0.001),
            delivery_attempts=env.integer("RECEIVER_DELIVERY_ATTEMPTS", defaults.delivery_attempts, 1),
            lease_s=env.number("RECEIVER_LEASE_S", defaults.lease_s, 1.0),
            max_polls_per_s=env.number("RECEIVER_MAX_POLLS_PER_S", defaults.max_polls_per_s, 0.01),
            shutdown_grace_s=env.number("RECEIVER_SHUTDOWN_GRACE_S", defaults.shutdown_grace_s),
            max_streams=env.integer("RECEIVER_MAX_STREAMS", defaults.max_streams, 1),
            heartbeat_s=env.number("RECEIVER_SSE_HEARTBEAT_S", defaults.heartbeat_s, 0.01),
            metrics_store_ttl_s=env.number("RECEIVER_METRICS_STORE_TTL_S", defaults.metrics_store_ttl_s),
            retention_days=env.get("RECEIVER_RETENTION_DAYS", defaults.retention_days, _positive),
            log_level=env.text("RECEIVER_LOG_LEVEL", defaults.log_level).lower(),
            log_json=env.get("RECEIVER_LOG_JSON", defaults.log_json, _bool),
            confirm_webhooks=env.get("RECEIVER_CONFIRM_WEBHOOKS", defaults.confirm_webhooks, _bool),
            store_timeout_s=env.number("RECEIVER_STORE_TIMEOUT_S", defaults.store_timeout_s, 0.1),
            max_uploads=env.integer("RECEIVER_MAX_UPLOADS", defaults.max_uploads, 1),
            max_queued=env.integer("RECEIVER_MAX_QUEUED", defaults.max_queued, 1),
            body_timeout_s=env.number("RECEIVER_BODY_TIMEOUT_S", defaults.body_timeout_s, 0.1),
        )

    def check(self, *, api: bool = True, workers: bool = True) -> Settings:
        """Refuse a configuration that cannot work, naming every problem at once: the API needs its
        tokens, the background work BFL's key; both sign or verify webhook secrets."""
        problems = self.problems(api=api, workers=workers)
        if problems:
            raise ConfigError(
                "the configuration cannot work:\n  - " + "\n  - ".join(problems) + "\n(see the "
                "Configuration section of the README; `kontext-receiver demo` needs no settings)"
            )
        return self

    def problems(self, *, api: bool = True, workers: bool = True) -> list[str]:
        problems: list[str] = []
        for patterns, variable in ((self.sample_hosts, SAMPLE_HOSTS), (self.input_hosts, INPUT_HOSTS)):
            try:
                parse_patterns(patterns, variable)
            except ConfigError as exc:
                problems.append(str(exc))
        repeated = sorted({redact(url) for url in self.sinks if self.sinks.count(url) > 1})
        if repeated:
            problems.append(f"RECEIVER_SINKS names the same sink twice: {', '.join(repeated)}")
        if self.lease_s < self.download_timeout_s:
            problems.append(
                f"RECEIVER_LEASE_S={self.lease_s:g} is shorter than RECEIVER_DOWNLOAD_TIMEOUT_S="
                f"{self.download_timeout_s:g}: a slow download would be taken over while still running"
            )
        if self.demo:
            return problems
        missing = [
            name
            for name, value, needed in (
                ("BFL_API_KEY", self.bfl_api_key, workers),
                ("RECEIVER_PUBLIC_URL", self.public_url, True),
                ("RECEIVER_SIGNING_KEYS", self.signing_keys, True),
                ("RECEIVER_API_TOKENS", self.api_tokens, api),
            )
            if needed and not value
        ]
        if missing:
            problems.append(f"missing required setting(s): {', '.join(missing)}")
        problems += [
            f"RECEIVER_SIGNING_KEYS: key {n} has {len(key)} characters; at least {MIN_KEY_CHARS} are needed"
            for n, key in enumerate(self.signing_keys, 1)
            if len(key) < MIN_KEY_CHARS
        ]
        if self.public_url and _http_host(self.public_url) is None:
            problems.append(f"RECEIVER_PUBLIC_URL must be an absolute http(s) URL, got {self.public_url!r}")
        api_host = _http_host(self.bfl_api_url)
        if api_host is None:
            problems.append(f"BFL_API_URL must be an absolute http(s) URL, got {redact(self.bfl_api_url)!r}")
        elif self.bfl_api_url.startswith("http://") and not is_loopback(api_host):
            problems.append(f"BFL_API_URL uses plain http to {api_host}: the API key would travel in clear")
        if not self.sinks:
            problems.append("RECEIVER_SINKS names no sink")
        return problems

    def warnings(self) -> list[str]:
        """What works, but probably not as meant."""
        host = _http_host(self.public_url)
        if host and self.public_url.startswith("http://") and not is_loopback(host):
            return [f"RECEIVER_PUBLIC_URL uses plain http to {host}: BFL calls https webhook endpoints"]
        return []

    def __repr__(self) -> str:
        shown = (f"{f.name}={_redacted(getattr(self, f.name))!r}" for f in fields(self) if f.repr)
        return f"Settings({', '.join(shown)})"

    def max_active_for(self, model: ModelSpec) -> int:
        """Tasks of `model` that may be active at once: the account's limit, or the model's if lower
        (BFL allows at most 6 active kontext-max tasks per account)."""
        return min(self.max_active, model.active_limit or self.max_active)


def _redacted(value: object) -> object:
    if isinstance(value, str) and "://" in value:
        return redact(value)
    if isinstance(value, tuple):
        return tuple(_redacted(item) for item in value)
    return value


@dataclass(frozen=True)
class SimSettings:
    """The BFL simulator's knobs, from `SIM_*` variables."""

    api_keys: tuple[str, ...] = ()
    latency_s: float = 2.0
    latency_max_s: float | None = None
    url_ttl_s: float = 600.0
    task_ttl_s: float = 3600.0
    webhook_shape: str = "observed"
    webhook_drop_rate: float = 0.0
    webhook_duplicate_rate: float = 0.0
    webhook_delay_s: float = 0.0
    webhook_reorder_s: float = 0.0
    webhook_retry_delays: tuple[float, ...] = (1.0, 5.0, 30.0)
    download_error_rate: float = 0.0
    download_truncate_rate: float = 0.0
    url_early_expire_rate: float = 0.0
    get_result_error_s: float = 0.0
    get_result_error_rate: float = 0.0
    error_rate: float = 0.0
    moderate_words: tuple[str, ...] = ()
    content_moderate_words: tuple[str, ...] = ()
    credits: float | None = None
    max_active: int = 24
    max_active_kontext_max: int = 6
    seed: int | None = None
    public_url: str = ""
    # "seed": exactly as the seed spec says; "live": as BFL's live API is known to answer.
    flavor: str = "seed"
    not_found_window_s: float = 1.0  # live: how long get_result does not know a task with a webhook

    @property
    def model_limits(self) -> dict[str, int]:
        """Active-task limits per model that override the catalog's."""
        return {"flux-kontext-max": self.max_active_kontext_max}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SimSettings:
        env = _Reader(read_environ() if environ is None else environ)
        d = cls()
        shape = env.text("SIM_WEBHOOK_SHAPE", d.webhook_shape)
        if shape not in {"observed", "documented"}:
            raise ConfigError(f"SIM_WEBHOOK_SHAPE={shape!r} is invalid: must be observed or documented")
        flavor = env.text("SIM_FLAVOR", d.flavor)
        if flavor not in {"seed", "live"}:
            raise ConfigError(f"SIM_FLAVOR={flavor!r} is invalid: must be seed or live")
        return cls(
            flavor=flavor,
            not_found_window_s=env.number("SIM_NOT_FOUND_WINDOW_S", d.not_found_window_s),
            api_keys=env.items("SIM_API_KEYS"),
            latency_s=env.number("SIM_LATENCY_S", d.latency_s),
            latency_max_s=env.get(
                "SIM_LATENCY_MAX_S", d.latency_max_s, lambda raw: _at_least(float(raw), 0.0)
            ),
            url_ttl_s=env.number("SIM_URL_TTL_S", d.url_ttl_s),
            task_ttl_s=env.number("SIM_TASK_TTL_S", d.task_ttl_s),
            webhook_shape=shape,
            webhook_drop_rate=env.get("SIM_WEBHOOK_DROP_RATE", d.webhook_drop_rate, _rate),
            webhook_duplicate_rate=env.get("SIM_WEBHOOK_DUPLICATE_RATE", d.webhook_duplicate_rate, _rate),
            webhook_delay_s=env.number("SIM_WEBHOOK_DELAY_S", d.webhook_delay_s),
            webhook_reorder_s=env.number("SIM_WEBHOOK_REORDER_S", d.webhook_reorder_s),
            webhook_retry_delays=env.get(
                "SIM_WEBHOOK_RETRY_DELAYS",
                d.webhook_retry_delays,
                lambda raw: tuple(_at_least(float(x), 0.0) for x in _split(raw)),
            ),
            download_error_rate=env.get("SIM_DOWNLOAD_ERROR_RATE", d.download_error_rate, _rate),
            download_truncate_rate=env.get("SIM_DOWNLOAD_TRUNCATE_RATE", d.download_truncate_rate, _rate),
            url_early_expire_rate=env.get("SIM_URL_EARLY_EXPIRE_RATE", d.url_early_expire_rate, _rate),
            get_result_error_s=env.number("SIM_GET_RESULT_ERROR_S", d.get_result_error_s),
            get_result_error_rate=env.get("SIM_GET_RESULT_ERROR_RATE", d.get_result_error_rate, _rate),
            error_rate=env.get("SIM_ERROR_RATE", d.error_rate, _rate),
            moderate_words=tuple(w.lower() for w in env.items("SIM_MODERATE_WORDS")),
            content_moderate_words=tuple(w.lower() for w in env.items("SIM_CONTENT_MODERATE_WORDS")),
            credits=env.get("SIM_CREDITS", d.credits, float),
            max_active=env.integer("SIM_MAX_ACTIVE", d.max_active, 1),
            max_active_kontext_max=env.integer("SIM_MAX_ACTIVE_KONTEXT_MAX", d.max_active_kontext_max, 1),
            seed=env.get("SIM_SEED", d.seed, int),
            public_url=env.text("SIM_PUBLIC_URL").rstrip("/"),
        )


@dataclass(frozen=True)
class ClientSettings:
    """Where the `edit` command finds a running receiver, and the token it presents."""

    receiver_url: str = "http://127.0.0.1:8080"
    token: str = field(default="", repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientSettings:
        env = _Reader(read_environ() if environ is None else environ)
        tokens = env.items("RECEIVER_API_TOKENS")
        return cls(
            receiver_url=env.text("RECEIVER_URL", cls.receiver_url).rstrip("/"),
            token=env.text("RECEIVER_TOKEN", tokens[0] if tokens else ""),
        )
