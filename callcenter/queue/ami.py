"""A supervised AMI connection on top of panoramisk's Manager.

panoramisk reconnects on a fixed timer, re-sends actions that were in flight when the link dropped
(an Originate twice is a duty officer called twice), dispatches events as unordered tasks and lets a
parse error in one message close the whole connection. Here one supervisor owns the link instead:
connect, check the login, resynchronise, ping, and on any loss back off and start again; events go
through one ordered queue; actions in flight when the link drops fail at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from panoramisk import Manager
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from callcenter.config import AmiConfig

log = structlog.get_logger("callcenter.ami")

#: Event classes asked for at login (``Events:``), whatever the AMI user may read: queue and member
#: events (agent), Hangup/OriginateResponse/DialEnd/transfers (call), the dialplan's UserEvent (user),
#: FullyBooted/Shutdown (system). Left out: dialplan (VarSet, Newexten), reporting (RTCP), cdr, dtmf,
#: log, verbose — about three quarters of the events of a queued call, parsed for nothing otherwise.
EVENT_CLASSES = "call,agent,user,system"
#: Longest AMI message kept while it arrives (a QueueStatus entry or an event is well under 4 KiB).
MAX_MESSAGE_BYTES = 1 << 20

#: Cap of the retry delay while connects are refused (Asterisk restarting): a refused connect costs
#: nothing, and the app must be back on the link within about a second of Asterisk's manager, so it
#: can put the call-takers back in the queue before the first caller after the restart reaches it.
REFUSED_RETRY_MAX = 1.0
#: The centre's caller id on the calls it places (agencies' duty lines, rating calls, conferences).
CENTRE_CALLER_ID = '"Pusat 112" <112>'
#: OriginateResponse ``Reason`` (the last control frame) → how the call we placed ended. 1 hangup,
#: 3 ringing (timed out while ringing), 5 busy, 8 congestion; 0 means the channel could not even be
#: created. Read through :func:`originate_outcome` by everything that originates.
REASON_OUTCOME = {"0": "failed", "1": "failed", "3": "no_answer", "5": "busy", "8": "failed"}

EventHandler = Callable[[Message], Awaitable[None]]
ReadyHandler = Callable[["AmiClient"], Awaitable[None]]
DownHandler = Callable[[], None]


class AmiError(RuntimeError):
    """An AMI action failed; the message carries Asterisk's own words."""


class AmiNotConnected(AmiError):
    """No logged-in AMI link right now; the caller decides whether to retry."""


def originate_outcome(reason: object) -> str:
    """The outcome of an unanswered Originate from its OriginateResponse ``Reason`` (unknown: ``failed``)."""
    return REASON_OUTCOME.get(str(reason or ""), "failed")


def match_reference(reference: Any, prefix: str) -> int | None:
    """The id in ``<prefix>-<id>`` (the ActionID or ChannelId :meth:`AmiClient.originate` was given), else None."""
    ref = str(reference or "")
    if not ref.startswith(prefix + "-"):
        return None
    tail = ref.removeprefix(prefix + "-")
    return int(tail) if tail.isascii() and tail.isdigit() and len(tail) < 12 else None


class _Protocol(AMIProtocol):  # type: ignore[misc]
    """Keeps one malformed message from taking the connection (and every tracked call) down with it,
    and one endless message from taking the memory: panoramisk keeps the unfinished message as a string
    it re-joins with every chunk, without a bound."""

    def handle_message(self, message: Message) -> None:
        try:
            super().handle_message(message)
        except Exception:
            # The event's name and keys only: a whole message carries callers' numbers and names.
            log.exception("ami.message_skipped", ami_event=message.get("Event", ""), keys=sorted(message)[:20])

    def data_received(self, data: bytes) -> None:
        pending = sum(len(part) for part in self.queue)
        if pending + len(data) > MAX_MESSAGE_BYTES:
            log.warning("ami.oversize_message_dropped", size=pending + len(data), limit=MAX_MESSAGE_BYTES)
            self.queue.clear()
            # The rest of the oversize message may follow in the next chunks: parsed, it is junk (no
            # Event/Response line) and skipped; the next real message starts after a blank line.
            data = data[-MAX_MESSAGE_BYTES:] if len(data) > MAX_MESSAGE_BYTES else data
        try:
            super().data_received(data)
        except Exception:
            log.exception("ami.data_skipped", size=len(data))
            self.queue.clear()


class _Manager(Manager):  # type: ignore[misc]
    """panoramisk's Manager with its own reconnect timer and ping switched off: the supervisor does both."""

    def __init__(self, on_lost: Callable[[Any], None], **config: Any) -> None:
        super().__init__(**config)
        self._on_lost = on_lost

    def connection_made(self, f: asyncio.Future[Any]) -> None:
        if f.cancelled() or f.exception() is not None:
            self._on_lost(None if f.cancelled() else f.exception())
            return
        super().connection_made(f)

    def connection_lost(self, exc: Any) -> None:
        self._connected = False
        while self.awaiting_actions:
            action = self.awaiting_actions.popleft()
            if not action.future.done():
                action.future.set_exception(AmiNotConnected(f"link lost during {action['action']}"))
        self._on_lost(exc)

    def ping(self) -> None:
        """Disabled: panoramisk's ping never looks at the answer; the supervisor's does."""


def channel_up(channel: Message) -> bool:
    """Whether a channel of :meth:`AmiClient.channels` is answered (``ChannelState: 6``, ``Up``)."""
    return str(channel.get("ChannelState", "")) == "6"


class AmiClient:
    def __init__(
        self,
        config: AmiConfig,
        *,
        on_event: EventHandler,
        on_ready: ReadyHandler,
        on_down: DownHandler | None = None,
    ) -> None:
        self.config = config
        self._on_event = on_event
        self._on_ready = on_ready
        self._on_down = on_down
        #: Set by this session's FullyBooted: Asterisk's manager takes logins while the modules are still
        #: loading, and app_queue's actions answer "Invalid/unknown command" until it has.
        self._booted = asyncio.Event()
        self._manager: _Manager | None = None
        self._events: asyncio.Queue[Message] = asyncio.Queue()
        self._lost: asyncio.Event = asyncio.Event()
        self.ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.connects = 0
        #: Whether the last session ended before its login (a refused connect): retried quickly.
        self.connects_failed_before_login = False

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._supervise(), name="ami-supervisor"),
            asyncio.create_task(self._consume(), name="ami-events"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._close()

    def _close(self) -> None:
        self.ready.clear()
        if self._manager is not None:
            self._manager.close()
            self._manager = None

    async def wait_ready(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            await self.ready.wait()

    # -- supervision -----------------------------------------------------------------------------

    async def _supervise(self) -> None:
        delay = self.config.reconnect_min
        while True:
            refused = False
            try:
                await self._session()
                delay = self.config.reconnect_min
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                refused = isinstance(exc, AmiNotConnected) and self.connects_failed_before_login
                if refused:
                    delay = min(delay, REFUSED_RETRY_MAX)
                log.warning("ami.session_failed", error=str(exc) or type(exc).__name__, retry_in=round(delay, 2))
            finally:
                was_up = self.ready.is_set()
                self._close()
                if was_up and self._on_down is not None:
                    try:
                        self._on_down()
                    except Exception:
                        log.exception("ami.on_down_failed")
            # Jitter keeps several app instances from hammering a restarting Asterisk in lockstep.
            await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
            delay = min(delay * 2, REFUSED_RETRY_MAX if refused else self.config.reconnect_max)

    async def _session(self) -> None:
        loop = asyncio.get_running_loop()
        self._lost = asyncio.Event()
        self._booted = asyncio.Event()
        self.connects_failed_before_login = True
        lost = self._lost

        def on_lost(exc: Any) -> None:
            if exc is not None and not isinstance(exc, Exception):
                exc = None
            lost.set()

        manager = _Manager(
            on_lost,
            host=self.config.host,
            port=self.config.port,
            username=self.config.username,
            secret=self.config.secret,
            loop=loop,
            protocol_factory=_Protocol,
            ping_delay=10**9,
            reconnect_timeout=10**9,
            forgetable_actions=(),
            events=EVENT_CLASSES,
        )
        manager.register_event("*", self._enqueue)
        self._manager = manager
        try:
            await manager.connect()
        except OSError as exc:
            raise AmiNotConnected(f"cannot connect to {self.config.host}:{self.config.port}: {exc}") from None
        # panoramisk logs in from the connect task's done-callback, which runs just after our await.
        for _ in range(100):
            if manager.authenticated_future is not None or lost.is_set():
                break
            await asyncio.sleep(0)
        login = manager.authenticated_future
        if login is None:
            raise AmiError("no login attempted (username missing?)")
        async with asyncio.timeout(self.config.action_timeout):
            response = await login
        if not response.success:
            # A wrong secret does not fix itself: log loudly, the backoff keeps retrying slowly.
            log.error("ami.login_failed", user=self.config.username, message=response.get("Message", ""))
            raise AmiError("login refused")
        self.connects_failed_before_login = False
        self.connects += 1
        log.info("ami.connected", host=self.config.host, port=self.config.port, connects=self.connects)
        # Asterisk sends FullyBooted at once to a login after its boot, and to every session when a boot
        # in progress ends: asking for the queue before it would only collect "unknown command" errors.
        booted = asyncio.create_task(self._booted.wait())
        gone = asyncio.create_task(lost.wait())
        try:
            done, _ = await asyncio.wait(
                {booted, gone}, timeout=self.config.boot_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            booted.cancel()
            gone.cancel()
        if lost.is_set():
            raise AmiNotConnected("link lost while Asterisk was booting")
        if not done:
            log.warning("ami.boot_unconfirmed", waited=self.config.boot_timeout)
        self.ready.set()
        await self._on_ready(self)
        while not lost.is_set():
            try:
                async with asyncio.timeout(self.config.ping_interval):
                    await lost.wait()
            except TimeoutError:
                await self.action({"Action": "Ping"}, timeout=self.config.ping_timeout)
        log.warning("ami.disconnected")

    def _enqueue(self, _manager: Any, message: Message) -> None:
        if message.get("Event") == "FullyBooted":
            self._booted.set()
        self._events.put_nowait(message)

    async def _consume(self) -> None:
        """One consumer keeps Asterisk's event order, which the call timeline depends on."""
        while True:
            message = await self._events.get()
            try:
                await self._on_event(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ami.event_failed", ami_event=message.get("Event", ""))
            finally:
                self._events.task_done()

    async def drain(self) -> None:
        """Wait until every event received so far is handled (tests and orderly shutdown)."""
        await self._events.join()

    # -- actions ---------------------------------------------------------------------------------

    async def action(self, action: dict[str, str], *, as_list: bool = False, timeout: float | None = None) -> Any:
        """Send one action; a Message back (a list of them with ``as_list``), or AmiError / AmiNotConnected."""
        manager = self._manager
        if manager is None or not self.ready.is_set():
            raise AmiNotConnected(f"AMI not connected for {action.get('Action')}")
        future = manager.send_action(dict(action), as_list=as_list)
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # arrives as the answer does, and then stop() waits for ever.
            async with asyncio.timeout(timeout or self.config.action_timeout):
                result = await future
        except TimeoutError:
            future.cancel()
            if action.get("Action") == "Ping":
                log.warning("ami.ping_timeout")
                self._lost.set()
            raise AmiError(f"{action.get('Action')}: no answer within timeout") from None
        first = result[0] if isinstance(result, list) and result else result
        if isinstance(first, Message) and not first.success:
            raise AmiError(f"{action.get('Action')}: {first.get('Message', 'failed')}")
        return result

    async def channels(self, *, timeout: float = 10) -> list[Message]:
        """Every channel Asterisk has now (``CoreShowChannels``: one ``CoreShowChannel`` event each, with
        ``Channel``, ``Uniqueid`` and ``ChannelState``); AmiError / AmiNotConnected when it cannot tell."""
        answer = await self.action({"Action": "CoreShowChannels"}, as_list=True, timeout=timeout)
        items = answer if isinstance(answer, list) else [answer]
        return [m for m in items if str(m.get("Event", "")).lower() == "coreshowchannel"]

    async def originate(
        self,
        reference: str,
        channel: str,
        context: str,
        *,
        ring_seconds: int,
        variables: Mapping[str, str],
        exten: str = "s",
        caller_id: str = CENTRE_CALLER_ID,
        other_channel_id: str | None = None,
    ) -> None:
        """Place a call: an asynchronous Originate of ``channel`` into ``context,exten,1``.

        ``reference`` (``<prefix>-<id>``, read back with :func:`match_reference`) is both the ActionID,
        which the later ``OriginateResponse`` carries, and the ChannelId, which becomes the new channel's
        Uniqueid and so matches its ``Hangup``/``DialEnd``. Asterisk answers "successfully queued" at
        once; whether anyone picked up arrives later (:func:`originate_outcome`).

        ``other_channel_id`` is the Uniqueid of a ``Local/`` channel's other half (the one that runs the
        ``Local/exten@context`` dialplan), so its events are matched by id too (an app report in the queue).
        """
        action = {
            "Action": "Originate",
            "ActionID": reference,
            "ChannelId": reference,
            "Channel": channel,
            "Context": context,
            "Exten": exten,
            "Priority": "1",
            "Timeout": str(ring_seconds * 1000),
            "CallerID": caller_id,
            "Variable": ",".join(f"{k}={v}" for k, v in variables.items()),
            "Async": "true",
        }
        if other_channel_id is not None:
            action["OtherChannelId"] = other_channel_id
        await self.action(action)
