"""The provider runner's retry schedule and inputs are pulumi-command 1.2.1's (ops/provider_runner.py cites the lines)."""

from __future__ import annotations

import pytest

from components.host_bootstrap import DIAL_ERROR_LIMIT
from ops import provider_runner as pr


def _failing(n_failures: int, value: str = "client"):
    calls = {"n": 0}

    def dial():
        calls["n"] += 1
        if calls["n"] <= n_failures:
            raise ConnectionRefusedError(f"refused #{calls['n']}")
        return value

    return dial, calls


def test_the_default_limit_of_10_means_11_dials_over_about_11_seconds():
    waits: list[float] = []
    attempts: list[pr.Attempt] = []
    dial, calls = _failing(1000)
    with pytest.raises(pr.ProviderError, match=r"^after 10 failed attempts: ConnectionRefusedError: refused #11$"):
        pr.dial_with_retry("Dial proxy", pr.DIAL_ERROR_DEFAULT, dial, attempts, sleep=waits.append)
    assert calls["n"] == 11 and [a.number for a in attempts] == list(range(1, 12))
    assert waits == pytest.approx([0.1 * 1.5**i for i in range(10)])
    assert sum(waits) == pytest.approx(11.33, abs=0.01)


def test_waits_grow_by_half_and_stop_growing_at_5_seconds():
    waits: list[float] = []
    dial, _ = _failing(1000)
    with pytest.raises(pr.ProviderError, match=rf"^after {DIAL_ERROR_LIMIT} failed attempts"):
        pr.dial_with_retry("Dial", DIAL_ERROR_LIMIT, dial, [], sleep=waits.append)
    assert len(waits) == DIAL_ERROR_LIMIT
    assert max(waits) == 5.0 and waits[10:] == [5.0] * (DIAL_ERROR_LIMIT - 10)
    # HostBootstrap's 60: about 260 s of retries, the figure components/host_bootstrap.py quotes.
    assert 255 < sum(waits) < 265


def test_a_dial_that_succeeds_on_the_third_try_waited_twice():
    waits: list[float] = []
    dial, calls = _failing(2)
    assert pr.dial_with_retry("Dial", 10, dial, [], sleep=waits.append) == "client"
    assert calls["n"] == 3 and waits == pytest.approx([0.1, 0.15])


def test_no_limit_retries_until_the_operation_is_cancelled():
    class Cancelled(Exception):
        pass

    waits: list[float] = []

    def sleep(seconds):
        waits.append(seconds)
        if len(waits) == 40:
            raise Cancelled

    with pytest.raises(Cancelled):
        pr.dial_with_retry("Dial", -1, _failing(1000)[0], [], sleep=sleep)
    assert len(waits) == 40


def test_a_limit_of_zero_dials_once():
    dial, calls = _failing(1000)
    with pytest.raises(pr.ProviderError, match=r"^after 0 failed attempts"):
        pr.dial_with_retry("Dial", 0, dial, [], sleep=lambda s: None)
    assert calls["n"] == 1


def test_registered_inputs_become_a_connection_with_the_providers_defaults():
    sig = "4dabf18193072939515e22adb298388d"
    inputs = {
        sig: "1b47061264138c4ac30d75fd1eb44270",
        "value": {"host": "10.0.1.5", "user": "deploy", "privateKey": "K", "dialErrorLimit": 60,
                  "proxy": {"host": "203.0.113.10", "user": "deploy", "privateKey": "K"}},
    }
    conn = pr.Connection.from_inputs(pr.unwrap_secrets(inputs))
    assert (conn.host, conn.port, conn.user, conn.dial_error_limit, conn.per_dial_timeout) == ("10.0.1.5", 22, "deploy", 60, 15)
    assert conn.proxy is not None and conn.proxy.dial_error_limit == pr.DIAL_ERROR_DEFAULT and conn.proxy.host_key is None


def test_a_bad_host_key_is_the_providers_parse_error():
    with pytest.raises(pr.ProviderError, match="failed to parse host key"):
        pr._fixed_host_key("ssh-ed25519 not*base64")
