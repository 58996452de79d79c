"""The chaos proxy itself (tests/chaos/proxy.py): forward, refuse, blackhole, and mode switches.

Fast and without a control plane: a plain TCP echo server, and pve_sim over TLS through the proxy.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.chaos.proxy import ChaosProxy

pytestmark = [pytest.mark.chaos]


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    yield str(host), int(port)
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(echo: tuple[str, int]) -> Iterator[ChaosProxy]:
    with ChaosProxy(*echo) as started:
        yield started


def _connect(proxy: ChaosProxy, timeout: float = 2.0) -> socket.socket:
    return socket.create_connection((proxy.host, proxy.port), timeout=timeout)


def _closed_by_peer(sock: socket.socket) -> bool:
    """True when the peer closed (FIN) or reset (RST) the connection; False when it just stays silent."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_forward_pipes_both_ways(proxy: ChaosProxy) -> None:
    with _connect(proxy) as sock:
        sock.sendall(b"hello")
        assert sock.recv(5) == b"hello"
    assert proxy.accepted["forward"] == 1


def test_refuse_resets_every_new_connection_at_once(proxy: ChaosProxy) -> None:
    proxy.set_mode("refuse")
    for _ in range(3):
        started = time.monotonic()
        try:
            with _connect(proxy, timeout=5) as sock:  # the reset may already reach connect() on loopback
                assert _closed_by_peer(sock)
        except ConnectionResetError:
            pass
        assert time.monotonic() - started < 4, "reset at once, not after a timeout"
    assert proxy.accepted["refuse"] == 3
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://{proxy.host}:{proxy.port}/", timeout=5)


def test_blackhole_accepts_and_never_answers(proxy: ChaosProxy) -> None:
    proxy.set_mode("blackhole")
    with _connect(proxy, timeout=0.5) as sock:
        sock.sendall(b"anyone there?")
        assert not _closed_by_peer(sock), "the connection stays open and silent"
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"http://{proxy.host}:{proxy.port}/", timeout=(2, 0.5))


def test_a_mode_switch_aborts_open_connections_and_forward_works_again(proxy: ChaosProxy) -> None:
    with _connect(proxy) as sock:
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
        proxy.set_mode("blackhole")
        assert _closed_by_peer(sock), "a connection from before the fault must not keep working through it"
    proxy.set_mode("forward")
    with _connect(proxy) as sock:
        sock.sendall(b"again")
        assert sock.recv(5) == b"again"
    assert proxy.open_connections <= 2  # the last pair, until its close is noticed


def test_an_unreachable_target_is_a_closed_connection(echo: tuple[str, int]) -> None:
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        free_port = spare.getsockname()[1]
    with ChaosProxy("127.0.0.1", free_port) as proxy, _connect(proxy) as sock:
        assert _closed_by_peer(sock)


def test_stop_closes_the_port_and_unknown_modes_are_refused(echo: tuple[str, int]) -> None:
    proxy = ChaosProxy(*echo).start()
    port = proxy.port
    with pytest.raises(ValueError, match="mode must be one of"):
        proxy.set_mode("drop")  # type: ignore[arg-type]
    proxy.stop()
    proxy.stop()  # twice is fine
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_tls_to_pve_sim_passes_through_and_verifies(pve_sim_server: Any) -> None:
    sim = pve_sim_server()
    with ChaosProxy(sim.host, sim.port) as proxy:
        session = sim.session()
        answer = session.get(f"{proxy.url}/api2/json/version", timeout=10)
        assert answer.status_code == 401  # pve_sim answered (no credentials), over TLS verified with its CA
        proxy.set_mode("refuse")
        with pytest.raises(requests.exceptions.ConnectionError):
            sim.session().get(f"{proxy.url}/api2/json/version", timeout=5)
        proxy.set_mode("forward")
        assert sim.session().get(f"{proxy.url}/api2/json/version", timeout=10).status_code == 401
