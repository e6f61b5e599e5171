from datetime import UTC, datetime, timedelta

from callcenter.agi.hangup import hangup_by
from callcenter.config import QueueConfig
from callcenter.store.arrivals import arrival_time, decide
from callcenter.store.flags import FlagIndex

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def index(*ages_and_kinds: tuple[int, str], number: str = "+6281234567890") -> FlagIndex:
    flags = FlagIndex()
    for age, kind in ages_and_kinds:
        flags.add(number, kind, NOW - timedelta(days=age))
    return flags


def abuse(flags: FlagIndex, cfg: QueueConfig, number: str = "+6281234567890") -> int:
    return flags.count(number, NOW - timedelta(days=cfg.prank_window_days))


def test_new_caller_gets_default_priority() -> None:
    cfg = QueueConfig()
    routing = decide(abuse(index(), cfg), cfg)
    assert routing.priority == cfg.default_priority and not routing.reminder


def test_repeat_prankster_waits_behind_others_but_is_queued() -> None:
    cfg = QueueConfig(prank_threshold=3, prank_window_days=30, prank_priority=1, default_priority=10)
    routing = decide(abuse(index((1, "prank"), (2, "hoax"), (3, "silent")), cfg), cfg)
    assert routing.priority == 1 and routing.reminder and routing.abuse_count == 3


def test_old_flags_misdials_and_other_numbers_do_not_count() -> None:
    cfg = QueueConfig(prank_threshold=3, prank_window_days=30)
    flags = index((1, "prank"), (2, "misdial"), (40, "hoax"), (3, "silent"))
    flags.add("+6281111111111", "prank", NOW)
    routing = decide(abuse(flags, cfg), cfg)
    assert routing.priority == cfg.default_priority and routing.abuse_count == 2


def test_reminder_can_be_switched_off() -> None:
    cfg = QueueConfig(prank_threshold=1, prank_reminder=False)
    assert not decide(abuse(index((1, "prank")), cfg), cfg).reminder


def test_flag_index_prunes_and_reloads() -> None:
    flags = index((1, "prank"), (50, "hoax"), (2, "genuine"))
    assert len(flags) == 2
    flags.prune(NOW - timedelta(days=30))
    assert len(flags) == 1 and flags.count("+6281234567890", NOW - timedelta(days=365)) == 1
    flags.load([("+6280000000000", "silent", NOW)])
    assert len(flags) == 1 and flags.count("+6281234567890", NOW - timedelta(days=365)) == 0


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
