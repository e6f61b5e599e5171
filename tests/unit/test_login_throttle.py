"""The login throttle's schedule on a fake clock, and how a request's client is read behind proxies."""

from __future__ import annotations

from unittest import mock

from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from callcenter.web.clients import ClientResolver, client_group
from callcenter.web.throttle import Admission, AttackReport, MemoryThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


def throttle(clock: Clock, **kwargs: object) -> MemoryThrottle:
    return MemoryThrottle(clock=clock, **kwargs)  # type: ignore[arg-type]


async def fail(t: MemoryThrottle, user: str, client: str) -> Admission:
    """One attempt that turns out wrong (as the login handler does it, minus the sleep)."""
    admission = await t.admit(user, client)
    if not admission.refused:
        await t.failed(user, client)
    return admission


async def test_a_guesser_waits_longer_and_longer_but_is_never_locked() -> None:
    clock = Clock()
    t = throttle(clock, free_failures=3, delay_max=60.0)
    waits = []
    for _ in range(3):
        waits.append((await fail(t, "ayu", "198.51.100.7")).wait)
    assert waits == [0.0, 0.0, 0.0]
    assert (await fail(t, "ayu", "198.51.100.7")).wait == 1.0  # served by sleeping
    refused = await t.admit("ayu", "198.51.100.7")  # next one would wait 3 s: more than a sleep
    assert refused.refused == 3.0
    clock.now += 3.0
    assert await fail(t, "ayu", "198.51.100.7") == Admission()  # its turn came: goes ahead
    assert (await t.admit("ayu", "198.51.100.7")).refused == 4.0  # then 4 s, 8 s…
    # Doubling stops at delay_max: never a lock for longer than that.
    for _ in range(12):
        clock.now += 61.0
        assert (await fail(t, "ayu", "198.51.100.7")).refused == 0
    clock.now += 50.0
    assert (await t.admit("ayu", "198.51.100.7")).refused == 10.0  # at most delay_max after the last
    # Meanwhile ayu from her own desk is not slowed at all, and nor is anyone else.
    assert await t.admit("ayu", "203.0.113.5") == Admission()
    assert await t.admit("budi", "198.51.100.7") == Admission()


async def test_failures_are_forgotten_after_the_window_and_a_success_clears_the_pair() -> None:
    clock = Clock()
    t = throttle(clock, free_failures=2, window=60.0)
    await fail(t, "ayu", "a")
    await fail(t, "ayu", "a")
    assert (await t.admit("ayu", "a")).wait == 1.0
    await t.succeeded("ayu", "a")
    assert await t.admit("ayu", "a") == Admission()  # the pair starts afresh
    await t.failed("ayu", "a")
    await fail(t, "ayu", "a")
    clock.now += 61.0
    assert await t.admit("ayu", "a") == Admission()  # old failures forgotten


async def test_shared_buckets_slow_a_sprayer_by_a_second_at_most_and_spare_known_desks() -> None:
    clock = Clock()
    t = throttle(clock, free_failures=3, shared_delay_max=1.0)
    await t.admit("ayu", "10.0.0.9")
    await t.succeeded("ayu", "10.0.0.9")  # ayu's usual desk behind the centre's NAT
    waits = []
    for i in range(60):  # a sprayer behind the same NAT: each a fresh username
        admission = await fail(t, f"user{i}", "10.0.0.9")
        assert admission.refused == 0
        waits.append(admission.wait)
        clock.now += admission.wait
    assert waits[:12] == [0.0] * 12 and max(waits) == 1.0  # slowed, by a second at most
    assert await t.admit("ayu", "10.0.0.9") == Admission()  # known pair: not slowed at all
    assert (await t.admit("budi", "10.0.0.9")).wait <= 1.0  # first login from there: a second at most


async def test_concurrent_guesses_cannot_outrun_the_schedule() -> None:
    clock = Clock()
    t = throttle(clock, free_failures=3)
    admissions = [await t.admit("ayu", "a") for _ in range(10)]  # no clock movement: all at once
    assert [a.wait for a in admissions[:4]] == [0.0, 0.0, 0.0, 1.0]
    assert all(a.refused > 0 for a in admissions[4:])


async def test_filling_the_table_never_erases_a_delay_and_memory_stays_bounded() -> None:
    clock = Clock()
    t = throttle(clock, free_failures=3, max_entries=100)
    for _ in range(4):
        await fail(t, "ayu", "198.51.100.7")
    assert (await t.admit("ayu", "198.51.100.7")).refused > 0
    for i in range(5000):  # the attack that erased locks: thousands of fresh addresses
        await fail(t, f"x{i}", f"192.0.2.{i % 250}-{i}")
    assert len(t) <= 100 + 3
    assert (await t.admit("ayu", "198.51.100.7")).refused > 0  # still delayed
    # Expired buckets are what gets dropped: after the window the table makes room again.
    clock.now += 10_000
    await fail(t, "ayu", "203.0.113.5")
    assert len(t) <= 100


async def test_a_burst_of_failures_alerts_once_per_window_without_usernames() -> None:
    clock = Clock()
    reports: list[AttackReport] = []
    t = throttle(clock, alert_failures=20, window=300.0, on_attack=reports.append)
    for i in range(19):
        await fail(t, f"secret-password-{i}", "198.51.100.7")
    assert reports == []
    await fail(t, "budi", "203.0.113.9")
    assert len(reports) == 1
    report = reports[0]
    assert report.failures == 20 and report.clients == 2
    assert (report.top_client, report.top_client_failures) == ("198.51.100.7", 19)
    assert "secret-password" not in repr(report.as_json())
    for i in range(40):
        await fail(t, f"u{i}", "198.51.100.7")
    assert len(reports) == 1  # once per window
    clock.now += 301
    for i in range(20):
        await fail(t, f"v{i}", "198.51.100.7")
    assert len(reports) == 2


async def test_zero_free_failures_turns_throttling_off() -> None:
    t = throttle(Clock(), free_failures=0)
    for _ in range(100):
        assert await fail(t, "ayu", "a") == Admission()


# -- clients -----------------------------------------------------------------------------------------


def request(peer: str, headers: dict[str, str] | list[tuple[str, str]] | None = None):  # type: ignore[no-untyped-def]
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (peer, 4711) if name == "peername" else default
    return make_mocked_request("POST", "/api/login", headers=CIMultiDict(headers or {}), transport=transport)


def test_forwarded_headers_are_believed_only_from_trusted_proxies() -> None:
    none = ClientResolver()
    proxy = ClientResolver(["127.0.0.1", "10.1.0.0/16"])
    spoofed = {"X-Forwarded-For": "1.2.3.4", "X-Forwarded-Proto": "https"}
    assert none.address(request("127.0.0.1", spoofed)) == "127.0.0.1"
    assert not none.is_https(request("127.0.0.1", spoofed))
    assert proxy.address(request("198.51.100.7", spoofed)) == "198.51.100.7"  # not a proxy of ours
    assert not proxy.is_https(request("198.51.100.7", spoofed))
    # Through our proxy: the client wrote "1.2.3.4", the proxy appended the real peer.
    via = {"X-Forwarded-For": "1.2.3.4, 203.0.113.5", "X-Forwarded-Proto": "https"}
    assert proxy.address(request("127.0.0.1", via)) == "203.0.113.5"
    assert proxy.is_https(request("127.0.0.1", via))
    # Two trusted hops: skipped from the right until the first untrusted address.
    chain = {"X-Forwarded-For": "1.2.3.4, 203.0.113.5, 10.1.2.3"}
    assert proxy.address(request("127.0.0.1", chain)) == "203.0.113.5"
    # RFC 7239 Forwarded wins over X-Forwarded-For; IPv6 with brackets and ports.
    fwd = {"Forwarded": 'for=1.2.3.4, for="[2001:db8:1:2::7]:443";proto=https', "X-Forwarded-For": "9.9.9.9"}
    assert proxy.address(request("127.0.0.1", fwd)) == "2001:db8:1:2::7"
    assert proxy.is_https(request("127.0.0.1", fwd))
    # Garbage where the proxy's entry should be: the proxy itself is all we know.
    assert proxy.address(request("127.0.0.1", {"X-Forwarded-For": "1.2.3.4, nonsense"})) == "127.0.0.1"
    assert proxy.address(request("127.0.0.1")) == "127.0.0.1"
    assert ClientResolver(force_secure=True).is_https(request("127.0.0.1"))


def test_ipv6_clients_are_grouped_by_their_64() -> None:
    assert client_group("2001:db8:1:2::7") == client_group("2001:db8:1:2:ffff:1:2:3") == "2001:db8:1:2::/64"
    assert client_group("2001:db8:1:3::7") != client_group("2001:db8:1:2::7")
    assert client_group("::ffff:198.51.100.7") == "198.51.100.7"
    assert client_group("198.51.100.7") == "198.51.100.7"
    assert client_group("unknown") == "unknown"
