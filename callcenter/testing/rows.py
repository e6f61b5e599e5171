"""Incident, dispatch and rating rows for tests and benchmarks that seed the store directly.

Statistics, retention and the supervisor API are tested on histories no call-taker could type in a
test's lifetime, so those tests add rows in bulk inside one transaction. These builders hold the
fields every such row needs (a reporter, a callback number, an address; both timestamps), so a test
names only what it is about.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from callcenter.store.models import Dispatch, Incident, Rating


def incident_row(
    reference: str,
    at: datetime,
    *,
    call_id: str | None = None,
    category: str = "fire",
    priority: str = "high",
    **fields: Any,
) -> Incident:
    """An incident as a call-taker submits it, created (and last updated) at ``at``."""
    values: dict[str, Any] = {
        "reporter_name": "Made",
        "callback_number": "+6281299999999",
        "address": "Jl. Ngurah Rai 12",
    }
    values.update(fields)
    return Incident(
        reference=reference,
        call_id=call_id,
        category=category,
        priority=priority,
        created_at=at,
        updated_at=at,
        **values,
    )


def dispatch_row(
    incident_id: int,
    agency: str,
    at: datetime,
    *,
    accepted_at: datetime | None = None,
    status: str | None = None,
) -> Dispatch:
    """A dispatch created at ``at``; without a ``status``, "resolved" once accepted, else still "calling"."""
    return Dispatch(
        incident_id=incident_id,
        agency=agency,
        status=status or ("resolved" if accepted_at else "calling"),
        created_at=at,
        updated_at=at,
        accepted_at=accepted_at,
    )


def rating_row(incident_id: int, at: datetime, score: int | None, *, via: str = "sms") -> Rating:
    """A rating asked for at ``at``: "rated" there and then with a ``score``, else still "requested"."""
    return Rating(
        incident_id=incident_id,
        via=via,
        status="rated" if score else "requested",
        score=score,
        requested_at=at,
        rated_at=at if score else None,
    )
