from datetime import UTC, datetime, timedelta

from callcenter.agi.hangup import hangup_by
from callcenter.agi.incoming import arrival_time, decide
from callcenter.config import QueueConfig
from callcenter.store import CallerHistory, FlagRecord

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def history(*ages_and_kinds: tuple[int, str]) -> CallerHistory:
    flags = tuple(FlagRecord(kind, NOW - timedelta(days=age), "", None) for age, kind in ages_and_kinds)
    return CallerHistory("+6281234567890", previous_calls=len(flags), last_call_at=None, flags=flags)


def test_new_caller_gets_default_priority() -> None:
    routing = decide(None, QueueConfig(), NOW)
    assert routing.priority == QueueConfig().default_priority and not routing.reminder


def test_repeat_prankster_waits_behind_others_but_is_queued() -> None:
    cfg = QueueConfig(prank_threshold=3, prank_window_days=30, prank_priority=1, default_priority=10)
    routing = decide(history((1, "prank"), (2, "hoax"), (3, "silent")), cfg, NOW)
    assert routing.priority == 1 and routing.reminder and routing.abuse_count == 3


def test_old_flags_and_misdials_do_not_count() -> None:
    cfg = QueueConfig(prank_threshold=3, prank_window_days=30)
    routing = decide(history((1, "prank"), (2, "misdial"), (40, "hoax"), (3, "silent")), cfg, NOW)
    assert routing.priority == cfg.default_priority and routing.abuse_count == 2


def test_reminder_can_be_switched_off() -> None:
    cfg = QueueConfig(prank_threshold=1, prank_reminder=False)
    assert not decide(history((1, "prank")), cfg, NOW).reminder


def test_arrival_time_from_dialplan_epoch() -> None:
    epoch = int((NOW - timedelta(seconds=4)).timestamp())
    assert arrival_time(str(epoch), NOW) == NOW - timedelta(seconds=4)
    assert arrival_time("", NOW) == NOW
    assert arrival_time("not-a-number", NOW) == NOW
    assert arrival_time("1", NOW) == NOW  # a clock far off is not believed


def test_who_hung_up() -> None:
    assert hangup_by("PJSIP/anonymous-0001", "PJSIP/anonymous-0001") == "caller"
    assert hangup_by("PJSIP/anonymous-0001", "PJSIP/taker1-0002") == "calltaker"
    assert hangup_by("PJSIP/anonymous-0001", "") == "system"
