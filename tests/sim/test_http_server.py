"""``SimServer`` as an embeddable object: TLS material, addresses, and a stop that leaves nothing behind."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from pve_sim.scenario import load_scenario
from pve_sim.server import SimServer
from tests.fixtures.sim import LAB_SCENARIO, SimServerFactory

TOKEN = "PVEAPIToken=ctoperator@pve!operator=6f5d2c9e-3b1a-4f8e-9c7d-2a4b6e8f0a1c"


def get_version(url: str, ca: Path) -> requests.Response:
    session = requests.Session()
    session.trust_env = False
    with session:
        return session.get(f"{url}/api2/json/version", headers={"Authorization": TOKEN}, verify=str(ca))


def test_certificate_names_every_loopback_spelling(pve_sim_server: SimServerFactory) -> None:
    sim = pve_sim_server()
    cert = x509.load_pem_x509_certificate(sim.tls.cert_path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert sim.tls.key_path.stat().st_mode & 0o077 == 0

    # A strict verifier (hostname check, X.509 strict mode where available) accepts it by name.
    context = ssl.create_default_context(cafile=str(sim.ca_path))
    context.verify_flags |= getattr(ssl, "VERIFY_X509_STRICT", 0)
    with socket.create_connection(("127.0.0.1", sim.port)) as raw, context.wrap_socket(
        raw, server_hostname="localhost"
    ) as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_another_servers_ca_does_not_verify(pve_sim_server: SimServerFactory) -> None:
    first, second = pve_sim_server(), pve_sim_server()
    with pytest.raises(requests.exceptions.SSLError):
        get_version(first.url, second.ca_path)


def test_ipv6_loopback(pve_sim_server: SimServerFactory) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        sim = pve_sim_server(host="::1")
    except OSError as exc:
        pytest.skip(f"cannot bind ::1: {exc}")
    assert sim.url == f"https://[::1]:{sim.port}"
    assert get_version(sim.url, sim.ca_path).json()["data"]["version"] == "9.1.2"
    assert sim.proxmox().version.get()["version"] == "9.1.2"


def test_stop_closes_every_connection_and_thread(tmp_path: Path) -> None:
    threads_before = set(threading.enumerate())
    sim = SimServer(load_scenario(LAB_SCENARIO), time_scale=0.0, cert_dir=tmp_path)
    with sim:
        idle = requests.Session()
        idle.trust_env = False
        response = idle.get(f"{sim.api_url}/version", headers={"Authorization": TOKEN}, verify=str(sim.ca_path))
        assert response.headers["Connection"] == "Keep-Alive"  # an idle keep-alive connection stays open
        silent = socket.create_connection(("127.0.0.1", sim.port))  # connected, never says a word
        port = sim.port
    assert not sim.running

    assert set(threading.enumerate()) - threads_before == set()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    silent.settimeout(5)
    # closed: EOF if it had been accepted, a reset if it was still in the listen backlog
    with contextlib.suppress(ConnectionResetError):
        assert silent.recv(1) == b""
    silent.close()
    with pytest.raises(requests.exceptions.ConnectionError):
        idle.get(f"{sim.api_url}/version", headers={"Authorization": TOKEN}, verify=str(sim.ca_path))
    assert (tmp_path / "pve-root-ca.pem").exists()  # a given cert_dir is the caller's, kept
    sim.stop()  # a second stop is harmless


def test_own_certificate_directory_is_removed(pve_sim_server: SimServerFactory) -> None:
    sim = pve_sim_server()
    ca = sim.ca_path
    assert ca.exists()
    sim.stop()
    assert not ca.parent.exists()
    with pytest.raises(RuntimeError):
        sim.start()
