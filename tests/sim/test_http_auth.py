"""Authentication as PVE does it: tickets, CSRF tokens, API tokens, and the auth-layer 401s.

Logins and API calls go through proxmoxer where it can express them; ``requests`` covers the
requests proxmoxer would never send (a write without the CSRF header, a foreign ticket, ...).
"""

from __future__ import annotations

import logging
import re

import pytest
import requests
from proxmoxer import AuthenticationError, ResourceException

from pve_sim.auth import TicketAuthority
from pve_sim.clock import SimClock
from tests.fixtures.sim import SimServerFactory, SimTestServer

OPERATOR = "ctoperator@pve"
ROOT = "root@pam"
TICKET_RE = re.compile(r"^PVE:(?P<user>[^:]+):(?P<ts>[0-9A-F]{8})::\S+$")
CSRF_RE = re.compile(r"^[0-9A-F]{8}:\S+$")
TICKET_LIFETIME = 2 * 3600


@pytest.fixture
def sim(pve_sim_server: SimServerFactory) -> SimTestServer:
    return pve_sim_server()


def login(sim: SimTestServer, **form: str) -> requests.Response:
    return sim.session().post(f"{sim.api_url}/access/ticket", data=form)


def ticket_for(sim: SimTestServer, userid: str = ROOT) -> tuple[str, str]:
    response = login(sim, username=userid, password=sim.user_password(userid))
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    return data["ticket"], data["CSRFPreventionToken"]


def token_header(sim: SimTestServer) -> str:
    return f"PVEAPIToken={OPERATOR}!operator={sim.token_secret(OPERATOR, 'operator')}"


def assert_auth_layer_401(response: requests.Response, reason: str) -> None:
    assert response.status_code == 401
    assert response.reason == reason
    assert response.content == b""  # PVE's auth layer answers JSON clients without a body


# -- tickets -----------------------------------------------------------------------------------------


def test_ticket_login_through_proxmoxer(sim: SimTestServer) -> None:
    prox = sim.proxmox(ROOT)
    ticket, csrf = prox.get_tokens()
    match = TICKET_RE.match(ticket)
    assert match is not None and match.group("user") == ROOT
    assert int(match.group("ts"), 16) == int(sim.cluster.clock.now())
    assert CSRF_RE.match(csrf)
    # reads (cookie) and writes (cookie + CSRF header) both work
    assert prox.version.get()["version"] == sim.scenario.cluster.pve_version
    prox.nodes("srv-px2").lxc(3150).config.put(description="written with a ticket")
    assert prox.nodes("srv-px2").lxc(3150).config.get()["description"] == "written with a ticket\n"


def test_login_answer_shape(sim: SimTestServer) -> None:
    data = login(sim, username=OPERATOR, password=sim.user_password(OPERATOR)).json()["data"]
    assert data["username"] == OPERATOR
    assert set(data) == {"username", "ticket", "CSRFPreventionToken", "cap", "clustername"}
    assert data["clustername"] == "lab"  # the operator holds Sys.Audit on /
    assert data["cap"]["vms"]["VM.PowerMgmt"] == 1
    assert "Sys.Modify" not in data["cap"]["nodes"]


def test_realm_may_be_a_separate_parameter(sim: SimTestServer) -> None:
    response = login(sim, username="root", realm="pam", password=sim.user_password(ROOT))
    assert response.status_code == 200
    assert response.json()["data"]["username"] == ROOT


@pytest.mark.parametrize(
    ("username", "password"),
    [
        (ROOT, "wrong-password"),
        ("nobody@pve", "whatever"),
        ("root", "sim-root-password"),  # no realm
    ],
)
def test_bad_login_is_401_authentication_failure(sim: SimTestServer, username: str, password: str) -> None:
    response = login(sim, username=username, password=password)
    assert response.status_code == 401
    assert response.reason == "authentication failure"
    assert response.json() == {"data": None, "message": "authentication failure\n"}

    with pytest.raises(AuthenticationError, match="code: 401"):
        sim.proxmox(username, password=password)


def test_ticket_in_authorization_header_and_among_other_cookies(sim: SimTestServer) -> None:
    ticket, _ = ticket_for(sim)
    session = sim.session()
    by_header = session.get(f"{sim.api_url}/version", headers={"Authorization": f"PVEAuthCookie={ticket}"})
    assert by_header.status_code == 200
    by_cookie = session.get(
        f"{sim.api_url}/version", headers={"Cookie": f"theme=dark; PVEAuthCookie={ticket}; lang=en"}
    )
    assert by_cookie.status_code == 200


def test_writes_with_a_ticket_need_the_csrf_token(sim: SimTestServer) -> None:
    ticket, csrf = ticket_for(sim)
    session = sim.session()
    url = f"{sim.api_url}/nodes/srv-px2/lxc/3150/config"
    cookie = {"Cookie": f"PVEAuthCookie={ticket}"}

    assert session.get(url, headers=cookie).status_code == 200  # GET needs no CSRF token
    assert_auth_layer_401(
        session.put(url, data={"description": "x"}, headers=cookie),
        "Permission denied - invalid csrf token",
    )
    assert_auth_layer_401(
        session.put(url, data={"description": "x"}, headers={**cookie, "CSRFPreventionToken": "00000000:forged"}),
        "Permission denied - invalid csrf token",
    )
    _, other_users_csrf = ticket_for(sim, OPERATOR)
    assert_auth_layer_401(
        session.put(url, data={"description": "x"}, headers={**cookie, "CSRFPreventionToken": other_users_csrf}),
        "Permission denied - invalid csrf token",
    )
    ok = session.put(url, data={"description": "x"}, headers={**cookie, "CSRFPreventionToken": csrf})
    assert ok.status_code == 200


def test_missing_and_invalid_credentials(sim: SimTestServer) -> None:
    session = sim.session()
    url = f"{sim.api_url}/nodes"
    assert_auth_layer_401(session.get(url), "No ticket")
    assert_auth_layer_401(
        session.get(url, headers={"Cookie": "PVEAuthCookie=PVE:root@pam:00000000::forged"}),
        "Authentication failed!",
    )

    with pytest.raises(ResourceException) as caught:
        sim.proxmox(OPERATOR, token="operator", token_value="00000000-0000-0000-0000-000000000000").nodes.get()
    assert caught.value.status_code == 401
    assert caught.value.content == "Authentication failed!"
    assert caught.value.errors == {"errors": b""}


def test_ticket_from_another_simulator_is_rejected(pve_sim_server: SimServerFactory) -> None:
    first, second = pve_sim_server(), pve_sim_server()
    ticket, _ = ticket_for(first)
    response = second.session().get(f"{second.api_url}/version", headers={"Cookie": f"PVEAuthCookie={ticket}"})
    assert_auth_layer_401(response, "Authentication failed!")


def test_renewal_with_a_valid_ticket(sim: SimTestServer) -> None:
    ticket, _ = ticket_for(sim, OPERATOR)
    sim.cluster.advance_clock(1800)
    renewed = login(sim, username=OPERATOR, password=ticket)
    assert renewed.status_code == 200
    new_ticket = renewed.json()["data"]["ticket"]
    assert new_ticket != ticket
    match = TICKET_RE.match(new_ticket)
    assert match is not None and int(match.group("ts"), 16) == int(sim.cluster.clock.now())

    # a user's ticket renews only that user; root@pam's ticket may mint any user's
    assert login(sim, username=ROOT, password=ticket).status_code == 401
    root_ticket, _ = ticket_for(sim, ROOT)
    assert login(sim, username=OPERATOR, password=root_ticket).json()["data"]["username"] == OPERATOR


def test_tickets_expire_after_two_hours_of_simulated_time(sim: SimTestServer) -> None:
    prox = sim.proxmox(OPERATOR)
    ticket, _ = prox.get_tokens()
    sim.cluster.advance_clock(TICKET_LIFETIME - 60)
    assert prox.nodes.get()  # still valid one minute before the end

    sim.cluster.advance_clock(60)
    with pytest.raises(ResourceException) as caught:
        prox.nodes.get()
    assert caught.value.status_code == 401
    assert caught.value.content == "Authentication failed!"
    assert login(sim, username=OPERATOR, password=ticket).status_code == 401  # too old to renew


# -- API tokens ----------------------------------------------------------------------------------------


def test_token_auth_through_proxmoxer_needs_no_csrf(sim: SimTestServer) -> None:
    prox = sim.proxmox(OPERATOR, token="operator")
    assert [entry["node"] for entry in prox.nodes.get()] == ["srv-px1", "srv-px2"]
    prox.nodes("srv-px2").lxc(3150).config.put(description="written with a token")
    assert prox.nodes("srv-px2").lxc(3150).config.get()["description"] == "written with a token\n"


def test_token_header_spellings(sim: SimTestServer) -> None:
    session = sim.session()
    url = f"{sim.api_url}/version"
    secret = sim.token_secret(OPERATOR, "operator")
    # PVE's parser takes '=' or a space after the scheme name, and '=' before the secret.
    assert session.get(url, headers={"Authorization": f"PVEAPIToken {OPERATOR}!operator={secret}"}).status_code == 200
    # ':' separates token and secret on Proxmox Backup Server, not on PVE.
    assert_auth_layer_401(
        session.get(url, headers={"Authorization": f"PVEAPIToken={OPERATOR}!operator:{secret}"}),
        "Authentication failed!",
    )
    assert_auth_layer_401(
        session.get(url, headers={"Authorization": f"PVEAPIToken={OPERATOR}!nosuchtoken={secret}"}),
        "Authentication failed!",
    )


def test_tokens_cannot_reach_allowtoken_0_endpoints(sim: SimTestServer) -> None:
    response = sim.session().post(
        f"{sim.api_url}/access/ticket",
        data={"username": ROOT, "password": sim.user_password(ROOT)},
        headers={"Authorization": token_header(sim)},
    )
    assert response.status_code == 403
    # PVE's message embeds a newline before the closing parenthesis, so the reason phrase
    # (its first line) ends without it.
    assert response.reason == (
        "Permission check failed (URI '/access/ticket' not available with API token, need proper ticket."
    )
    assert response.json() == {
        "data": None,
        "message": "Permission check failed (URI '/access/ticket' not available with API token, "
        "need proper ticket.\n)\n",
    }


# -- secrets never reach the log ------------------------------------------------------------------


def test_no_secret_appears_in_the_log(sim: SimTestServer, caplog: pytest.LogCaptureFixture) -> None:
    secrets_seen: list[str] = []
    with caplog.at_level(logging.DEBUG, logger="pve_sim"):
        prox = sim.proxmox(OPERATOR)
        ticket, csrf = prox.get_tokens()
        secrets_seen += [ticket, csrf, sim.user_password(OPERATOR)]
        prox.nodes("srv-px2").lxc(3150).config.put(description="log check")
        token_prox = sim.proxmox(OPERATOR, token="operator")
        token_prox.nodes.get()
        secrets_seen.append(sim.token_secret(OPERATOR, "operator"))
        with pytest.raises(AuthenticationError):
            sim.proxmox(ROOT, password="a-wrong-password-1234")
        secrets_seen.append("a-wrong-password-1234")
        with pytest.raises(ResourceException):
            sim.proxmox(OPERATOR, token="operator", token_value="wrong-secret-5678").nodes.get()
        secrets_seen.append("wrong-secret-5678")
        session = sim.session()
        session.put(
            f"{sim.api_url}/nodes/srv-px2/lxc/3150/config",
            data={"description": "x"},
            headers={"Cookie": f"PVEAuthCookie={ticket}", "CSRFPreventionToken": "00000000:forged-csrf"},
        )
        secrets_seen.append("forged-csrf")
        session.post(f"{sim.api_url}/access/ticket?password=query-password-9", data={"username": ROOT})
        secrets_seen.append("query-password-9")

    text = caplog.text
    assert f"{OPERATOR}!operator" in text  # the access log names the caller...
    assert "authentication failure" in text
    for secret in secrets_seen:
        assert secret not in text  # ...but never what proves who they are
        assert secret.split("::")[-1] not in text


# -- the ticket authority itself ----------------------------------------------------------------


def authority_at(epoch: float, key: bytes = b"k" * 32) -> TicketAuthority:
    return TicketAuthority(SimClock(0, start_epoch=epoch), key=key)


def test_tickets_allow_five_minutes_of_clock_skew_and_no_tampering() -> None:
    issued_at = 1_800_000_000.0
    ticket = authority_at(issued_at).issue_ticket(ROOT)
    csrf = authority_at(issued_at).issue_csrf_token(ROOT)

    assert authority_at(issued_at - 299).verify_ticket(ticket) == ROOT  # from slightly in the future: fine
    assert authority_at(issued_at - 301).verify_ticket(ticket) is None
    assert authority_at(issued_at + TICKET_LIFETIME - 1).verify_ticket(ticket) == ROOT
    assert authority_at(issued_at + TICKET_LIFETIME).verify_ticket(ticket) is None
    assert authority_at(issued_at, key=b"x" * 32).verify_ticket(ticket) is None

    plain, _, signature = ticket.partition("::")
    assert authority_at(issued_at).verify_ticket(plain.replace(ROOT, OPERATOR) + "::" + signature) is None
    assert authority_at(issued_at).verify_ticket(plain + "::" + signature[:-2]) is None

    assert authority_at(issued_at).verify_csrf_token(ROOT, csrf)
    assert not authority_at(issued_at).verify_csrf_token(OPERATOR, csrf)
    assert not authority_at(issued_at + TICKET_LIFETIME).verify_csrf_token(ROOT, csrf)
