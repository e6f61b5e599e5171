"""The access trail of women-and-children cases (UU PDP 27/2022) for every way the web shows one.

A case is read in many places, not only the supervisor's call detail: the console's incident list and
detail, a number's history and the screen pop (which list the caller's earlier incidents), the agency
officers' views and the dispatch messages pushed to them, the call log and its CSV export. Each of
those calls :func:`trace_reads` with the incidents it is about to show, *before* showing them: the
rows are committed first, and if they cannot be (the database is gone) the exception propagates and
the request fails (503) instead of serving the case untraced.

Which incidents count is decided by ``store.access.sensitive_incidents``: the category now or ever,
so moving a case to another category does not stop (or hide) its trail.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from callcenter.store import Store
from callcenter.store.access import Access, log_accesses, sensitive_incidents
from callcenter.store.accounts import UserInfo


def _fields(item: Any) -> tuple[int | None, str | None, str | None]:
    """``(id, reference, category)`` of an ORM incident, or of a JSON-ish mapping with those keys."""
    if isinstance(item, Mapping):
        raw_id, reference, category = item.get("id"), item.get("reference"), item.get("category")
    else:
        raw_id = getattr(item, "id", None)
        reference, category = getattr(item, "reference", None), getattr(item, "category", None)
    incident_id = raw_id if isinstance(raw_id, int) and not isinstance(raw_id, bool) else None
    return incident_id, (str(reference) if reference is not None else None), category


async def trace_reads(
    store: Store,
    users: Sequence[UserInfo],
    action: str,
    incidents: Iterable[Any],
    detail: Mapping[str, Any] | None = None,
) -> int:
    """Log that each of ``users`` is about to see each women-and-children case among ``incidents``
    (ORM rows or mappings with ``id``, ``reference``, ``category``); returns the rows written."""
    seen: dict[int, tuple[str | None, str | None]] = {}
    for item in incidents:
        incident_id, reference, category = _fields(item)
        if incident_id is not None:
            seen[incident_id] = (reference, category)
    if not seen or not users:
        return 0
    sensitive = await sensitive_incidents(store, {i: category for i, (_ref, category) in seen.items()})
    rows = [
        Access(
            user.id,
            action,
            "incident",
            str(incident_id),
            {"reference": seen[incident_id][0], "category": seen[incident_id][1], "username": user.username}
            | dict(detail or {}),
        )
        for user in users
        for incident_id in sorted(sensitive)
    ]
    await log_accesses(store, rows)
    return len(rows)


__all__ = ["trace_reads"]
