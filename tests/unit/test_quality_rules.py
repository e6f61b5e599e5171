"""The quality-review sample rules and scoring, on plain data (``supervision/quality.py``)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from callcenter.store.quality import Candidate, calltaker_keys
from callcenter.supervision.quality import (
    QualityError,
    parse_review,
    plan_sample,
    random_target,
    week_bounds,
    week_key,
)

WITA = timedelta(hours=8)
MONDAY = datetime(2026, 3, 2, tzinfo=UTC) - WITA  # local Monday 00:00 of 2026-W10


def calls(n: int, *, taker: int | None = 1, start: int = 0, critical: bool = False) -> list[Candidate]:
    return [Candidate(f"c{start + i}", MONDAY + timedelta(minutes=i), f"t{taker}", taker, critical) for i in range(n)]


def test_random_target_is_two_percent_with_a_floor_of_ten_or_all() -> None:
    assert random_target(0) == 0
    assert random_target(4) == 4
    assert random_target(10) == 10
    assert random_target(499) == 10
    assert random_target(501) == 11
    assert random_target(1000) == 20


def test_plan_draws_critical_monthly_and_random_once() -> None:
    week = calls(600, taker=1) + calls(300, taker=2, start=600) + calls(100, taker=None, start=900)
    week += calls(3, taker=2, start=1000, critical=True)
    plan = plan_sample(week, {}, set(), WITA, random.Random(7))
    reasons = [r for _, r in plan]
    assert reasons.count("critical") == 3
    # taker 2 is covered for March by a critical call already; taker 1 gets a monthly pick
    assert reasons.count("monthly") == 1
    assert reasons.count("random") + reasons.count("monthly") == random_target(len(week)) == 21
    assert len({c.id for c, _ in plan}) == len(plan)
    # A second draw with the first one stored adds nothing.
    already = {c.id: r for c, r in plan}
    assert plan_sample(week, already, {(1, "2026-03"), (2, "2026-03")}, WITA, random.Random(8)) == []


def test_plan_monthly_minimum_skips_covered_months_and_unknown_takers() -> None:
    week = calls(2, taker=1) + calls(2, taker=3, start=10) + calls(2, taker=None, start=20)
    plan = plan_sample(week, {}, {(1, "2026-03")}, WITA, random.Random(1))
    monthly = [c for c, r in plan if r == "monthly"]
    assert [c.calltaker_id for c in monthly] == [3]
    assert len(plan) == 6  # a small week: all of it


def test_week_bounds_are_local_mondays() -> None:
    start, end = week_bounds("2026-W10", WITA)
    assert start == MONDAY and end == MONDAY + timedelta(days=7)
    assert week_key(datetime(2026, 3, 8).date()) == "2026-W10"
    with pytest.raises(QualityError):
        week_bounds("2026-W60", WITA)


def test_review_score_weights_applicable_sections() -> None:
    review = parse_review(
        {
            "levels": {"greeting": 4, "location": 2, "key_questions": 4, "intake": 3, "agencies": None, "care": 4},
            "deviations": {"location": "critical", "care": "none"},
            "comment": "  lokasi tidak diulang  ",
        }
    )
    assert review.score == 79.4  # 67.5 of the 85 applicable points
    assert review.critical and review.deviations == {"location": "critical"}
    assert review.comment == "lokasi tidak diulang"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"levels": {"greeting": 5}}, "levels.greeting"),
        ({"levels": {"greeting": True}}, "levels.greeting"),
        ({"levels": {"bogus": 1}}, "levels.bogus"),
        ({"levels": dict.fromkeys(("greeting", "location", "key_questions", "intake", "agencies", "care"))}, "levels"),
        ({"levels": [], "deviations": {}}, "levels"),
        ({"levels": {}, "deviations": {"care": "fatal"}}, "deviations.care"),
        ({"levels": {}, "comment": 3}, "comment"),
    ],
)
def test_invalid_reviews_name_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(QualityError) as err:
        parse_review(body)
    assert field in err.value.fields, err.value.fields


def test_calltaker_keys_match_every_member_name_form() -> None:
    keys = calltaker_keys([(1, "ayu", "Ayu", "PJSIP/taker1"), (2, "budi", "Budi", None)])
    assert keys == {"Ayu": 1, "ayu": 1, "PJSIP/taker1": 1, "taker1": 1, "Budi": 2, "budi": 2}
