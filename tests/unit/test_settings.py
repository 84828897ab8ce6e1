"""Configuration from an environ mapping, a `.env` file under the real environment, and its checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from receiver.catalog import CATALOG
from receiver.errors import ConfigError
from receiver.settings import Settings, SimSettings, read_environ

REQUIRED = {
    "BFL_API_KEY": "bfl-key",
    "RECEIVER_PUBLIC_URL": "https://receiver.example/",
    "RECEIVER_SIGNING_KEYS": "new-signing-key-0001,old-signing-key-0001",
    "RECEIVER_API_TOKENS": "token-1",
}


def config_error(read: Any, environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        read(environ)
    return str(info.value)


# --- receiver settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attribute", "default"),
    [
        ("bfl_api_url", "https://api.bfl.ai"),
        ("bfl_api_key", ""),
        ("public_url", ""),
        ("signing_keys", ()),
        ("api_tokens", ()),
        ("store_url", "sqlite:///data/receiver.db"),
        ("blob_url", "file://data/images"),
        ("sinks", ("file://data/events.jsonl",)),
        ("sample_hosts", ("*.bfl.ai",)),
        ("reconcile_after_s", 60.0),
        ("give_up_after_s", 1800.0),
        ("max_sample_bytes", 52_428_800),
        ("max_active", 24),
        ("retention_days", None),
        ("demo", False),
    ],
)
def test_defaults_match_the_design(attribute: str, default: object) -> None:
    assert getattr(Settings.from_env({}), attribute) == default


def test_empty_environment_equals_the_dataclass_defaults() -> None:
    assert Settings.from_env({}) == Settings()
    assert Settings.from_env({"RECEIVER_MAX_ACTIVE": "  ", "RECEIVER_SINKS": ""}) == Settings()


def test_values_are_parsed_from_the_given_mapping() -> None:
    settings = Settings.from_env(
        REQUIRED
        | {
            "BFL_API_URL": "http://127.0.0.1:8765/",
            "RECEIVER_SIGNING_KEYS": " new-key , old-key,, ",
            "RECEIVER_SINKS": "stdout://, file:///var/log/events.jsonl",
            "RECEIVER_SAMPLE_HOSTS": "*.bfl.ai,127.0.0.1",
            "RECEIVER_STORE_URL": "sqlite:////var/lib/receiver.db",
            "RECEIVER_BLOB_URL": "file:///var/images",
            "RECEIVER_RECONCILE_AFTER_S": "12.5",
            "RECEIVER_GIVE_UP_AFTER_S": "600",
            "RECEIVER_MAX_SAMPLE_BYTES": "1048576",
            "RECEIVER_MAX_ACTIVE": "3",
            "RECEIVER_RETENTION_DAYS": "30",
            "RECEIVER_LOG_LEVEL": "DEBUG",
            "RECEIVER_LOG_JSON": "off",
        }
    )
    assert settings == dataclasses.replace(
        Settings(),
        bfl_api_url="http://127.0.0.1:8765",
        bfl_api_key="bfl-key",
        public_url="https://receiver.example",
        signing_keys=("new-key", "old-key"),
        api_tokens=("token-1",),
        sinks=("stdout://", "file:///var/log/events.jsonl"),
        sample_hosts=("*.bfl.ai", "127.0.0.1"),
        store_url="sqlite:////var/lib/receiver.db",
        blob_url="file:///var/images",
        reconcile_after_s=12.5,
        give_up_after_s=600.0,
        max_sample_bytes=1_048_576,
        max_active=3,
        retention_days=30.0,
        log_level="debug",
        log_json=False,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RECEIVER_RECONCILE_AFTER_S", "soon"),
        ("RECEIVER_GIVE_UP_AFTER_S", "-1"),
        ("RECEIVER_MAX_SAMPLE_BYTES", "1.5"),
        ("RECEIVER_MAX_SAMPLE_BYTES", "0"),
        ("RECEIVER_MAX_ACTIVE", "many"),
        ("RECEIVER_MAX_ACTIVE", "0"),
        ("RECEIVER_DOWNLOAD_TIMEOUT_S", "0"),
        ("RECEIVER_LOG_JSON", "maybe"),
        ("RECEIVER_RETENTION_DAYS", "0"),
        ("RECEIVER_RETENTION_DAYS", "-7"),
        ("RECEIVER_RETENTION_DAYS", "forever"),
        ("RECEIVER_RETENTION_DAYS", "inf"),
    ],
)
def test_bad_value_is_a_config_error_naming_the_variable(name: str, value: str) -> None:
    message = config_error(Settings.from_env, {name: value})
    assert name in message and repr(value) in message


@pytest.mark.parametrize(("max_active", "for_max"), [(24, 6), (6, 6), (2, 2)])
def test_kontext_max_gets_at_most_six_slots_the_others_the_accounts(max_active: int, for_max: int) -> None:
    settings = Settings(max_active=max_active)
    assert settings.max_active_for(CATALOG["flux-kontext-max"]) == for_max
    assert settings.max_active_for(CATALOG["flux-2-max"]) == max_active


def test_the_daily_credit_cap_is_unset_by_default_and_read_from_its_variable() -> None:
    assert Settings.from_env({}).max_credits_per_day is None
    assert Settings.from_env({"RECEIVER_MAX_CREDITS_PER_DAY": "12.5"}).max_credits_per_day == 12.5
    assert "RECEIVER_MAX_CREDITS_PER_DAY" in config_error(
        Settings.from_env, {"RECEIVER_MAX_CREDITS_PER_DAY": "-1"}
    )


# --- .env layering --------------------------------------------------------------------------------------


def write_env_file(folder: Path) -> Path:
    path = folder / ".env"
    path.write_text(
        "# comment line\n"
        "\n"
        "KR_TEST_SHARED=from-file\n"
        "KR_TEST_FILE_ONLY = file value \n"
        "export KR_TEST_EXPORTED=exported\n"
        'KR_TEST_QUOTED="quoted, value"\n'
        "KR_TEST_SINGLE='single'\n"
        "not a setting\n",
        encoding="utf-8",
    )
    return path


def test_env_file_is_layered_under_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KR_TEST_SHARED", "from-environment")
    environ = read_environ(write_env_file(tmp_path))
    assert environ["KR_TEST_SHARED"] == "from-environment"
    assert environ["KR_TEST_FILE_ONLY"] == "file value"
    assert environ["KR_TEST_EXPORTED"] == "exported"
    assert environ["KR_TEST_QUOTED"] == "quoted, value"
    assert environ["KR_TEST_SINGLE"] == "single"
    assert "not a setting" not in environ and "# comment line" not in environ


@pytest.mark.parametrize("env_file", [None, "missing.env"])
def test_without_an_env_file_the_environment_is_read(
    env_file: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KR_TEST_SHARED", "from-environment")
    monkeypatch.chdir(tmp_path)
    environ = read_environ(env_file)
    assert environ["KR_TEST_SHARED"] == "from-environment"
    assert "KR_TEST_FILE_ONLY" not in environ


def test_from_env_reads_the_environment_over_dot_env_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (*REQUIRED, "RECEIVER_MAX_ACTIVE"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".env").write_text("BFL_API_KEY=file-key\nRECEIVER_MAX_ACTIVE=5\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECEIVER_MAX_ACTIVE", "7")
    settings = Settings.from_env()
    assert (settings.bfl_api_key, settings.max_active) == ("file-key", 7)


# --- check -----------------------------------------------------------------------------------------------


def test_check_lists_every_missing_required_variable() -> None:
    message = config_error(lambda environ: Settings.from_env(environ).check(), {})
    for name in REQUIRED:
        assert name in message


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_check_names_only_what_is_missing(missing: str) -> None:
    environ = {k: v for k, v in REQUIRED.items() if k != missing}
    message = config_error(lambda env: Settings.from_env(env).check(), environ)
    assert [name for name in REQUIRED if name in message] == [missing]


def test_check_passes_a_complete_configuration() -> None:
    settings = Settings.from_env(REQUIRED)
    assert settings.check() is settings


@pytest.mark.parametrize(
    ("part", "not_needed"),
    [
        ({"api": True, "workers": False}, "BFL_API_KEY"),
        ({"api": False, "workers": True}, "RECEIVER_API_TOKENS"),
    ],
)
def test_a_process_with_one_part_needs_only_its_settings(part: dict[str, bool], not_needed: str) -> None:
    settings = Settings.from_env({k: v for k, v in REQUIRED.items() if k != not_needed})
    assert settings.check(**part) is settings
    with pytest.raises(ConfigError, match=not_needed):
        settings.check()


def test_demo_needs_no_required_settings() -> None:
    settings = dataclasses.replace(Settings(), demo=True)
    assert settings.check() is settings


@pytest.mark.parametrize(
    ("changes", "match"),
    [({"RECEIVER_PUBLIC_URL": "receiver.example"}, "http"), ({"RECEIVER_SINKS": " , "}, "no sink")],
)
def test_check_refuses_a_malformed_configuration(changes: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Settings.from_env(REQUIRED | changes).check()


# --- simulator settings -----------------------------------------------------------------------------------


def test_sim_defaults_match_the_design() -> None:
    sim = SimSettings.from_env({})
    assert sim == SimSettings()
    assert (sim.api_keys, sim.latency_s, sim.url_ttl_s, sim.webhook_shape) == ((), 2.0, 600.0, "observed")
    assert (sim.webhook_drop_rate, sim.webhook_duplicate_rate, sim.webhook_delay_s) == (0.0, 0.0, 0.0)
    assert (sim.download_error_rate, sim.error_rate, sim.moderate_words, sim.seed) == (0.0, 0.0, (), None)
    assert (sim.max_active, sim.max_active_kontext_max) == (24, 6)


def test_sim_values_are_parsed() -> None:
    sim = SimSettings.from_env(
        {
            "SIM_API_KEYS": "a,b",
            "SIM_WEBHOOK_SHAPE": "documented",
            "SIM_WEBHOOK_DROP_RATE": "1",
            "SIM_ERROR_RATE": "0.25",
            "SIM_MODERATE_WORDS": "Bomb, GORE",
            "SIM_WEBHOOK_RETRY_DELAYS": "0.5, 2",
            "SIM_SEED": "7",
        }
    )
    assert (sim.api_keys, sim.webhook_shape, sim.webhook_drop_rate, sim.error_rate) == (
        ("a", "b"),
        "documented",
        1.0,
        0.25,
    )
    assert (sim.moderate_words, sim.webhook_retry_delays, sim.seed) == (("bomb", "gore"), (0.5, 2.0), 7)


@pytest.mark.parametrize(
    "name",
    ["SIM_WEBHOOK_DROP_RATE", "SIM_WEBHOOK_DUPLICATE_RATE", "SIM_DOWNLOAD_ERROR_RATE", "SIM_ERROR_RATE"],
)
@pytest.mark.parametrize("value", ["1.5", "-0.1", "often"])
def test_sim_rate_outside_zero_to_one_is_a_config_error(name: str, value: str) -> None:
    assert name in config_error(SimSettings.from_env, {name: value})


def test_sim_bad_webhook_shape_is_a_config_error() -> None:
    assert "SIM_WEBHOOK_SHAPE" in config_error(SimSettings.from_env, {"SIM_WEBHOOK_SHAPE": "bfl"})


def test_secrets_stay_out_of_repr() -> None:
    settings = Settings.from_env(
        {
            "BFL_API_KEY": "bfl-secret",
            "RECEIVER_SIGNING_KEYS": "sign-secret",
            "RECEIVER_API_TOKENS": "tok-secret",
            "RECEIVER_HTTP_SINK_SECRET": "whsec_c2luay1zZWNyZXQtYnl0ZXMtMTIzNA==",
        }
    )
    secrets = ("bfl-secret", "sign-secret", "tok-secret", "c2luay1zZWNyZXQ")
    assert not any(secret in repr(settings) for secret in secrets)
    assert settings.http_sink_secret.startswith("whsec_")


def test_sink_settings() -> None:
    settings = Settings.from_env({"RECEIVER_SINK_CONCURRENCY": "4", "RECEIVER_SINK_TIMEOUT_S": "2.5"})
    assert (settings.sink_concurrency, settings.sink_timeout_s) == (4, 2.5)
    assert "RECEIVER_SINK_CONCURRENCY" in config_error(Settings.from_env, {"RECEIVER_SINK_CONCURRENCY": "0"})
    assert "RECEIVER_SINK_TIMEOUT_S" in config_error(Settings.from_env, {"RECEIVER_SINK_TIMEOUT_S": "0"})


def test_a_bad_http_sink_secret_stops_start_up_without_http_sinks_too() -> None:
    from receiver.sinks import sinks_from_settings

    with pytest.raises(ConfigError, match="RECEIVER_HTTP_SINK_SECRET must start with 'whsec_'"):
        sinks_from_settings(
            Settings(sinks=("stdout://",), http_sink_secret="MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        )


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        (
            {"RECEIVER_SIGNING_KEYS": "long-enough-key-01,short"},
            "RECEIVER_SIGNING_KEYS: key 2 has 5 characters",
        ),
        ({"RECEIVER_PUBLIC_URL": "https://"}, "RECEIVER_PUBLIC_URL must be an absolute"),
        ({"RECEIVER_PUBLIC_URL": "ftp://receiver.example"}, "RECEIVER_PUBLIC_URL must be an absolute"),
        ({"BFL_API_URL": "http://api.bfl.ai"}, "BFL_API_URL uses plain http to api.bfl.ai"),
        ({"BFL_API_URL": "api.bfl.ai"}, "BFL_API_URL must be an absolute"),
        ({"RECEIVER_SINKS": "file://a.jsonl,stdout://,file://a.jsonl"}, "same sink twice: file://a.jsonl"),
        ({"RECEIVER_LEASE_S": "30", "RECEIVER_DOWNLOAD_TIMEOUT_S": "60"}, "RECEIVER_LEASE_S=30 is shorter"),
        (
            {"RECEIVER_SAMPLE_HOSTS": "*.bfl.ai,https://delivery.bfl.ai"},
            "'https://delivery.bfl.ai' is invalid",
        ),
        ({"RECEIVER_SAMPLE_HOSTS": "*"}, "RECEIVER_SAMPLE_HOSTS: '*' is invalid"),
        (
            {"RECEIVER_INPUT_HOSTS": "*,images.example/x"},
            "RECEIVER_INPUT_HOSTS: 'images.example/x' is invalid",
        ),
        ({"RECEIVER_INPUT_HOSTS": "*.,127.0.0.1"}, "RECEIVER_INPUT_HOSTS: '*.' is invalid"),
    ],
)
def test_check_refuses_a_configuration_that_cannot_work(changes: dict[str, str], named: str) -> None:
    message = config_error(lambda env: Settings.from_env(env).check(), REQUIRED | changes)
    assert named in message


@pytest.mark.parametrize(
    ("environ", "hosts"),
    [
        ({}, ("*",)),  # every host whose addresses are all public
        ({"RECEIVER_INPUT_HOSTS": ""}, ()),  # set and empty: images by URL are refused
        ({"RECEIVER_INPUT_HOSTS": " "}, ()),
        ({"RECEIVER_INPUT_HOSTS": "*.cdn.example, 127.0.0.1:8000"}, ("*.cdn.example", "127.0.0.1:8000")),
    ],
)
def test_input_hosts_default_to_every_public_host_and_empty_means_none(
    environ: dict[str, str], hosts: tuple[str, ...]
) -> None:
    settings = Settings.from_env(REQUIRED | environ).check()
    assert settings.input_hosts == hosts


def test_the_input_fetch_timeout_defaults_to_10_s_and_must_be_positive() -> None:
    assert Settings.from_env(REQUIRED).input_fetch_timeout_s == 10.0
    assert (
        Settings.from_env(REQUIRED | {"RECEIVER_INPUT_FETCH_TIMEOUT_S": "2.5"}).input_fetch_timeout_s == 2.5
    )
    message = config_error(Settings.from_env, REQUIRED | {"RECEIVER_INPUT_FETCH_TIMEOUT_S": "0"})
    assert "RECEIVER_INPUT_FETCH_TIMEOUT_S" in message


def test_check_names_every_problem_at_once_and_no_secret() -> None:
    environ = REQUIRED | {
        "RECEIVER_SIGNING_KEYS": "tiny-secret",
        "BFL_API_URL": "http://api.bfl.ai",
        "RECEIVER_SAMPLE_HOSTS": "/tmp",
    }
    message = config_error(lambda env: Settings.from_env(env).check(), environ)
    assert all(name in message for name in ("RECEIVER_SIGNING_KEYS", "BFL_API_URL", "RECEIVER_SAMPLE_HOSTS"))
    assert "tiny-secret" not in message


@pytest.mark.parametrize("api", ["http://127.0.0.1:8765", "http://localhost:8765", "http://[::1]:8765"])
def test_plain_http_to_a_loopback_api_is_fine(api: str) -> None:
    Settings.from_env(REQUIRED | {"BFL_API_URL": api}).check()


def test_plain_http_public_url_off_loopback_starts_with_a_warning() -> None:
    settings = Settings.from_env(REQUIRED | {"RECEIVER_PUBLIC_URL": "http://receiver.example"}).check()
    assert settings.warnings() == [
        "RECEIVER_PUBLIC_URL uses plain http to receiver.example: BFL calls https webhook endpoints"
    ]
    assert Settings.from_env(REQUIRED | {"RECEIVER_PUBLIC_URL": "http://127.0.0.1:8080"}).warnings() == []


def test_confirm_webhooks_is_off_unless_asked() -> None:
    assert not Settings.from_env(REQUIRED).confirm_webhooks
    assert Settings.from_env(REQUIRED | {"RECEIVER_CONFIRM_WEBHOOKS": "true"}).confirm_webhooks


def test_repr_shows_no_key_token_or_url_credentials() -> None:
    settings = Settings.from_env(
        REQUIRED
        | {
            "RECEIVER_STORE_URL": "postgresql://app:dsn-secret@db:5432/jobs?sslmode=require",
            "RECEIVER_SINKS": "http://hook:sink-secret@sink.internal/events?token=query-secret,stdout://",
        }
    )
    shown = repr(settings)
    for name, value in REQUIRED.items():
        if name != "RECEIVER_PUBLIC_URL":
            assert value not in shown, name
    for secret in ("dsn-secret", "sink-secret", "query-secret", "sslmode"):
        assert secret not in shown
    assert "postgresql://***@db:5432/jobs?***" in shown and "stdout://" in shown


def test_log_json_is_chosen_by_the_terminal_unless_set() -> None:
    assert Settings.from_env({}).log_json is None
    assert Settings.from_env({"RECEIVER_LOG_JSON": "false"}).log_json is False
