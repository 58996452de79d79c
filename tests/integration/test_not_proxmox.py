"""A server that is not Proxmox VE is told as NotProxmox, not as a permission or parameter problem.

Seen in a review: `insecureSkipVerify` against a server that is not PVE reported `PermissionDenied
403`. Here the other server is a real HTTPS server (Python's http.server) answering like a web
server or a proxy's login page does: HTML, whatever the path.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pve_operator.pve.client import PveClient, PveCredentials, TlsSettings
from pve_operator.pve.errors import PveNotProxmox, PvePermissionError
from pve_sim.tls import generate_tls_material


class _WebPage(http.server.BaseHTTPRequestHandler):
    status = 403

    def do_GET(self) -> None:
        body = b"<html><head><title>403 Forbidden</title></head><body>nginx</body></html>"
        self.send_response(self.status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Server", "nginx/1.24.0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(params=[403, 200], ids=["html-403", "html-200"])
def web_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    material = generate_tls_material(tmp_path / "tls")
    handler = type("Page", (_WebPage,), {"status": request.param})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = material.server_context().wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", material.ca_path.read_text()
    server.shutdown()
    server.server_close()


def test_an_html_answer_is_not_proxmox(web_server: tuple[str, str]) -> None:
    url, ca = web_server
    credentials = PveCredentials(token_id="ctoperator@pve!operator", token_secret="0badc0de-secret")
    with PveClient(url, credentials, TlsSettings(ca_pem=ca)) as pve, pytest.raises(PveNotProxmox) as caught:
        pve.version()
    assert not isinstance(caught.value, PvePermissionError)
    message = str(caught.value)
    assert "not with Proxmox VE's JSON" in message and "text/html" in message and "nginx" in message
    assert "0badc0de-secret" not in message


def test_proxmox_errors_stay_what_they_are(pve_sim_server: object) -> None:
    sim = pve_sim_server(time_scale=0.0)  # type: ignore[operator]
    credentials = PveCredentials(token_id="ctoperator@pve!operator", token_secret="0badc0de-wrong")
    tls = TlsSettings(ca_pem=Path(sim.ca_path).read_text())
    with PveClient(sim.url, credentials, tls) as pve, pytest.raises(Exception) as caught:
        pve.version()
    assert not isinstance(caught.value, PveNotProxmox), caught.value
