"""The Settings object: secrets, production refusals, URL handling."""

from __future__ import annotations

import stat

import pytest

from server.config import ConfigError, Settings

STRONG = "s" * 40


def test_production_refuses_a_missing_secret(tmp_path):
    with pytest.raises(ConfigError, match="SESSION_SYNC_SECRET_KEY"):
        Settings(environment="production", data_dir=tmp_path, smtp_url="smtp://x").check()


@pytest.mark.parametrize("weak", ["change-me", "secret", "short-but-not-32"])
def test_weak_secrets_are_refused_everywhere(tmp_path, weak):
    for environment in ("development", "production"):
        settings = Settings(environment=environment, data_dir=tmp_path, secret_key=weak)
        with pytest.raises(ConfigError):
            settings.check()


def test_production_refuses_codes_in_the_log(tmp_path):
    with pytest.raises(ConfigError, match="SMTP"):
        Settings(environment="production", data_dir=tmp_path, secret_key=STRONG).check()


def test_development_generates_and_keeps_a_private_secret(tmp_path):
    first = Settings(data_dir=tmp_path).resolved_secret()
    assert len(first) == 64
    assert Settings(data_dir=tmp_path).resolved_secret() == first
    mode = stat.S_IMODE((tmp_path / "secret_key").stat().st_mode)
    assert mode == 0o600


def test_environment_variables_are_read_with_the_prefix(monkeypatch, tmp_path):
    monkeypatch.setenv("SESSION_SYNC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SESSION_SYNC_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1")
    monkeypatch.setenv("SESSION_SYNC_DATABASE_URL", "postgresql://u@h/db")
    settings = Settings()
    assert settings.trusted_proxies == ["10.0.0.0/8", "192.0.2.1"]
    assert settings.sqlalchemy_url == "postgresql+asyncpg://u@h/db"
    assert not settings.embedded and not settings.should_migrate_on_start


def test_the_embedded_default_is_sqlite_in_the_data_dir(tmp_path):
    settings = Settings(data_dir=tmp_path)
    assert settings.embedded and settings.should_migrate_on_start
    assert settings.sqlalchemy_url == f"sqlite+aiosqlite:///{tmp_path.resolve()}/session-sync.db"


def test_bad_proxy_list_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="TRUSTED_PROXIES"):
        Settings(data_dir=tmp_path, trusted_proxies=["not-an-ip"]).check()


def test_a_burst_below_the_batch_size_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="PUSH_BURST"):
        Settings(data_dir=tmp_path, secret_key=STRONG, push_burst=10, max_batch=100).check()
