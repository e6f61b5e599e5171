"""Who uses the system: the accounts' roles, the groups the app addresses, the console languages.

One place for these names, because they are checked in several layers at once: the store validates an
account's role, the web layer allows routes per role, and dispatch, supervision and the service-level
timer address live messages to a group of roles. A second copy of a group drifts; this one does not.
"""

from __future__ import annotations

from typing import Any, Protocol

CALLTAKER = "calltaker"
SUPERVISOR = "supervisor"
AGENCY = "agency"
ADMIN = "admin"

#: Every account role.
ROLES = (CALLTAKER, SUPERVISOR, AGENCY, ADMIN)
#: The centre: call-takers and supervisors. They see every call, dispatch and call-back, and are told
#: about dispatch changes and service-level breaches.
CENTRE_ROLES = (CALLTAKER, SUPERVISOR)
#: Roles with a live console (the WebSocket): the centre and agency officers (who see their agency only).
CONSOLE_ROLES = (CALLTAKER, SUPERVISOR, AGENCY)
#: Who reviews quality: statistics, the call log, recordings, ratings.
SUPERVISOR_ROLES = (SUPERVISOR,)

#: Console languages (Indonesian first: the default).
LANGUAGES = ("id", "en")


class Publish(Protocol):
    """How a service tells the consoles (``LiveHub.broadcast``, given to it by the wiring): ``message`` to
    every console of ``roles``, plus the officers of ``agency``. Never blocks, never raises for a closed page."""

    def __call__(self, message: dict[str, Any], *, roles: tuple[str, ...] = ..., agency: str | None = ...) -> None: ...


__all__ = [
    "ADMIN",
    "AGENCY",
    "CALLTAKER",
    "CENTRE_ROLES",
    "CONSOLE_ROLES",
    "LANGUAGES",
    "ROLES",
    "SUPERVISOR",
    "SUPERVISOR_ROLES",
    "Publish",
]
