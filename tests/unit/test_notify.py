"""The sd_notify protocol's pure parts: the environment systemd sets, the datagram format."""

from __future__ import annotations

import pytest

from callcenter.notify import Notifier, encode, socket_address, watchdog_period
from callcenter.watchdog import WatchdogSettings, parse


def test_watchdog_period_from_usec() -> None:
    assert watchdog_period({"WATCHDOG_USEC": "3000000"}) == 3.0
    assert watchdog_period({"WATCHDOG_USEC": "500000"}) == 0.5


@pytest.mark.parametrize("usec", ["", "0", "-5", "3s", "1e6"])
def test_no_watchdog_without_a_positive_period(usec: str) -> None:
    assert watchdog_period({"WATCHDOG_USEC": usec}) is None


def test_watchdog_pid_must_name_this_process() -> None:
    env = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "4242"}
    assert watchdog_period(env, pid=4242) == 2.0
    # A child that inherited its parent's variables must not ping for it.
    assert watchdog_period(env, pid=4243) is None
    assert watchdog_period({**env, "WATCHDOG_PID": "x"}, pid=4242) is None


def test_abstract_and_path_addresses() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@cc/notify") == b"\0cc/notify"


def test_datagram_round_trip() -> None:
    data = encode({"READY": "1", "STATUS": "serving"})
    assert data == b"READY=1\nSTATUS=serving\n"
    assert parse(data) == {"READY": "1", "STATUS": "serving"}


def test_a_value_cannot_forge_another_key() -> None:
    data = encode({"STATUS": "ok\nREADY=1"})
    assert parse(data) == {"STATUS": "ok READY=1"}


@pytest.mark.parametrize("key", ["", "ready", "READY=1", "A B"])
def test_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError):
        encode({key: "1"})


def test_parse_ignores_lines_without_a_value() -> None:
    assert parse(b"WATCHDOG=1\ngarbage\n=x\n\xff\xfe") == {"WATCHDOG": "1"}


def test_notifier_without_socket_is_silent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog is None
    assert notifier.send(READY="1") is False


def test_notifier_with_dead_socket_never_raises() -> None:
    notifier = Notifier({"NOTIFY_SOCKET": "/nonexistent/notify", "WATCHDOG_USEC": "1000000"})
    assert notifier.enabled and notifier.watchdog == 1.0
    assert notifier.send(WATCHDOG="1") is False
    assert notifier.send(WATCHDOG="1") is False
    assert notifier.dropped == 2


def test_settings_must_be_positive() -> None:
    with pytest.raises(ValueError):
        WatchdogSettings(watchdog_sec=0)
