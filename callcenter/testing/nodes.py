"""Several app nodes on one PostgreSQL database against one test PBX: the layout of docs/nodes.md, as
child processes, for the chaos tests (tests/e2e/test_nodes_chaos.py) and benchmark P7.

Each node is a whole ``callcenter run`` (``AppProcess``) with its own web and FastAGI port and the same
store URL, AMI account and AGI secret; which of them leads is asked from each node's ``/healthz``
(``leader``), never assumed. A node can be given its own AMI port (a TCP proxy in front of Asterisk's, to
cut that node's link alone: :class:`TcpProxy`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from callcenter.pbx.harness import TestPbx
from callcenter.testing.app import AppProcess, pbx_env
from callcenter.testing.sipp import free_port
from callcenter.testing.wait import until

__all__ = ["AppNodes", "StartNodes", "TcpProxy", "health", "node_name"]


async def health(node: AppProcess) -> dict[str, Any] | None:
    """A running node's ``/healthz`` body (200 or 503: a node without AMI still answers); ``None`` when
    it does not answer (killed, not started yet)."""
    if node.proc is None or node.proc.returncode is not None:
        return None
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
            http.get(f"{node.base_url}/healthz") as resp,
        ):
            body: dict[str, Any] = await resp.json()
            return body
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


def node_name(index: int) -> str:
    """``node1``, ``node2``…: the names the two-node tests, the bench and the demo give their nodes."""
    return f"node{index + 1}"


class AppNodes:
    """``count`` app nodes on ``store_url``; node *i* serves FastAGI on ``agi_ports[i]``.

    ``env`` goes to every node, ``node_env[i]`` to node *i* only (e.g. its own ``CALLCENTER_AMI_PORT``).
    Logs: ``<log_dir>/node<i>.log`` (JSON lines, ``AppProcess.events``).
    """

    def __init__(
        self,
        pbx: TestPbx,
        store_url: str,
        log_dir: Path,
        agi_ports: Sequence[int],
        *,
        env: Mapping[str, str] | None = None,
        node_env: Sequence[Mapping[str, str]] = (),
    ) -> None:
        self.nodes: list[AppProcess] = []
        for i, agi_port in enumerate(agi_ports):
            own = node_env[i] if i < len(node_env) else {}
            # The node's name ([store] node): its mark on the calls it routes and in its logs.
            named = {"CALLCENTER_STORE_NODE": node_name(i)}
            node_vars = {**pbx_env(pbx, agi_port, store_url), **named, **(env or {}), **own}
            self.nodes.append(AppProcess(node_vars, log_dir / f"node{i}.log", free_port("tcp")))

    def __iter__(self) -> Any:
        return iter(self.nodes)

    def __getitem__(self, index: int) -> AppProcess:
        return self.nodes[index]

    async def start(self, *, timeout: float = 60.0) -> None:
        """Start every node (one after another: both migrate the same database on start), each healthy
        and resynchronised with Asterisk, and wait until one of them leads."""
        try:
            for node in self.nodes:
                await node.start(timeout=timeout)
                await node.wait_event("tracker.resynced", timeout=timeout)
            await self.leader(timeout=timeout)
        except BaseException:
            await self.stop()
            raise

    async def leaders(self) -> list[AppProcess]:
        """The running nodes whose ``/healthz`` says they lead now."""
        bodies = await asyncio.gather(*(health(n) for n in self.nodes))
        return [n for n, body in zip(self.nodes, bodies, strict=True) if body is not None and body.get("leader")]

    async def leader(self, *, timeout: float = 20.0, among: Sequence[AppProcess] | None = None) -> AppProcess:
        """The one node that leads, once exactly one of ``among`` (default: all) does."""
        found: list[AppProcess] = []
        candidates = list(self.nodes if among is None else among)

        async def one() -> bool:
            found[:] = [n for n in await self.leaders() if n in candidates]
            return len(found) == 1

        await until(one, timeout=timeout, interval=0.05, what="exactly one leading node")
        return found[0]

    def name(self, node: AppProcess) -> str:
        return node.env["CALLCENTER_STORE_NODE"]

    def others(self, node: AppProcess) -> list[AppProcess]:
        return [n for n in self.nodes if n is not node]

    async def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                await node.stop()


#: The e2e tier's ``start_nodes`` fixture: ``await start_nodes(store_url=None, node_env=(), env=None)``.
StartNodes = Callable[..., Awaitable[AppNodes]]


class TcpProxy:
    """A loopback TCP relay to ``127.0.0.1:<target>``: a node's own way to Asterisk's AMI, which a test
    cuts (:meth:`cut`: every relayed connection closed, new ones refused) and restores (:meth:`restore`)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def open_links(self) -> int:
        return len(self._links) // 2

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self._links.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._links.difference_update((writer, up_writer))

    async def cut(self) -> None:
        """Close the listener and every relayed connection: the node behind it loses Asterisk at once."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._links):
            w.close()
        self._links.clear()

    async def restore(self) -> None:
        """Listen again on the same port: the node's reconnect gets through."""
        if self._server is None:
            self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def stop(self) -> None:
        await self.cut()
