"""Settings that contradict each other are refused at construction, naming both variables."""
from __future__ import annotations

import pytest

from engine.errors import ConfigurationError
from engine.settings import Settings


def _settings(**values: float) -> Settings:
    # no .env file: only what the test passes (and the defaults) decide
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_a_renewal_interval_over_half_the_lease_is_refused_naming_both_variables() -> None:
    # Given the defect's settings: a 5 s lease renewed every 10 s (the default)
    with pytest.raises(ConfigurationError) as refused:
        _settings(lease_s=5.0)
    # Then the message names both variables and their values
    assert "RELAYFLOW_LEASE_RENEW_EVERY_S=10.0" in refused.value.message
    assert "RELAYFLOW_LEASE_S=5.0" in refused.value.message
    assert refused.value.settings == ["RELAYFLOW_LEASE_RENEW_EVERY_S", "RELAYFLOW_LEASE_S"]


def test_a_renewal_interval_of_exactly_half_the_lease_is_accepted() -> None:
    assert _settings(lease_s=20.0, lease_renew_every_s=10.0).lease_s == 20.0
    with pytest.raises(ConfigurationError, match="at most half"):
        _settings(lease_s=20.0, lease_renew_every_s=10.5)


def test_a_sync_wait_default_over_its_maximum_is_refused_naming_both_variables() -> None:
    with pytest.raises(ConfigurationError, match="RELAYFLOW_SYNC_WAIT_DEFAULT_S=400.0 must not exceed "
                                                 "RELAYFLOW_SYNC_WAIT_MAX_S=300.0"):
        _settings(sync_wait_default_s=400.0)


def test_every_contradiction_is_named_in_one_message() -> None:
    with pytest.raises(ConfigurationError) as refused:
        _settings(lease_s=5.0, sync_wait_default_s=10.0, sync_wait_max_s=5.0)
    assert refused.value.settings == ["RELAYFLOW_LEASE_RENEW_EVERY_S", "RELAYFLOW_LEASE_S",
                                      "RELAYFLOW_SYNC_WAIT_DEFAULT_S", "RELAYFLOW_SYNC_WAIT_MAX_S"]


def test_the_defaults_and_the_test_deployment_settings_are_consistent() -> None:
    assert _settings().lease_renew_every_s <= _settings().lease_s / 2
    # tests/conftest.py's fast-reacting deployment
    assert _settings(lease_s=3.0, lease_renew_every_s=1.0).lease_s == 3.0


def test_a_code_memory_default_over_the_operator_cap_is_clamped_not_refused() -> None:
    # the cap is documented to clamp every node, the default included (docs/configuration.md)
    assert _settings(code_memory_mb=256, code_memory_max_mb=128).code_memory_max_mb == 128


def test_the_web_pool_keeps_every_connection_it_may_open() -> None:
    # Given the web's engine (socket checks) and a worker's (no ping), on the same settings
    from engine.db import get_engine

    settings = _settings(database_url="postgresql://nobody@127.0.0.1:1/none", db_pool_size=3, db_max_overflow=4)
    web, worker = get_engine(settings, pre_ping="socket"), get_engine(settings, pre_ping=False)
    # Then both open at most 7, and the web keeps all 7 (an overflow connection is closed at its return)
    assert (web.pool.size(), web.pool._max_overflow) == (7, 0)  # type: ignore[attr-defined]
    assert (worker.pool.size(), worker.pool._max_overflow) == (3, 4)  # type: ignore[attr-defined]
    web.dispose()
    worker.dispose()
