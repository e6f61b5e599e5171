"""Queue membership survives a PBX restart: the real app, a scripted Asterisk that restarts and boots.

Asterisk forgets dynamic queue members when it restarts. The app records who logged in (and paused)
from the console and puts them back after every (re)connect, once Asterisk says it has booted; the
consoles are told the queue state is not known while the link is down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from callcenter.store import Store
from callcenter.store.presence import QueueLogins
from callcenter.testing.fake_ami import FakeAmi
from callcenter.testing.wait import until
from callcenter.testing.web import AppClient, login, make_user, ws_message
from callcenter.web.keys import AMI, STORE, TRACKER

QUEUE = "calltakers"


@dataclass
class Env:
    client: AppClient
    fake: FakeAmi
    store: Store


@pytest.fixture
async def env(ami_app: Callable[..., Awaitable[AppClient]], fake_ami: FakeAmi) -> Env:
    client = await ami_app()
    return Env(client, fake_ami, client.app[STORE])


def actions(fake: FakeAmi, since: int = 0) -> list[dict[str, str]]:
    return [a for a in fake.actions[since:] if a.get("Action") not in ("Login", "Ping")]


async def presence(env: Env, csrf: str, action: str, reason: str | None = None) -> int:
    body = {"action": action, **({"reason": reason} if reason else {})}
    resp = await env.client.post("/api/presence", json=body, headers={"X-CSRF-Token": csrf})
    return resp.status


async def test_call_takers_are_put_back_after_asterisk_restarts(env: Env) -> None:
    await make_user(env.store, "ayu", "calltaker", interface="PJSIP/taker1")
    await make_user(env.store, "budi", "calltaker", interface="PJSIP/taker2")
    await make_user(env.store, "dewi", "calltaker", interface="PJSIP/taker3")
    csrf = await login(env.client, "ayu")
    assert await presence(env, csrf, "login") == 202
    csrf = await login(env.client, "budi")
    assert await presence(env, csrf, "login") == 202
    assert await presence(env, csrf, "pause", "break") == 202
    csrf = await login(env.client, "dewi")
    assert await presence(env, csrf, "login") == 202
    assert await presence(env, csrf, "logout") == 202  # logged out again: not put back
    records = await QueueLogins(env.store).logged_in(QUEUE)
    assert [(r.interface, r.member_name, r.paused, r.reason) for r in records] == [
        ("PJSIP/taker1", "Ayu", False, ""),
        ("PJSIP/taker2", "Budi", True, "break"),
    ]
    assert records[0].user_id is not None

    # budi's console is open through the restart.
    csrf = await login(env.client, "budi")
    ws = await env.client.ws_connect("/api/ws")
    await ws_message(ws, "hello")

    # Asterisk restarts: it says so, drops the link, comes back still booting (app_queue not loaded).
    await env.fake.send({"Event": "Shutdown", "Shutdown": "Cleanly", "Restart": "True"})
    assert (await ws_message(ws, "pbx"))["up"] is False
    state = await (await env.client.get("/api/presence")).json()
    assert state["pbx"] is False  # the console shows "not known", not the last state seen
    env.fake.booted = False
    env.fake.queue_members = []
    port = env.fake.port
    await env.fake.stop()
    mark = len(env.fake.actions)
    await env.fake.start(port)
    await until(lambda: env.fake.logins >= 2, what="reconnect while Asterisk boots")
    await asyncio.sleep(0.3)
    # Nothing asked of a booting Asterisk: no QueueStatus that fails or times out.
    assert actions(env.fake, mark) == []
    assert not env.client.app[AMI].ready.is_set()

    await env.fake.finish_boot()
    await until(lambda: env.client.app[TRACKER].link_up, what="resync after the boot")
    sent = actions(env.fake, mark)
    names = [a["Action"] for a in sent]
    # Status first, then the call-takers back (with budi's pause and its reason), then the picture.
    assert names == ["QueueStatus", "QueueAdd", "QueueAdd", "CoreShowChannels"], sent
    adds = {a["Interface"]: a for a in sent if a["Action"] == "QueueAdd"}
    assert set(adds) == {"PJSIP/taker1", "PJSIP/taker2"}
    assert adds["PJSIP/taker1"]["Paused"] == "false" and adds["PJSIP/taker1"]["MemberName"] == "Ayu"
    assert adds["PJSIP/taker2"]["Paused"] == "true" and adds["PJSIP/taker2"]["Reason"] == "break"
    # After the resync, the console is told the state as Asterisk has it (no member event yet: not in).
    assert (await ws_message(ws, "pbx"))["up"] is True
    assert (await ws_message(ws, "member"))["member"] is None
    await env.fake.send(
        {
            "Event": "QueueMemberAdded",
            "Queue": QUEUE,
            "Interface": "PJSIP/taker2",
            "MemberName": "Budi",
            "Status": "1",
            "Paused": "1",
            "PausedReason": "break",
        }
    )
    member = (await ws_message(ws, "member"))["member"]
    assert member["paused"] is True and member["reason"] == "break"
    await ws.close()


async def test_restore_only_fixes_what_differs(env: Env) -> None:
    """A link that comes back to an Asterisk that kept its members: no duplicate add; a pause state that
    differs from what the call-taker chose is put back."""
    await make_user(env.store, "ayu", "calltaker", interface="PJSIP/taker1")
    await make_user(env.store, "budi", "calltaker", interface="PJSIP/taker2")
    csrf = await login(env.client, "ayu")
    assert await presence(env, csrf, "login") == 202
    assert await presence(env, csrf, "pause", "training") == 202
    csrf = await login(env.client, "budi")
    assert await presence(env, csrf, "login") == 202
    env.fake.queue_members = [
        {"Queue": QUEUE, "Name": "Ayu", "Location": "PJSIP/taker1", "Status": "1", "Paused": "0"},
        {"Queue": QUEUE, "Name": "Budi", "Location": "PJSIP/taker2", "Status": "1", "Paused": "0"},
    ]
    mark = len(env.fake.actions)
    env.fake.drop_clients()
    await until(lambda: env.fake.logins >= 2 and env.client.app[TRACKER].link_up, what="resync")
    await until(lambda: any(a["Action"] == "CoreShowChannels" for a in actions(env.fake, mark)))
    sent = actions(env.fake, mark)
    assert [a["Action"] for a in sent] == ["QueueStatus", "QueuePause", "CoreShowChannels"], sent
    assert sent[1]["Interface"] == "PJSIP/taker1" and sent[1]["Paused"] == "true"
    assert sent[1]["Reason"] == "training"


async def test_pause_reported_by_asterisk_is_recorded(env: Env) -> None:
    """A supervisor pauses a call-taker from the Asterisk CLI: after a restart the pause is kept."""
    await make_user(env.store, "ayu", "calltaker", interface="PJSIP/taker1")
    csrf = await login(env.client, "ayu")
    assert await presence(env, csrf, "login") == 202
    await env.fake.send(
        {
            "Event": "QueueMemberPause",
            "Queue": QUEUE,
            "Interface": "PJSIP/taker1",
            "MemberName": "Ayu",
            "Paused": "1",
            "PausedReason": "meeting",
        }
    )
    logins = QueueLogins(env.store)

    async def recorded() -> bool:
        (record,) = await logins.logged_in(QUEUE)
        return record.paused and record.reason == "meeting"

    await until(recorded, what="pause recorded")
