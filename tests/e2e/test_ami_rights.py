"""The AMI user the test PBX renders (``render_manager_conf``) may do what the app does, and nothing more.

Real Asterisk 22: every action the app sends is answered without "Permission denied" (an error about
the channel or the member is fine — these are probes, not calls); what the app never sends — CLI
commands, config rewrites, reloads, shell-capable originates — is refused, so a leaked AMI secret
cannot run Asterisk's CLI or rewrite its dialplan.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from panoramisk.message import Message

from callcenter.config import AmiConfig
from callcenter.pbx.harness import TestPbx
from callcenter.queue.ami import AmiClient

pytestmark = pytest.mark.pbx

DENIED = "permission denied"


@pytest.fixture
async def ami(pbx: TestPbx) -> AsyncIterator[AmiClient]:
    cfg = AmiConfig(port=pbx.spec.ami_port, username=pbx.spec.ami_username, secret=pbx.spec.ami_secret)

    async def ignore(_message: Message) -> None:
        return None

    async def ready(_client: AmiClient) -> None:
        return None

    client = AmiClient(cfg, on_event=ignore, on_ready=ready)
    await client.start()
    try:
        await client.wait_ready(15)
        yield client
    finally:
        await client.stop()


async def answer(client: AmiClient, action: dict[str, str]) -> str:
    """The response's Message (lower case), or "" for a success."""
    manager: Any = client._manager
    result = await manager.send_action(dict(action), as_list=False)
    first = result[0] if isinstance(result, list) else result
    return "" if first.success else str(first.get("Message", "")).lower()


async def test_every_action_the_app_sends_is_permitted(ami: AmiClient, pbx: TestPbx) -> None:
    queue = pbx.spec.queue
    probes: list[dict[str, str]] = [
        {"Action": "Ping"},
        {"Action": "QueueStatus"},
        {"Action": "CoreShowChannels"},
        {"Action": "Getvar", "Variable": "CC_CITIZEN_TRUNK"},
        {"Action": "QueueAdd", "Queue": queue, "Interface": "PJSIP/rights-probe", "Paused": "true"},
        {"Action": "QueuePause", "Queue": queue, "Interface": "PJSIP/rights-probe", "Paused": "false"},
        {"Action": "QueueRemove", "Queue": queue, "Interface": "PJSIP/rights-probe"},
        {"Action": "Redirect", "Channel": "PJSIP/no-such-channel-0000", "Context": "default", "Exten": "s"},
        # A 112 caller's route, written during the greeting, and a late one applied in the queue.
        {"Action": "Setvar", "Channel": "PJSIP/no-such-channel-0000", "Variable": "CC_ROUTE", "Value": "10/id/0"},
        {
            "Action": "QueueChangePriorityCaller",
            "Queue": queue,
            "Caller": "PJSIP/no-such-channel-0000",
            "Priority": "1",
        },
        {"Action": "Hangup", "Channel": "PJSIP/no-such-channel-0000"},
        {
            "Action": "Originate",
            "Channel": "Local/none@callcenter-nowhere",
            "Context": "callcenter-nowhere",
            "Exten": "s",
            "Priority": "1",
            "Async": "true",
        },
    ]
    for probe in probes:
        reply = await answer(ami, probe)
        assert DENIED not in reply, (probe["Action"], reply)


@pytest.mark.parametrize(
    "action",
    [
        {"Action": "Command", "Command": "core show version"},
        {"Action": "GetConfig", "Filename": "manager.conf"},
        {"Action": "UpdateConfig", "SrcFilename": "extensions.conf", "DstFilename": "extensions.conf"},
        {"Action": "Reload"},
        {"Action": "ModuleLoad", "Module": "res_agi.so", "LoadType": "reload"},
        {"Action": "Originate", "Channel": "Local/s@x", "Application": "System", "Data": "id", "Async": "true"},
    ],
    ids=lambda a: a["Action"] + ("-System" if a.get("Application") else ""),
)
async def test_what_the_app_never_sends_is_refused(ami: AmiClient, action: dict[str, str]) -> None:
    reply = await answer(ami, action)
    # Originate of a shell-capable application needs the system right: "Originate Access Forbidden".
    assert DENIED in reply or "access forbidden" in reply, reply
