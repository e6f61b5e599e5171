"""Intake, incidents, drafts, classification and number history through the real app (HTTP + SQLite)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store import Calls, Store, StoreUnavailable, utcnow
from callcenter.store.access import access_entries
from callcenter.store.accounts import UserInfo
from callcenter.store.models import Call, Draft, Incident, IncidentAudit, NumberFlag
from callcenter.testing.web import app_client, login, make_user, test_config
from callcenter.web import trail
from callcenter.web.keys import STORE

NUMBER = "+6281234567890"
REFERENCE = re.compile(r"112-\d{8}-\d{4}")


@dataclass
class Env:
    client: TestClient[Any, Any]
    store: Store
    taker: UserInfo
    supervisor: UserInfo
    csrf: str = ""

    async def login_as(self, user: UserInfo) -> None:
        self.csrf = await login(self.client, user.username)

    async def send(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None) -> tuple[int, Any]:
        """A state-changing request with the CSRF header; returns status and the JSON reply (or None)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"X-CSRF-Token": self.csrf, "Content-Type": "application/json"}
        async with self.client.request(method, path, data=data, headers=headers) as resp:
            text = await resp.text()
            return resp.status, (json.loads(text) if text else None)

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.client.get(path) as resp:
            return resp.status, await resp.json()

    async def count(self, model: type[Any], *where: Any) -> int:
        async def op(session: AsyncSession) -> int:
            return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)

        return await self.store.transaction("test_count", op)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with app_client(test_config(tmp_path)) as client:
        store = client.app[STORE]
        taker = await make_user(store, "ayu", "calltaker", interface="PJSIP/taker1")
        supervisor = await make_user(store, "sri", "supervisor")
        env = Env(client, store, taker, supervisor)
        await env.login_as(taker)
        yield env


async def open_call(store: Store, uniqueid: str = "1700000000.1", number: str | None = NUMBER) -> str:
    calls = Calls(store)
    return await calls.open_call(
        uniqueid=uniqueid, arrived_at=utcnow(), routed_by="agi", caller_raw=number or "anonymous", caller_number=number
    )


def intake(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "reporter_name": "Ni Made Sari",
        "callback_number": "0812 3456 7890",
        "address": "Jl. Ngurah Rai No. 10, Negara",
        "district": "Negara",
        "subdistrict": "Lelateng",
        "latitude": -8.3582,
        "longitude": 114.6186,
        "category": "fire",
        "victims_count": 1,
        "victims_condition": "luka bakar ringan",
        "access_route": "masuk gang sebelah masjid",
        "notes": "api di dapur",
        "priority": "high",
    }
    data.update(changes)
    return data


# -- intake ----------------------------------------------------------------------------------------


async def test_intake_linked_to_a_call_is_stored_audited_and_clears_the_draft(env: Env) -> None:
    call_id = await open_call(env.store)
    status, _ = await env.send("PUT", f"/api/drafts/{call_id}", {"data": {"reporter_name": "Ni Ma"}})
    assert status == 200
    assert await env.count(Draft) == 1

    status, body = await env.send("POST", "/api/incidents", intake(call_id=call_id))
    assert status == 201, body
    incident = body["incident"]
    assert REFERENCE.fullmatch(incident["reference"]) and incident["reference"].endswith("-0001")
    assert incident["callback_number"] == NUMBER
    assert incident["call_id"] == call_id and incident["status"] == "new"
    assert incident["created_by"] == env.taker.id
    assert incident["district"] == "Negara" and incident["subdistrict"] == "Lelateng"

    assert await env.count(Incident, Incident.call_id == call_id) == 1
    assert await env.count(IncidentAudit, IncidentAudit.action == "created") == 1
    assert await env.count(Draft) == 0
    status, draft = await env.get(f"/api/drafts/{call_id}")
    assert (status, draft) == (200, {"data": None, "updated_at": None})

    status, detail = await env.get(f"/api/incidents/{incident['id']}")
    assert status == 200
    assert detail["incident"] == incident
    [created] = detail["audit"]
    assert created["user"] == "ayu" and created["action"] == "created"
    assert created["changes"]["reporter_name"] == [None, "Ni Made Sari"]
    assert created["changes"]["call_id"] == [None, call_id]

    status, listed = await env.get(f"/api/incidents?call_id={call_id}")
    assert [i["id"] for i in listed["incidents"]] == [incident["id"]]
    status, listed = await env.get("/api/incidents?call_id=someothercall")
    assert listed["incidents"] == []


async def test_intake_without_a_call(env: Env) -> None:
    await env.send("PUT", "/api/drafts/none", {"data": {"x": 1}})
    status, body = await env.send("POST", "/api/incidents", intake(district=None, subdistrict=None))
    assert status == 201, body
    assert body["incident"]["call_id"] is None
    assert await env.count(Draft) == 0


async def test_invalid_intake_is_422_per_field_and_stores_nothing(env: Env) -> None:
    call_id = await open_call(env.store)
    bad = intake(
        call_id=call_id,
        reporter_name=["x"],
        callback_number="12",
        address="",
        subdistrict="Gilimanuk",
        victims_count="12abc",
        category="earthquake",
        extra="?",
    )
    status, body = await env.send("POST", "/api/incidents", bad)
    assert status == 422
    assert body["error"] == "invalid input"
    assert set(body["fields"]) == {
        "reporter_name",
        "callback_number",
        "address",
        "subdistrict",
        "victims_count",
        "category",
        "extra",
    }
    assert body["fields"]["address"] == "Wajib diisi."
    assert body["fields_en"]["address"] == "Required."
    assert await env.count(Incident) == 0
    assert await env.count(IncidentAudit) == 0


async def test_malformed_call_id_is_422(env: Env) -> None:
    for call_id in (42, ["x"], "../../etc", "x" * 200):
        status, body = await env.send("POST", "/api/incidents", intake(call_id=call_id))
        assert status == 422 and "call_id" in body["fields"], call_id


async def test_unknown_call_is_404(env: Env) -> None:
    status, body = await env.send("POST", "/api/incidents", intake(call_id="0" * 32))
    assert status == 404, body
    assert await env.count(Incident) == 0
    status, body = await env.send("POST", f"/api/calls/{'0' * 32}/classification", {"classification": "prank"})
    assert status == 404, body


MALFORMED = {
    "truncated": b"{",
    "empty": b"",
    "array": b"[]",
    "string": b'"text"',
    "null": b"null",
    "nan": b'{"latitude": NaN}',
    "overflow": b'{"latitude": 1e999}',
    "deep": b"[" * 100_000,
    "bad-utf8": b'{"a":"\xff"}',
}


async def test_malformed_json_is_400(env: Env) -> None:
    call_id = await open_call(env.store)
    for name, raw in MALFORMED.items():
        for method, path in (
            ("POST", "/api/incidents"),
            ("PUT", "/api/drafts/none"),
            ("POST", f"/api/calls/{call_id}/classification"),
            ("PATCH", "/api/incidents/1"),
        ):
            status, body = await env.send(method, path, raw=raw)
            assert status == 400, (name, method, path, body)
            assert isinstance(body["error"], str)
    assert await env.count(Incident) == 0


async def test_references_are_unique_and_consecutive_under_concurrency(env: Env) -> None:
    results = await asyncio.gather(*(env.send("POST", "/api/incidents", intake()) for _ in range(8)))
    assert [status for status, _ in results] == [201] * 8
    refs = sorted(body["incident"]["reference"] for _, body in results)
    assert [r[-4:] for r in refs] == [f"{n:04d}" for n in range(1, 9)]


# -- updates ---------------------------------------------------------------------------------------


async def test_patch_records_only_what_changed(env: Env) -> None:
    _, body = await env.send("POST", "/api/incidents", intake())
    incident_id = body["incident"]["id"]
    path = f"/api/incidents/{incident_id}"

    await env.login_as(env.supervisor)
    status, body = await env.send("PATCH", path, {"notes": "api sudah padam", "priority": "high", "victims_count": "2"})
    assert status == 200, body
    assert body["incident"]["notes"] == "api sudah padam" and body["incident"]["victims_count"] == 2

    _, detail = await env.get(path)
    created, updated = detail["audit"]
    assert created["action"] == "created"
    assert updated["action"] == "updated" and updated["user"] == "sri"
    # priority was already "high": not a change.
    assert updated["changes"] == {"notes": ["api di dapur", "api sudah padam"], "victims_count": [1, 2]}

    status, _ = await env.send("PATCH", path, {"notes": "  api sudah padam "})
    assert status == 200
    _, detail = await env.get(path)
    assert len(detail["audit"]) == 2, "an unchanged PATCH writes no audit row"


async def test_flags_are_stored_returned_patched_and_audited(env: Env) -> None:
    status, body = await env.send(
        "POST", "/api/incidents", intake(flags=["trapped_people", "needs_water", "needs_water"])
    )
    assert status == 201, body
    incident = body["incident"]
    assert incident["flags"] == ["needs_water", "trapped_people"]  # each once, in schema order
    path = f"/api/incidents/{incident['id']}"
    _, detail = await env.get(path)
    assert detail["incident"]["flags"] == ["needs_water", "trapped_people"]
    assert detail["audit"][0]["changes"]["flags"] == [None, ["needs_water", "trapped_people"]]

    # The same set in another order is no change; a different set is, with old and new in the audit.
    status, body = await env.send("PATCH", path, {"flags": ["trapped_people", "needs_water"]})
    assert status == 200 and len((await env.get(path))[1]["audit"]) == 1
    status, body = await env.send("PATCH", path, {"flags": ["road_blocked"]})
    assert status == 200 and body["incident"]["flags"] == ["road_blocked"]
    _, detail = await env.get(path)
    assert detail["audit"][-1]["changes"] == {"flags": [["needs_water", "trapped_people"], ["road_blocked"]]}
    # A PATCH that does not name flags leaves them alone.
    status, body = await env.send("PATCH", path, {"notes": "x"})
    assert status == 200 and body["incident"]["flags"] == ["road_blocked"]

    status, body = await env.send("PATCH", path, {"flags": ["road_blocked", "pln"]})
    assert status == 422 and set(body["fields"]) == {"flags"} and "pln" in body["fields_en"]["flags"]
    assert (await env.get(path))[1]["incident"]["flags"] == ["road_blocked"]


async def test_flags_default_to_none_and_unknown_ones_are_422(env: Env) -> None:
    status, body = await env.send("POST", "/api/incidents", intake())
    assert status == 201 and body["incident"]["flags"] == []
    for bad in (["needs_water", "needs_pizza"], "needs_water", [1], {"needs_water": True}):
        status, body = await env.send("POST", "/api/incidents", intake(flags=bad))
        assert status == 422 and set(body["fields"]) == {"flags"}, bad
    assert await env.count(Incident) == 1


async def test_patch_is_validated_against_the_stored_incident(env: Env) -> None:
    _, body = await env.send("POST", "/api/incidents", intake())
    path = f"/api/incidents/{body['incident']['id']}"
    # Moving to Melaya leaves the stored desa Lelateng (Negara) behind.
    status, body = await env.send("PATCH", path, {"district": "Melaya"})
    assert status == 422 and set(body["fields"]) == {"subdistrict"}
    status, body = await env.send("PATCH", path, {"reporter_name": "", "status": "closed", "latitude": None})
    assert status == 422 and set(body["fields"]) == {"reporter_name", "status", "latitude"}
    status, body = await env.send("PATCH", path, {"district": "Melaya", "subdistrict": "gilimanuk"})
    assert status == 200 and body["incident"]["subdistrict"] == "Gilimanuk"


async def test_unknown_incident_is_404(env: Env) -> None:
    for incident_id in ("999", "abc", "0", "-1", "99999999999999999999", "1.5"):
        status, _ = await env.get(f"/api/incidents/{incident_id}")
        assert status == 404, incident_id
        status, _ = await env.send("PATCH", f"/api/incidents/{incident_id}", {"notes": "x"})
        assert status == 404, incident_id


# -- drafts ----------------------------------------------------------------------------------------


async def test_drafts_round_trip_per_user(env: Env) -> None:
    data = {"reporter_name": "Ni Ma", "notes": "<b>api</b>", "nested": {"a": [1, 2.5, None, True]}}
    status, body = await env.send("PUT", "/api/drafts/abc123", {"data": data})
    assert status == 200 and body["updated_at"]
    status, body = await env.get("/api/drafts/abc123")
    assert status == 200 and body["data"] == data and body["updated_at"]

    status, body = await env.send("PUT", "/api/drafts/abc123", {"data": {"notes": "lagi"}})
    assert status == 200
    _, body = await env.get("/api/drafts/abc123")
    assert body["data"] == {"notes": "lagi"}

    other = await make_user(env.store, "budi", "calltaker")
    await env.login_as(other)
    _, body = await env.get("/api/drafts/abc123")
    assert body["data"] is None, "drafts are per user"


async def test_draft_limits(env: Env) -> None:
    status, _ = await env.send("PUT", "/api/drafts/none", {"data": {"notes": "x" * (32 * 1024)}})
    assert status == 413
    status, body = await env.send("PUT", "/api/drafts/none", {"data": [1, 2]})
    assert status == 422 and "data" in body["fields"]
    status, _ = await env.send("PUT", f"/api/drafts/{'k' * 33}", {"data": {}})
    assert status == 404
    assert await env.count(Draft) == 0


async def test_drafts_are_for_call_takers_only(env: Env) -> None:
    await env.login_as(env.supervisor)
    status, _ = await env.get("/api/drafts/none")
    assert status == 403


# -- classification, history, prank log ------------------------------------------------------------


async def test_prank_classification_flags_the_number_for_routing_history_and_log(env: Env) -> None:
    call_id = await open_call(env.store)
    since = utcnow() - timedelta(days=30)
    assert env.store.flags.count(NUMBER, since) == 0

    status, body = await env.send(
        "POST", f"/api/calls/{call_id}/classification", {"classification": "prank", "note": "tertawa lalu tutup"}
    )
    assert (status, body) == (200, {"call_id": call_id, "classification": "prank"})
    # The in-memory index the AGI routing reads: the next call from this number sees the flag.
    assert env.store.flags.count(NUMBER, since) == 1
    call = await Calls(env.store).get_call(call_id)
    assert call is not None and call.classification == "prank" and call.classified_by == env.taker.id

    # Same number typed the local way finds the same history.
    status, history = await env.get("/api/numbers/081234567890/history")
    assert status == 200
    assert history["number"] == NUMBER and history["previous_calls"] == 1
    assert [(f["kind"], f["call_id"], f["note"]) for f in history["flags"]] == [
        ("prank", call_id, "tertawa lalu tutup")
    ]

    await env.login_as(env.supervisor)
    status, body = await env.get("/api/pranks")
    assert status == 200
    [entry] = body["pranks"]
    assert (entry["number"], entry["kind"], entry["call_id"], entry["by"]) == (NUMBER, "prank", call_id, "ayu")


async def test_reclassifying_never_double_flags(env: Env) -> None:
    call_id = await open_call(env.store)
    path = f"/api/calls/{call_id}/classification"
    since = utcnow() - timedelta(days=30)
    results = await asyncio.gather(*(env.send("POST", path, {"classification": "prank"}) for _ in range(3)))
    assert all(status == 200 for status, _ in results)
    status, _ = await env.send("POST", path, {"classification": "hoax"})
    assert status == 200
    assert await env.count(NumberFlag) == 1
    assert env.store.flags.count(NUMBER, since) == 1
    _, history = await env.get(f"/api/numbers/{NUMBER}/history")
    assert [f["kind"] for f in history["flags"]] == ["hoax"]

    # A misclick corrected: the genuine caller's number is no longer held against them.
    status, _ = await env.send("POST", path, {"classification": "genuine"})
    assert status == 200
    assert await env.count(NumberFlag) == 0
    assert env.store.flags.count(NUMBER, since) == 0


async def test_genuine_and_withheld_calls_flag_nothing(env: Env) -> None:
    genuine = await open_call(env.store, "1.1")
    withheld = await open_call(env.store, "1.2", number=None)
    assert (await env.send("POST", f"/api/calls/{genuine}/classification", {"classification": "genuine"}))[0] == 200
    assert (await env.send("POST", f"/api/calls/{withheld}/classification", {"classification": "silent"}))[0] == 200
    assert await env.count(NumberFlag) == 0
    call = await Calls(env.store).get_call(withheld)
    assert call is not None and call.classification == "silent"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"classification": "spam"}, {"classification"}),
        ({}, {"classification"}),
        ({"classification": ["prank"]}, {"classification"}),
        ({"classification": "prank", "note": 5}, {"note"}),
        ({"classification": "prank", "note": "x" * 501}, {"note"}),
        ({"classification": "prank", "by": "x"}, {"by"}),
    ],
)
async def test_bad_classification_is_422(env: Env, body: dict[str, Any], fields: set[str]) -> None:
    call_id = await open_call(env.store)
    status, reply = await env.send("POST", f"/api/calls/{call_id}/classification", body)
    assert status == 422 and set(reply["fields"]) == fields
    assert await env.count(NumberFlag) == 0
    assert await env.count(Call, Call.classification.is_not(None)) == 0


async def test_history_lists_incidents_from_the_number(env: Env) -> None:
    call_id = await open_call(env.store)
    _, body = await env.send("POST", "/api/incidents", intake(call_id=call_id))
    _, history = await env.get(f"/api/numbers/{NUMBER}/history")
    [summary] = history["incidents"]
    assert summary["reference"] == body["incident"]["reference"] and summary["category"] == "fire"

    status, history = await env.get("/api/numbers/anonymous/history")
    assert status == 200 and history["flags"] == [] and history["incidents"] == []
    status, body = await env.get("/api/numbers/12abc/history")
    assert status == 422


async def test_roles(env: Env) -> None:
    status, body = await env.get("/api/pranks")
    assert status == 403, body
    agency = await make_user(env.store, "polres", "agency", agency="Polres Jembrana")
    await env.login_as(agency)
    for path in ("/api/intake/schema", "/api/incidents", f"/api/numbers/{NUMBER}/history"):
        status, _ = await env.get(path)
        assert status == 403, path
    status, _ = await env.send("POST", "/api/incidents", intake())
    assert status == 403


async def test_login_and_csrf_are_required(env: Env) -> None:
    env.csrf = "wrong"
    status, body = await env.send("POST", "/api/incidents", intake())
    assert status == 403 and body["error"] == "csrf token missing or wrong"
    env.client.session.cookie_jar.clear()
    status, _ = await env.get("/api/incidents")
    assert status == 401
    assert await env.count(Incident) == 0


# -- schema ----------------------------------------------------------------------------------------


async def test_schema(env: Env) -> None:
    status, schema = await env.get("/api/intake/schema")
    assert status == 200
    assert {"code": "fire", "label_id": "Kebakaran", "label_en": "Fire"} in schema["categories"]
    assert [c["code"] for c in schema["priorities"]] == ["critical", "high", "normal", "low"]
    assert len(schema["classifications"]) == 7 and len(schema["victim_conditions"]) == 6
    assert [d["name"] for d in schema["districts"]][:1] == ["Negara"]
    assert "Gilimanuk" in next(d for d in schema["districts"] if d["name"] == "Melaya")["subdistricts"]
    assert schema["limits"]["reporter_name"] == 128
    assert {"code": "needs_water", "label_id": "Butuh air (PDAM)", "label_en": "Needs water (PDAM)"} in schema["flags"]
    assert {
        "needs_water", "hazardous_material", "trapped_people", "child_involved", "violence", "road_blocked",
    } <= {f["code"] for f in schema["flags"]}  # fmt: skip


async def test_limit_parameter(env: Env) -> None:
    for _ in range(3):
        await env.send("POST", "/api/incidents", intake())
    _, body = await env.get("/api/incidents?limit=2")
    assert len(body["incidents"]) == 2
    assert body["incidents"][0]["id"] > body["incidents"][1]["id"], "newest first"
    for bad in ("abc", "-1", "0", "1e3"):
        status, _ = await env.get(f"/api/incidents?limit={bad}")
        assert status == 422, bad


def test_openapi_fragment_describes_every_route() -> None:
    from callcenter.web import console_api
    from callcenter.web.openapi import FRAGMENTS

    fragment = json.loads((FRAGMENTS / "console.json").read_text(encoding="utf-8"))
    served = {(route.path, route.method.lower()) for route in console_api.routes if isinstance(route, web.RouteDef)}
    described = {(path, method) for path, ops in fragment["paths"].items() for method in ops}
    assert served == described
    for path, method in served:
        handler = next(r.handler for r in console_api.routes if isinstance(r, web.RouteDef) and r.path == path)
        assert getattr(handler, "roles", None), f"{method} {path} lacks @require"
    text = json.dumps(fragment)
    referenced = set(re.findall(r"#/components/schemas/(\w+)", text))
    assert referenced <= set(fragment["components"]["schemas"])


# -- access trail (UU PDP) -------------------------------------------------------------------------------


async def test_every_console_read_of_a_women_and_children_case_is_traced_even_after_recategorising(
    env: Env,
) -> None:
    """Issue 12: list, detail and number history each leave an access-log row per reader, written before
    the case is shown; a fire stays untraced; a case moved out of the category stays traced."""
    call_id = await open_call(env.store)
    status, body = await env.send("POST", "/api/incidents", intake(call_id=call_id, category="violence_women_children"))
    assert status == 201, body
    case = body["incident"]
    status, body = await env.send("POST", "/api/incidents", intake(category="fire", callback_number="0812 9999 0000"))
    fire = body["incident"]

    async def actions(incident_id: int) -> list[tuple[str, int | None]]:
        return [
            (e.action, e.user_id)
            for e in await access_entries(env.store, subject_type="incident", subject_id=str(incident_id))
        ]

    assert (await env.get("/api/incidents"))[0] == 200
    assert (await env.get(f"/api/incidents/{case['id']}"))[0] == 200
    status, history = await env.get("/api/numbers/081234567890/history")
    assert [i["id"] for i in history["incidents"]] == [case["id"]]
    assert sorted(await actions(case["id"])) == sorted(
        [("list_incidents", env.taker.id), ("view_case", env.taker.id), ("number_history", env.taker.id)]
    )
    assert (await env.get(f"/api/incidents/{fire['id']}"))[0] == 200
    assert await actions(fire["id"]) == []  # only women-and-children cases are traced

    # Moving the case to another category neither hides the reads so far nor stops the trail.
    status, _ = await env.send("PATCH", f"/api/incidents/{case['id']}", {"category": "other"})
    assert status == 200
    await env.login_as(env.supervisor)
    assert (await env.get(f"/api/incidents/{case['id']}"))[0] == 200
    after = await actions(case["id"])
    assert len(after) == 4 and after[0] == ("view_case", env.supervisor.id)
    [row] = [e for e in await access_entries(env.store, subject_type="incident") if e.user_id == env.supervisor.id]
    assert row.detail["reference"] == case["reference"] and row.detail["category"] == "other"


async def test_an_untraceable_read_of_a_case_is_refused(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    status, body = await env.send("POST", "/api/incidents", intake(category="violence_women_children"))
    assert status == 201

    async def broken(*_args: Any, **_kwargs: Any) -> None:
        raise StoreUnavailable("access_log: database unreachable")

    monkeypatch.setattr(trail, "log_accesses", broken)
    status, reply = await env.get(f"/api/incidents/{body['incident']['id']}")
    assert status == 503 and "incident" not in reply
