"""The simulator's HTTPS server and its in-process API (``SimServer``).

One thread per connection (stdlib ``socketserver``), TLS with a certificate minted at start
(``tls.py``), HTTP/1.1 keep-alive so ``requests`` sessions (and thus proxmoxer) reuse
connections. This module only moves bytes: it frames requests, enforces size limits and timeouts,
and writes whatever ``protocol.ApiDispatcher`` answers. It is written to survive hostile input:
every request that gets as far as a request line gets a well-formed HTTP answer, nothing a client
sends can raise out of a connection thread, and limits bound what a client can make it hold.

Limits follow PVE's API daemon (pve-http-server ``AnyEvent.pm``): at most 64 header lines and 8 KiB
of headers, 512 KiB of body, 5 s idle keep-alive timeout. A plain-HTTP request on the TLS port is
redirected to https, as pveproxy does.

``SimServer`` is what tests and embedders use::

    with SimServer("examples/scenarios/two-nodes.yaml") as sim:
        prox = ProxmoxAPI("127.0.0.1", port=sim.port, user="root@pam", password=...,
                          verify_ssl=str(sim.ca_path))

``stop()`` closes the listening socket, wakes and closes every open connection and joins every
thread before it returns.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import shutil
import socket
import socketserver
import ssl
import tempfile
import threading
from io import BufferedReader
from pathlib import Path
from typing import Any, Self

from .admin import AdminApi
from .auth import TicketAuthority
from .cluster import SimCluster
from .protocol import (
    KNOWN_METHODS,
    MAX_POST_BYTES,
    ApiDispatcher,
    HttpRequest,
    HttpResponse,
    plain_error,
    render_response,
)
from .scenario import Scenario, load_scenario
from .tls import TlsMaterial, generate_tls_material

log = logging.getLogger("pve_sim.server")

MAX_REQUEST_LINE_BYTES = 64 * 1024
MAX_HEADER_LINES = 64
MAX_HEADER_BYTES = 8 * 1024
IDLE_TIMEOUT_SECONDS = 5.0
"""PVE's API daemon drops idle keep-alive connections after 5 s; clients reconnect transparently."""
HANDSHAKE_TIMEOUT_SECONDS = 10.0
MAX_CONNECTIONS = 256
_DRAIN_LIMIT_BYTES = 2 * 1024 * 1024
_LINGER_SECONDS = 1.0
_TLS_HANDSHAKE_RECORD = 0x16

_REQUEST_LINE_RE = re.compile(r"^(\S+) (\S+) HTTP/(\d+)\.(\d+)$")
_HEADER_RE = re.compile(r"^([^:\s]+)\s*:\s*(.*)$")
_CONTINUATION_RE = re.compile(r"^\s+(.*)$")


class _ClientGone(Exception):
    """The peer closed or timed out mid-request: nothing to answer."""


class _BadRequest(Exception):
    """A request whose framing cannot be trusted (e.g. a bad Content-Length): 400, then close."""


class _Connection:
    """Serves the requests of one accepted connection, TLS or (for the redirect) plain."""

    def __init__(self, sock: socket.socket, client: str, server: _HttpsServer, *, tls: bool) -> None:
        self._sock = sock
        self._client = client
        self._server = server
        self._tls = tls
        self._rfile: BufferedReader = sock.makefile("rb", buffering=64 * 1024)  # type: ignore[assignment]

    def serve(self) -> None:
        try:
            while not self._server.stopping.is_set():
                if not self._serve_one():
                    break
        except (_ClientGone, OSError, ssl.SSLError, ValueError):
            pass  # peer went away, timed out, or the server is stopping: nothing left to answer
        finally:
            with contextlib.suppress(OSError):
                self._rfile.close()

    def _send(self, response: HttpResponse, *, method: str | None, keep_alive: bool, accept_gzip: bool) -> None:
        self._sock.sendall(
            render_response(response, request_method=method, keep_alive=keep_alive, accept_gzip=accept_gzip)
        )

    def _serve_one(self) -> bool:
        """Read, answer and account for one request; False when the connection must close."""
        self._sock.settimeout(IDLE_TIMEOUT_SECONDS)
        parsed = self._read_head()
        if parsed is None:
            return False
        if isinstance(parsed, HttpResponse):
            self._send(parsed, method=None, keep_alive=False, accept_gzip=False)
            self._close_gracefully()
            return False
        method, target, version, headers = parsed
        request = HttpRequest(method=method, target=target, headers=headers, client=self._client)

        if not self._tls:
            self._send(self._redirect(request), method=method, keep_alive=False, accept_gzip=False)
            self._close_gracefully()
            return False

        try:
            fully_read = self._read_body(request)
        except _BadRequest as exc:
            self._send(plain_error(400, str(exc)), method=method, keep_alive=False, accept_gzip=False)
            self._close_gracefully()
            return False
        response = self._server.dispatcher.handle(request)
        keep_alive = (
            fully_read
            and not response.close
            and _wants_keep_alive(version, request.header("connection"))
            and not self._server.stopping.is_set()
        )
        accept_gzip = "gzip" in (request.header("accept-encoding") or "")
        self._send(response, method=method, keep_alive=keep_alive, accept_gzip=accept_gzip)
        if not keep_alive:
            self._close_gracefully()
            return False
        return True

    def _read_line(self, limit: int) -> bytes:
        try:
            return self._rfile.readline(limit + 1)
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            raise _ClientGone from exc

    def _read_head(self) -> tuple[str, str, tuple[int, int], list[tuple[str, str]]] | HttpResponse | None:
        """Request line and headers, an error response for malformed ones, or None at EOF."""
        line = self._read_line(MAX_REQUEST_LINE_BYTES)
        blank_lines = 0
        while line in (b"\r\n", b"\n"):  # PVE ignores empty lines before a request
            blank_lines += 1
            if blank_lines > 16:
                return plain_error(400, "bad request")
            line = self._read_line(MAX_REQUEST_LINE_BYTES)
        if not line:
            return None
        if len(line) > MAX_REQUEST_LINE_BYTES or not line.endswith(b"\n"):
            return plain_error(400, "bad request")
        match = _REQUEST_LINE_RE.match(line.decode("latin-1").rstrip("\r\n"))
        if match is None:
            return plain_error(400, "bad request")
        method, target = match.group(1), match.group(2)
        major, minor = int(match.group(3)[:6]), int(match.group(4)[:6])
        if major != 1:
            return plain_error(506, f"http protocol version {major}.{minor} not supported")
        if re.match(r"^[^/]*@", target):
            # An '@' before the first '/' could make a proxy read the URL as an authority.
            return plain_error(400, "invalid url")

        headers: list[tuple[str, str]] = []
        key: str | None = None
        value = ""
        count = 0
        size = 0
        while True:
            count += 1
            if count >= MAX_HEADER_LINES:
                return plain_error(400, f"too many http header lines (> {MAX_HEADER_LINES})")
            raw = self._read_line(MAX_HEADER_BYTES)
            if not raw:
                raise _ClientGone
            size += len(raw)
            if size >= MAX_HEADER_BYTES:
                return plain_error(400, "http header too large")
            text = raw.decode("latin-1").rstrip("\r\n")
            if text == "":
                if key is not None:
                    headers.append((key, value))
                break
            header = _HEADER_RE.match(text)
            if header is not None:
                if key is not None:
                    headers.append((key, value))
                key, value = header.group(1), header.group(2).strip()
                continue
            continuation = _CONTINUATION_RE.match(text)
            if continuation is not None and key is not None:
                value = f"{value} {continuation.group(1).strip()}"
                continue
            return plain_error(506, "unable to parse request header")
        return method, target, (major, minor), headers

    def _read_body(self, request: HttpRequest) -> bool:
        """Read the declared body into ``request``; False when it was left unread on the wire."""
        declared = request.header("content-length")
        if request.header("transfer-encoding") or request.method not in KNOWN_METHODS:
            # The dispatcher refuses these (501) and the connection closes; a body, if any, is not read.
            return declared is None
        if declared is None:
            return True
        text = declared.strip()
        if not text.isdigit() or len(text) > 12:
            raise _BadRequest("invalid Content-Length header")
        length = int(text)
        request.content_length = length
        if length > MAX_POST_BYTES:
            request.body_too_large = True
            return False
        if length == 0:
            return True
        if (request.header("expect") or "").lower() == "100-continue":
            self._sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            body = self._rfile.read(length)
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            raise _ClientGone from exc
        if len(body) != length:
            raise _ClientGone
        request.body = body
        return True

    def _redirect(self, request: HttpRequest) -> HttpResponse:
        """pveproxy's answer to plain HTTP on its TLS port: go to the same URL over https."""
        host = request.header("host")
        if not host:
            return plain_error(400, "Header field 'Host' not found in request")
        location = f"https://{re.sub(r'^https?://', '', host)}{request.target}"
        if len(location) > 16 * 1024:
            return plain_error(400, "bad request")
        if request.method in ("GET", "HEAD"):
            response = plain_error(301, "Moved Permanently")
        else:
            response = plain_error(308, "Permanent Redirect")
        response.extra_headers.append(("Location", location))
        return response

    def _close_gracefully(self) -> None:
        """End our side, then read and discard what the client is still sending, briefly.

        The client may still be sending (a body we refused, junk after a bad request line).
        Closing a socket with unread input makes the kernel send a reset, which can destroy the
        response before the client reads it; half-closing first tells the client we are done, and
        draining lets its send finish. Bounded in time and bytes, so a client cannot pin us here.
        """
        with contextlib.suppress(OSError, ValueError):
            # The raw TCP half-close: no TLS close_notify, which clients framing by
            # Content-Length never wait for.
            socket.socket.shutdown(self._sock, socket.SHUT_WR)
        try:
            self._sock.settimeout(_LINGER_SECONDS)
            drained = 0
            while drained < _DRAIN_LIMIT_BYTES:
                chunk = self._rfile.read1(64 * 1024)
                if not chunk:
                    break
                drained += len(chunk)
        except (TimeoutError, OSError, ssl.SSLError, ValueError):
            pass


def _wants_keep_alive(version: tuple[int, int], connection: str | None) -> bool:
    """HTTP/1.1 keeps alive unless told to close; HTTP/1.0 only when it asks for keep-alive."""
    if connection is not None:
        return "close" not in connection.lower()
    return version >= (1, 1)


class _HttpsServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """Accepts connections; the TLS handshake runs in the connection's own thread.

    Handshaking in the accept loop would let one silent client stall every other connection.
    """

    allow_reuse_address = True
    # Daemon threads never hold up interpreter exit; stop() still joins every one of them
    # (socketserver itself only tracks non-daemon threads, hence our own list).
    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        *,
        family: socket.AddressFamily,
        ssl_context: ssl.SSLContext,
        dispatcher: ApiDispatcher,
        stopping: threading.Event,
    ) -> None:
        self.address_family = family
        self.ssl_context = ssl_context
        self.dispatcher = dispatcher
        self.stopping = stopping
        self._live_lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self._connection_threads: list[threading.Thread] = []
        super().__init__(address, socketserver.BaseRequestHandler, bind_and_activate=True)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            # Serve exactly the address asked for (::1), not an IPv4-mapped wildcard as well.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()

    def get_request(self) -> tuple[Any, Any]:
        sock, address = self.socket.accept()
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, address

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"pve-sim-conn-{client_address[0]}:{client_address[1]}",
            daemon=True,
        )
        with self._live_lock:
            self._connection_threads = [t for t in self._connection_threads if t.is_alive()]
            self._connection_threads.append(thread)
        thread.start()

    def join_connection_threads(self) -> None:
        with self._live_lock:
            threads, self._connection_threads = self._connection_threads, []
        for thread in threads:
            thread.join()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self._live_lock:
            if len(self._live) >= MAX_CONNECTIONS or self.stopping.is_set():
                log.warning("refusing connection from %s: %d connections open", client_address[0], len(self._live))
                return False
            self._live.add(request)
        return True

    def finish_request(self, request: Any, client_address: Any) -> None:
        raw: socket.socket = request
        client = str(client_address[0])
        conn: socket.socket = raw
        try:
            raw.settimeout(HANDSHAKE_TIMEOUT_SECONDS)
            first = raw.recv(1, socket.MSG_PEEK)
            if not first:
                return
            tls = first[0] == _TLS_HANDSHAKE_RECORD
            if tls:
                conn = self.ssl_context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
                self._swap_live(raw, conn)
                conn.do_handshake()
            _Connection(conn, client, self, tls=tls).serve()
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.debug("connection from %s ended: %s", client, exc)
        except Exception:
            log.exception("unexpected error on a connection from %s", client)
        finally:
            with self._live_lock:
                self._live.discard(conn)
                self._live.discard(raw)
            _close_quietly(conn)

    def _swap_live(self, old: socket.socket, new: socket.socket) -> None:
        with self._live_lock:
            self._live.discard(old)
            self._live.add(new)

    def shutdown_request(self, request: Any) -> None:
        # finish_request closed the (possibly TLS-wrapped) socket already; the raw object is detached.
        _close_quietly(request)

    def wake_connections(self) -> None:
        """Shut down every open connection so threads blocked in reads return at once."""
        with self._live_lock:
            live = list(self._live)
        for sock in live:
            # The base-class shutdown: SSLSocket.shutdown would also drop its TLS state under the
            # feet of the thread that is reading from it.
            with contextlib.suppress(OSError, ValueError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("error serving %s", client_address)


def _close_quietly(sock: socket.socket) -> None:
    with contextlib.suppress(OSError, ValueError):
        sock.close()


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class SimServer:
    """A running simulator: cluster model + HTTPS API + admin endpoint on one port.

    ``scenario`` is a parsed :class:`~pve_sim.scenario.Scenario` or a path to a scenario file.
    ``time_scale`` overrides the scenario's (0 = manual clock, tasks finish at once).
    ``cert_dir`` keeps the TLS files there (default: a temporary directory removed at stop).
    ``auth_failure_delay_seconds`` delays every 401 like PVE's 3 s (tests use 0).
    """

    def __init__(
        self,
        scenario: Scenario | str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        time_scale: float | None = None,
        cert_dir: str | Path | None = None,
        auth_failure_delay_seconds: float = 0.0,
        admin_token: str | None = None,
    ) -> None:
        if auth_failure_delay_seconds < 0:
            raise ValueError("auth_failure_delay_seconds must be >= 0")
        parsed = scenario if isinstance(scenario, Scenario) else load_scenario(Path(scenario))
        self.scenario = parsed
        self.cluster = SimCluster.from_scenario(parsed, time_scale=time_scale)
        self._host = host.strip("[]")
        self._requested_port = port
        self._cert_dir = Path(cert_dir) if cert_dir is not None else None
        self._own_cert_dir: Path | None = None
        self.auth_failure_delay_seconds = auth_failure_delay_seconds
        self.admin_token = admin_token or secrets.token_urlsafe(24)
        self._stopping = threading.Event()
        self._httpd: _HttpsServer | None = None
        self._thread: threading.Thread | None = None
        self._tls: TlsMaterial | None = None
        self._lock = threading.Lock()

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> Self:
        """Generate TLS material, bind, and serve in a background thread. Returns self."""
        with self._lock:
            if self._httpd is not None:
                raise RuntimeError("the simulator is already running")
            if self._stopping.is_set():
                raise RuntimeError("a stopped SimServer cannot be restarted; create a new one")
            cert_dir = self._cert_dir
            if cert_dir is None:
                cert_dir = self._own_cert_dir = Path(tempfile.mkdtemp(prefix="pve-sim-tls-"))
            extra = [] if self._host in ("127.0.0.1", "::1", "localhost") else [self._host]
            self._tls = generate_tls_material(cert_dir, extra_names=extra)
            family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
            dispatcher = ApiDispatcher(
                self.cluster,
                TicketAuthority(self.cluster.clock),
                AdminApi(self.cluster, self.admin_token),
                auth_failure_delay_seconds=self.auth_failure_delay_seconds,
                stop_event=self._stopping,
            )
            try:
                self._httpd = _HttpsServer(
                    (self._host, self._requested_port),
                    family=family,
                    ssl_context=self._tls.server_context(),
                    dispatcher=dispatcher,
                    stopping=self._stopping,
                )
            except BaseException:
                self._remove_own_cert_dir()
                raise
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.2},
                name=f"pve-sim-{self.port}",
                daemon=True,
            )
            self._thread.start()
            log.info("pve_sim serving cluster %r on %s", self.cluster.name, self.url)
            return self

    def stop(self) -> None:
        """Stop accepting, close every connection, join every thread. Safe to call twice."""
        with self._lock:
            self._stopping.set()
            httpd, thread = self._httpd, self._thread
            self._httpd = self._thread = None
            if httpd is None:
                self._remove_own_cert_dir()
                return
            httpd.shutdown()  # the accept loop has ended when this returns
            httpd.server_close()
            httpd.wake_connections()
            httpd.join_connection_threads()
            if thread is not None:
                thread.join()
            self._remove_own_cert_dir()
            log.info("pve_sim stopped")

    def _remove_own_cert_dir(self) -> None:
        if self._own_cert_dir is not None:
            shutil.rmtree(self._own_cert_dir, ignore_errors=True)
            self._own_cert_dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._httpd is not None

    # -- connection details -----------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port (the ephemeral one chosen by the OS when asked for port 0)."""
        if self._httpd is not None:
            return int(self._httpd.server_address[1])
        return self._requested_port

    @property
    def url(self) -> str:
        """``https://127.0.0.1:PORT``."""
        return f"https://{_format_host(self._host)}:{self.port}"

    @property
    def api_url(self) -> str:
        """``https://127.0.0.1:PORT/api2/json``, proxmoxer's base URL."""
        return f"{self.url}/api2/json"

    @property
    def tls(self) -> TlsMaterial:
        if self._tls is None:
            raise RuntimeError("the simulator has not been started")
        return self._tls

    @property
    def ca_path(self) -> Path:
        """The CA certificate that verifies this server (pass as ``verify_ssl`` / ``--cacert``)."""
        return self.tls.ca_path
