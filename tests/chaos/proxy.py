"""A tiny TCP proxy that misbehaves on demand, between the operator and pve_sim.

The pool's ``spec.endpoint`` points at the proxy; TLS passes through untouched (the proxy only moves
bytes, so the simulator's certificate for 127.0.0.1 still verifies). Three modes:

* ``forward``: every connection is piped to the target, both ways;
* ``refuse``: a new connection is accepted and reset at once (RST, as a closed port or a firewall's
  reject looks to a client that already resolved the address);
* ``blackhole``: a new connection is accepted and never answered; what the client sends is read and
  dropped (a hung load balancer, a dead NAT entry).

Switching mode aborts every open connection, so a keep-alive connection from before the switch cannot
keep working through a fault. An asyncio loop in a daemon thread serves it; the methods are thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any, Literal

Mode = Literal["forward", "refuse", "blackhole"]
MODES: tuple[Mode, ...] = ("forward", "refuse", "blackhole")


class ChaosProxy:
    """``ChaosProxy(target_host, target_port).start()``; ``set_mode("blackhole")``; ``stop()``."""

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.host = host
        self._requested_port = port
        self._mode: Mode = "forward"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self.accepted: dict[Mode, int] = dict.fromkeys(MODES, 0)
        """Connections accepted in each mode (read from tests)."""

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> ChaosProxy:
        assert self._loop is None, "already started"
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="chaos-proxy", daemon=True)
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._handle, self.host, self._requested_port))
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            self._abort_all()
            if self._server is not None:
                await self._server.wait_closed()

        with contextlib.suppress(Exception):
            self._call(shutdown(), timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = self._server = None

    def __enter__(self) -> ChaosProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- control --------------------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        return self._mode

    def set_mode(self, mode: Mode) -> None:
        """Switch mode; every open connection is aborted, new ones get the new treatment."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")

        async def switch() -> None:
            self._mode = mode
            self._abort_all()

        self._call(switch())

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def open_connections(self) -> int:
        return len(self._open)

    # -- internals ------------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, Any], timeout: float = 10) -> Any:
        assert self._loop is not None, "not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _abort_all(self) -> None:
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mode = self._mode
        self.accepted[mode] += 1
        if mode == "refuse":
            sock = writer.get_extra_info("socket")
            if sock is not None:  # close with RST, not FIN: the client sees "connection reset"
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        self._open.add(writer)
        try:
            if mode == "blackhole":
                while await reader.read(65536):
                    pass  # read and drop; never answer
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                writer.transport.abort()
                return
            self._open.add(up_writer)
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                self._open.discard(up_writer)
                up_writer.transport.abort()
        except (ConnectionError, OSError):
            pass
        finally:
            self._open.discard(writer)
            writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()
