"""The access trail's store side on SQLite and PostgreSQL: which incidents count as women-and-children
cases (now or ever, from the audit trail) and the session check the live hub runs."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store import Store, utcnow
from callcenter.store.access import access_entries, sensitive_incidents
from callcenter.store.accounts import Accounts, token_hash
from callcenter.store.incidents import Incidents
from callcenter.store.models import WebSession
from callcenter.testing.web import make_user
from callcenter.web.trail import trace_reads

FIELDS = {"reporter_name": "Ibu", "callback_number": "+6281234567890", "address": "x", "priority": "high"}


async def test_a_case_counts_if_it_ever_was_one(store: Store) -> None:
    incidents = Incidents(store)
    user = await make_user(store, "ayu", "calltaker")
    case = await incidents.create({**FIELDS, "category": "violence_women_children"}, call_id=None, user_id=user.id)
    moved = await incidents.create({**FIELDS, "category": "violence_women_children"}, call_id=None, user_id=user.id)
    await incidents.update(moved.id, {"category": "other"}, user_id=user.id)
    later = await incidents.create({**FIELDS, "category": "fire"}, call_id=None, user_id=user.id)
    await incidents.update(later.id, {"category": "violence_women_children"}, user_id=user.id)
    fire = await incidents.create({**FIELDS, "category": "fire"}, call_id=None, user_id=user.id)
    found = await sensitive_incidents(
        store, {case.id: "violence_women_children", moved.id: "other", later.id: "fire", fire.id: "fire"}
    )
    assert found == {case.id, moved.id, later.id}
    rows = await trace_reads(store, [user], "list_incidents", [moved, fire])
    assert rows == 1
    [entry] = await access_entries(store, subject_type="incident")
    assert (entry.subject_id, entry.user_id, entry.action) == (str(moved.id), user.id, "list_incidents")


async def test_live_sessions_drop_ended_ones(store: Store) -> None:
    accounts = Accounts(store, session_lifetime=timedelta(hours=1), session_max=timedelta(hours=12))
    ayu = await make_user(store, "ayu", "calltaker")
    budi = await make_user(store, "budi", "calltaker")
    keys = {}
    for name, user in (("idle", ayu), ("old", ayu), ("fine", ayu), ("gone", budi)):
        token, _csrf = await accounts.sessions.create(user.id, "127.0.0.1")
        keys[name] = token_hash(token)

    async def age(session: AsyncSession) -> None:
        now = utcnow()
        await session.execute(
            update(WebSession)
            .where(WebSession.token_hash == keys["idle"])
            .values(expires_at=now - timedelta(seconds=1))
        )
        await session.execute(
            update(WebSession).where(WebSession.token_hash == keys["old"]).values(created_at=now - timedelta(hours=13))
        )

    await store.transaction("age", age)
    await accounts.set_active(budi.id, False)
    assert await accounts.sessions.live(set(keys.values()) | {"nope"}) == {keys["fine"]}
