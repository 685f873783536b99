from pathlib import Path

import pytest

from shoplake.core.settings import DEV_WRITE_KEY, REPO_ROOT, ConfigError, get_settings


def test_local_defaults_need_no_setup():
    s = get_settings({})
    assert s.env == "local"
    assert s.home == (REPO_ROOT / ".shoplake").resolve()
    assert s.kafka_provisioned and s.bootstrap_servers == "127.0.0.1:9092"
    assert s.write_keys == (DEV_WRITE_KEY,)
    assert s.collector_url == "http://127.0.0.1:8080"
    assert s.pii_key_id.startswith("k") and len(s.pii_key_id) == 9


def test_external_bootstrap_means_nothing_is_provisioned():
    s = get_settings({"SHOPLAKE_KAFKA_BOOTSTRAP": "broker-1:9092,broker-2:9092"})
    assert not s.kafka_provisioned
    assert s.bootstrap_servers == "broker-1:9092,broker-2:9092"


def test_prod_requires_secrets_and_says_which():
    with pytest.raises(ConfigError, match="SHOPLAKE_PII_KEY"):
        get_settings({"SHOPLAKE_ENV": "prod", "SHOPLAKE_WRITE_KEYS": "a"})
    with pytest.raises(ConfigError, match="SHOPLAKE_WRITE_KEYS"):
        get_settings({"SHOPLAKE_ENV": "prod", "SHOPLAKE_PII_KEY": "x" * 32})
    # every missing secret in one message, so one restart fixes them all
    with pytest.raises(ConfigError) as both:
        get_settings({"SHOPLAKE_ENV": "prod"})
    assert "SHOPLAKE_PII_KEY" in str(both.value) and "SHOPLAKE_WRITE_KEYS" in str(both.value)
    with pytest.raises(ConfigError, match="1 bytes: give 32 or more"):
        get_settings({"SHOPLAKE_ENV": "prod", "SHOPLAKE_PII_KEY": "x", "SHOPLAKE_WRITE_KEYS": "a"})
    assert (
        get_settings(
            {"SHOPLAKE_ENV": "prod", "SHOPLAKE_PII_KEY": "x" * 32, "SHOPLAKE_WRITE_KEYS": "a"}
        ).replay_keys
        == ()
    )
    s = get_settings(
        {"SHOPLAKE_ENV": "prod", "SHOPLAKE_PII_KEY": "x" * 32, "SHOPLAKE_WRITE_KEYS": "a, b"}
    )
    assert s.write_keys == ("a", "b")


def test_unknown_environment_is_rejected():
    with pytest.raises(ConfigError, match="local, ci, prod"):
        get_settings({"SHOPLAKE_ENV": "staging"})


def test_key_id_changes_with_the_key(tmp_path: Path):
    a = get_settings({"SHOPLAKE_PII_KEY": "one", "SHOPLAKE_HOME": str(tmp_path)})
    b = get_settings({"SHOPLAKE_PII_KEY": "two", "SHOPLAKE_HOME": str(tmp_path)})
    assert a.pii_key_id != b.pii_key_id
    assert a.home == tmp_path.resolve()
