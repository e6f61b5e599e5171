"""A scripted AMI server on a real socket, for protocol tests of the AMI client and the tracker.

It speaks the wire format Asterisk does (banner, ``Key: value`` blocks ended by a blank line,
ActionID echo, EventList start/complete for list actions) so the real panoramisk parser is exercised.
End-to-end tests use the real Asterisk instead; this is for what Asterisk will not do on demand
(garbage bytes, a refused login, a link that stalls).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field

EOL = "\r\n"


def block(fields: Mapping[str, str]) -> bytes:
    return ("".join(f"{k}: {v}{EOL}" for k, v in fields.items()) + EOL).encode()


@dataclass
class FakeAmi:
    username: str = "callcenter"
    secret: str = "s3cret"
    #: Entries answered to QueueStatus / CoreShowChannels; tests edit them between reconnects.
    queue_entries: list[dict[str, str]] = field(default_factory=list)
    queue_members: list[dict[str, str]] = field(default_factory=list)
    channels: list[dict[str, str]] = field(default_factory=list)
    #: When False, Ping gets no answer (a stalled Asterisk).
    answer_pings: bool = True
    #: When False, Asterisk is still loading its modules: logins work, FullyBooted is not sent and the
    #: queue actions answer "Invalid/unknown command" until ``finish_boot``.
    booted: bool = True
    actions: list[dict[str, str]] = field(default_factory=list)
    logins: int = 0
    port: int = 0

    def __post_init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.login_event = asyncio.Event()

    def client_config(self) -> dict[str, object]:
        """The ``[ami]`` settings that connect an app to this server (quick reconnects for tests)."""
        return {"port": self.port, "username": self.username, "secret": self.secret, "reconnect_min": 0.05}

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port or self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every client, as an Asterisk shutdown does."""
        if self._server is not None:
            self._server.close()
            self.drop_clients()
            await self._server.wait_closed()
            self._server = None

    def drop_clients(self) -> None:
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def finish_boot(self) -> None:
        """The modules are loaded: FullyBooted to every client, and the queue actions work from now on."""
        self.booted = True
        await self.send({"Event": "FullyBooted", "Privilege": "system,all", "Status": "Fully Booted"})

    async def send(self, fields: Mapping[str, str]) -> None:
        await self.send_raw(block(fields))

    async def send_raw(self, data: bytes) -> None:
        for writer in list(self._writers):
            writer.write(data)
            with contextlib.suppress(ConnectionError):
                await writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"Asterisk Call Manager/9.0.0{EOL}".encode())
        authed = False
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                action: dict[str, str] = {}
                for line in raw.decode().split(EOL):
                    if ": " in line:
                        k, v = line.split(": ", 1)
                        action[k] = v
                self.actions.append(action)
                name = action.get("Action", "").lower()
                aid = {"ActionID": action["ActionID"]} if "ActionID" in action else {}
                if name == "login":
                    if action.get("Username") == self.username and action.get("Secret") == self.secret:
                        authed = True
                        self._writers.add(writer)
                        self.logins += 1
                        writer.write(block({"Response": "Success", **aid, "Message": "Authentication accepted"}))
                        if self.booted:
                            writer.write(block({"Event": "FullyBooted", "Privilege": "system,all", "Status": "ok"}))
                        self.login_event.set()
                    else:
                        writer.write(block({"Response": "Error", **aid, "Message": "Authentication failed"}))
                elif not authed:
                    writer.write(block({"Response": "Error", **aid, "Message": "Permission denied"}))
                elif not self.booted and name.startswith("queue"):
                    message = f"Invalid/unknown command: {action.get('Action')}. Use Action: ListCommands"
                    writer.write(block({"Response": "Error", **aid, "Message": message}))
                elif name == "ping":
                    if self.answer_pings:
                        writer.write(block({"Response": "Success", **aid, "Ping": "Pong"}))
                elif name == "queuestatus":
                    self._list(
                        writer,
                        aid,
                        "Queue status will follow",
                        "QueueStatusComplete",
                        [("QueueMember", m) for m in self.queue_members]
                        + [("QueueEntry", e) for e in self.queue_entries],
                    )
                elif name == "coreshowchannels":
                    self._list(
                        writer,
                        aid,
                        "Channels will follow",
                        "CoreShowChannelsComplete",
                        [("CoreShowChannel", c) for c in self.channels],
                    )
                else:
                    writer.write(block({"Response": "Success", **aid, "Message": f"{action.get('Action')} done"}))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    @staticmethod
    def _list(
        writer: asyncio.StreamWriter,
        aid: dict[str, str],
        message: str,
        complete: str,
        items: list[tuple[str, dict[str, str]]],
    ) -> None:
        writer.write(block({"Response": "Success", **aid, "EventList": "start", "Message": message}))
        for event, fields in items:
            writer.write(block({"Event": event, **aid, **fields}))
        writer.write(block({"Event": complete, **aid, "EventList": "Complete", "ListItems": str(len(items))}))


def agent_connect(uniqueid: str, interface: str, hold: int = 6, caller: str = "081234567890") -> dict[str, str]:
    """The AgentConnect Asterisk sends when queue caller ``uniqueid`` is bridged to ``interface``."""
    return {
        "Event": "AgentConnect",
        "Queue": "calltakers",
        "Uniqueid": uniqueid,
        "CallerIDNum": caller,
        "Interface": interface,
        "MemberName": interface.rsplit("/", maxsplit=1)[-1],
        "HoldTime": str(hold),
        "RingTime": "2",
    }
