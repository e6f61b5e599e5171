"""Quality review of call handling: the weekly sample, the review form and its scoring, calibration.

Rules (APCO/NENA ANS 1.107.1-2015 and Pennsylvania's practice, ``shared/DOMAIN.md``):

* **The weekly sample** of a centre's ISO week (its local days, Monday to Sunday): at least 2 % of the
  answered calls at random, and never fewer than 10 (or all of them when the week had fewer) — the
  small-centre floor; every call that led to a **critical**-priority incident; and at least one call
  per call-taker per calendar month (a call-taker without a sampled call in a month the week touches
  gets one of their calls of that week). Drawing is idempotent: it tops up what the rules still ask
  for, so it can run every hour (the composition root does, for the week that just ended and the
  critical calls of the current one) and from the supervisor's button.
* **Due** 5 days after it was drawn; after that an unreviewed sample shows as overdue.
* **The form**: six sections with weights summing to 100, each given a level 0-4 (or "not applicable",
  left out of the weighting), and a deviation severity per section; any *critical* deviation marks the
  review critical whatever the score.
* **Calibration**: a second supervisor reviews the same call on their own; the first submitted review
  is the one the call-taker reads and acknowledges, later ones are compared with it (total and per
  section) so reviewers can align their scoring. It is **blind**: until a supervisor has submitted their
  own review of a call, they see that it was reviewed, not the scores (a seen score anchors the second
  opinion, and calibration would then measure nothing).

The random draws use the OS's random source: call-takers must not be able to predict which calls
will be reviewed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import structlog

from callcenter.store import utcnow
from callcenter.store.quality import Candidate, NewSample, QualityStore, ReviewRow, SampleRow

log = structlog.get_logger("callcenter.supervision.quality")

#: Share of the week's answered calls drawn at random, and the small centre's weekly floor.
RANDOM_SHARE = 0.02
WEEKLY_FLOOR = 10
DUE_DAYS = 5
REASONS = ("random", "critical", "monthly", "manual")
#: Reasons that count towards the random share (the monthly pick is a random call of one taker).
RANDOM_REASONS = frozenset({"random", "monthly"})


@dataclass(frozen=True)
class Section:
    code: str
    weight: int
    label_id: str
    label_en: str

    def as_json(self) -> dict[str, Any]:
        return {"code": self.code, "weight": self.weight, "label_id": self.label_id, "label_en": self.label_en}


SECTIONS: tuple[Section, ...] = (
    Section("greeting", 10, "Salam dan nomor", "Greeting and number"),
    Section("location", 25, "Lokasi diverifikasi", "Location verified"),
    Section("key_questions", 20, "Pertanyaan kunci kategori", "The category's key questions"),
    Section("intake", 20, "Isian lengkap dan benar", "Intake complete and correct"),
    Section("agencies", 15, "Instansi dipilih dengan tepat", "Agencies chosen right"),
    Section("care", 10, "Pelayanan penelepon", "Caller care"),
)
SECTION_CODES = tuple(s.code for s in SECTIONS)
MAX_LEVEL = 4
#: IAED's deviation weights, lightest first.
SEVERITIES = ("minor", "moderate", "major", "critical")
MAX_COMMENT = 4000
assert sum(s.weight for s in SECTIONS) == 100


class QualityError(ValueError):
    """A request the rules refuse; ``fields`` names bad inputs, ``conflict`` marks a state clash."""

    def __init__(self, message: str, *, fields: dict[str, str] | None = None, conflict: bool = False) -> None:
        super().__init__(message)
        self.fields = fields or {}
        self.conflict = conflict


# -- weeks ---------------------------------------------------------------------------------------


def week_key(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def week_bounds(key: str, offset: timedelta) -> tuple[datetime, datetime]:
    """The UTC instants of the centre's local Monday 00:00 of ISO week ``key`` and of the next Monday."""
    try:
        year, week = key.split("-W")
        monday = date.fromisocalendar(int(year), int(week), 1)
    except ValueError:
        raise QualityError("bad week", fields={"week": "an ISO week like 2026-W49"}) from None
    start = datetime.combine(monday, time(), tzinfo=UTC) - offset
    return start, start + timedelta(days=7)


def local_day(at: datetime, offset: timedelta) -> date:
    return (at.astimezone(UTC) + offset).date()


# -- the sample rules (pure) --------------------------------------------------------------------------


def random_target(answered: int) -> int:
    """How many random reviews a week with ``answered`` calls needs: 2 %, at least 10 (or all)."""
    return max(math.ceil(RANDOM_SHARE * answered), min(WEEKLY_FLOOR, answered))


def plan_sample(
    candidates: Sequence[Candidate],
    already: Mapping[str, str],
    covered_months: Iterable[tuple[int, str]],
    offset: timedelta,
    rng: random.Random,
) -> list[tuple[Candidate, str]]:
    """Which of the week's answered ``candidates`` to add, and why.

    ``already`` maps the week's sampled call ids to their reasons; ``covered_months`` holds the
    (call-taker id, ``YYYY-MM``) pairs that already have a sampled call in that month.
    """
    chosen: dict[str, tuple[Candidate, str]] = {}
    for c in candidates:
        if c.critical and c.id not in already:
            chosen[c.id] = (c, "critical")
    covered = set(covered_months)
    by_month: dict[tuple[int, str], list[Candidate]] = {}
    for c in candidates:
        if c.calltaker_id is not None:
            by_month.setdefault((c.calltaker_id, local_day(c.arrived_at, offset).strftime("%Y-%m")), []).append(c)
    for key in sorted(by_month):
        calls = by_month[key]
        if key in covered or any(c.id in already or c.id in chosen for c in calls):
            continue
        pick = rng.choice(calls)
        chosen[pick.id] = (pick, "monthly")
    have = sum(1 for r in already.values() if r in RANDOM_REASONS) + sum(
        1 for _, r in chosen.values() if r in RANDOM_REASONS
    )
    pool = [c for c in candidates if c.id not in already and c.id not in chosen]
    need = max(0, random_target(len(candidates)) - have)
    for c in rng.sample(pool, min(need, len(pool))):
        chosen[c.id] = (c, "random")
    return list(chosen.values())


# -- the form (pure) ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewInput:
    levels: dict[str, int | None]
    deviations: dict[str, str]
    comment: str

    @property
    def score(self) -> float:
        """Weighted 0-100 over the applicable sections (None levels are "not applicable")."""
        weights = {s.code: s.weight for s in SECTIONS}
        applicable = {k: v for k, v in self.levels.items() if v is not None}
        total = sum(weights[k] for k in applicable)
        if not total:
            return 0.0
        return round(100 * sum(weights[k] * v / MAX_LEVEL for k, v in applicable.items()) / total, 1)

    @property
    def critical(self) -> bool:
        return "critical" in self.deviations.values()


def parse_review(body: Any) -> ReviewInput:
    """Validate a submitted form: every section a level 0-4 or null, severities from the list."""
    if not isinstance(body, dict):
        raise QualityError("body must be a JSON object", fields={"body": "a JSON object"})
    fields: dict[str, str] = {}
    raw_levels = body.get("levels")
    levels: dict[str, int | None] = {}
    if not isinstance(raw_levels, dict):
        fields["levels"] = "an object of section levels"
    else:
        for code in SECTION_CODES:
            value = raw_levels.get(code, "missing")
            if value is None:
                levels[code] = None
            elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_LEVEL:
                levels[code] = value
            else:
                fields[f"levels.{code}"] = f"a level from 0 to {MAX_LEVEL}, or null when not applicable"
        for code in set(raw_levels) - set(SECTION_CODES):
            fields[f"levels.{code}"] = "no such section"
        if not fields and all(v is None for v in levels.values()):
            fields["levels"] = "at least one section must be scored"
    raw_dev = body.get("deviations", {})
    deviations: dict[str, str] = {}
    if not isinstance(raw_dev, dict):
        fields["deviations"] = "an object of section severities"
    else:
        for code, severity in raw_dev.items():
            if code not in SECTION_CODES:
                fields[f"deviations.{code}"] = "no such section"
            elif severity in (None, "", "none"):
                continue
            elif severity not in SEVERITIES:
                fields[f"deviations.{code}"] = f"one of {', '.join(SEVERITIES)}"
            else:
                deviations[code] = str(severity)
    comment = body.get("comment", "")
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
        fields["comment"] = f"text of at most {MAX_COMMENT} characters"
        comment = ""
    if fields:
        raise QualityError("invalid review", fields=fields)
    return ReviewInput(levels, deviations, comment.strip())


def calibration(primary: ReviewRow, other: ReviewRow) -> dict[str, Any]:
    """How a later review differs from the primary one: total points and levels per section."""
    sections = {}
    for code in SECTION_CODES:
        a, b = primary.levels.get(code), other.levels.get(code)
        sections[code] = None if a is None or b is None else b - a
    return {
        "review_id": other.id,
        "reviewer": other.reviewer,
        "score_difference": round(other.score - primary.score, 1),
        "level_differences": sections,
        "critical_agrees": primary.critical == other.critical,
    }


def sample_status(sample: SampleRow, now: datetime) -> str:
    """open / overdue (no review yet) → reviewed → acknowledged (by the call-taker)."""
    primary = sample.reviews[0] if sample.reviews else None
    if primary is None:
        return "overdue" if now >= sample.due_at else "open"
    return "acknowledged" if primary.acknowledged_at is not None else "reviewed"


def blind_for(sample: SampleRow, viewer_id: int | None) -> bool:
    """Whether ``viewer_id`` (a supervisor) must not see the call's reviews yet: there are some, and none
    of them is theirs. ``None`` is a reader who is not a reviewer (the call-taker reading their own)."""
    return viewer_id is not None and bool(sample.reviews) and all(r.reviewer_id != viewer_id for r in sample.reviews)


def sample_json(
    sample: SampleRow, now: datetime, *, viewer_id: int | None, with_reviews: bool = True
) -> dict[str, Any]:
    """The sample as ``viewer_id`` may see it: blind (``blind_for``) means the review count and status,
    without scores, levels, comments or calibration differences."""
    blind = blind_for(sample, viewer_id)
    primary = sample.reviews[0] if sample.reviews else None
    seen = None if blind else primary
    body: dict[str, Any] = {
        "id": sample.id,
        "call_id": sample.call_id,
        "arrived_at": sample.arrived_at.isoformat(),
        "caller_number": sample.caller_number,
        "week": sample.week,
        "reason": sample.reason,
        "calltaker": sample.calltaker,
        "calltaker_id": sample.calltaker_id,
        "calltaker_name": sample.calltaker_name,
        "drawn_at": sample.drawn_at.isoformat(),
        "due_at": sample.due_at.isoformat(),
        "status": sample_status(sample, now),
        "late": primary is not None and primary.submitted_at > sample.due_at,
        "review_count": len(sample.reviews),
        "blind": blind,
        "score": seen.score if seen else None,
        "critical": seen.critical if seen else None,
        "calibration": [calibration(seen, r) for r in sample.reviews[1:]] if seen else [],
    }
    if with_reviews:
        body["reviews"] = [] if blind else [review_json(r, primary=i == 0) for i, r in enumerate(sample.reviews)]
    return body


def review_json(review: ReviewRow, *, primary: bool) -> dict[str, Any]:
    return {
        "id": review.id,
        "reviewer": review.reviewer,
        "reviewer_id": review.reviewer_id,
        "primary": primary,
        "levels": review.levels,
        "deviations": review.deviations,
        "score": review.score,
        "critical": review.critical,
        "comment": review.comment,
        "submitted_at": review.submitted_at.isoformat(),
        "acknowledged_at": review.acknowledged_at.isoformat() if review.acknowledged_at else None,
    }


def form_json() -> dict[str, Any]:
    return {
        "sections": [s.as_json() for s in SECTIONS],
        "max_level": MAX_LEVEL,
        "severities": list(SEVERITIES),
        "due_days": DUE_DAYS,
    }


# -- the service --------------------------------------------------------------------------------------


class Quality:
    """What the web API and the hourly draw call; all state is in the store."""

    def __init__(self, store: QualityStore, *, offset: timedelta, rng: random.Random | None = None) -> None:
        self.store = store
        self.offset = offset
        self.rng = rng or random.SystemRandom()

    def current_week(self, now: datetime | None = None) -> str:
        return week_key(local_day(now or utcnow(), self.offset))

    def previous_week(self, now: datetime | None = None) -> str:
        return week_key(local_day(now or utcnow(), self.offset) - timedelta(days=7))

    async def draw(self, week: str, *, by: int | None = None, critical_only: bool = False) -> list[NewSample]:
        """Top the sample of ``week`` up to what the rules ask for; returns what was added."""
        start, end = week_bounds(week, self.offset)
        candidates = await self.store.answered_calls(start, end)
        already = await self.store.sampled_reasons(start, end)
        months = {local_day(c.arrived_at, self.offset).strftime("%Y-%m") for c in candidates}
        covered = await self.store.covered_months(months, self.offset)
        plan = plan_sample(candidates, already, covered, self.offset, self.rng)
        if critical_only:
            plan = [(c, r) for c, r in plan if r == "critical"]
        now = utcnow()
        rows = [
            NewSample(
                c.id,
                week_key(local_day(c.arrived_at, self.offset)),
                r,
                c.answered_by,
                c.calltaker_id,
                by,
                now,
                now + timedelta(days=DUE_DAYS),
            )
            for c, r in plan
        ]
        added = await self.store.add_samples(rows)
        if added:
            log.info(
                "quality.sample_drawn",
                week=week,
                added=len(added),
                answered=len(candidates),
                reasons={r: sum(1 for s in added if s.reason == r) for r in REASONS},
            )
        return added

    async def add_call(self, call_id: str, by: int) -> SampleRow:
        """Put one call into the review sample by hand (a complaint, a call worth learning from)."""
        candidate = await self.store.candidate(call_id)
        if candidate is None:
            raise LookupError("no such answered call")
        existing = await self.store.sample_of_call(call_id)
        if existing is None:
            now = utcnow()
            week = week_key(local_day(candidate.arrived_at, self.offset))
            await self.store.add_samples(
                [
                    NewSample(
                        call_id,
                        week,
                        "manual",
                        candidate.answered_by,
                        candidate.calltaker_id,
                        by,
                        now,
                        now + timedelta(days=DUE_DAYS),
                    )
                ]
            )
            existing = await self.store.sample_of_call(call_id)
        assert existing is not None
        return existing

    async def submit(self, call_id: str, reviewer_id: int, body: Any) -> SampleRow:
        review = parse_review(body)
        sample = await self.store.sample_of_call(call_id)
        if sample is None:
            raise LookupError("this call is not in the review sample")
        if any(r.reviewer_id == reviewer_id for r in sample.reviews):
            raise QualityError("you have already reviewed this call", conflict=True)
        if sample.calltaker_id == reviewer_id:
            raise QualityError("nobody reviews their own call", conflict=True)
        stored = await self.store.add_review(
            sample.id,
            call_id,
            reviewer_id,
            review.levels,
            review.deviations,
            review.score,
            review.critical,
            review.comment,
        )
        if not stored:
            raise QualityError("you have already reviewed this call", conflict=True)
        log.info(
            "quality.reviewed",
            call_id=call_id,
            score=review.score,
            critical=review.critical,
            calibration=bool(sample.reviews),
        )
        fresh = await self.store.sample_of_call(call_id)
        assert fresh is not None
        return fresh

    async def acknowledge(self, review_id: int, user_id: int) -> None:
        """The call-taker has read the review of their call (only the primary review, only once)."""
        outcome = await self.store.acknowledge(review_id, user_id)
        if outcome == "missing":
            raise LookupError("no such review of your calls")
        if outcome == "done":
            raise QualityError("already acknowledged", conflict=True)
        log.info("quality.acknowledged", review_id=review_id)
