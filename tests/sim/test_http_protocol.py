"""The simulator's HTTP layer as clients see it: PVE's envelope, headers, error shapes and quirks.

Everything goes over verified HTTPS, through proxmoxer where it can express the request and through
``requests`` or a raw TLS socket where it cannot (HEAD, a body on GET, malformed requests).
"""

from __future__ import annotations

import gzip
import json
import logging
import urllib.parse
from typing import Any

import pytest
import requests.adapters
from proxmoxer import ResourceException
from proxmoxer.tools import Tasks

from tests.fixtures.sim import SimServerFactory, SimTestServer, raw_exchange

OPERATOR = "ctoperator@pve"
FOREIGN_CT = 3150  # running on srv-px2 in the lab scenario
TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"


@pytest.fixture
def sim(pve_sim_server: SimServerFactory) -> SimTestServer:
    return pve_sim_server()


def token_header(sim: SimTestServer) -> dict[str, str]:
    secret = sim.token_secret(OPERATOR, "operator")
    return {"Authorization": f"PVEAPIToken={OPERATOR}!operator={secret}"}


def raw_request(sim: SimTestServer, head: str, body: bytes = b"", **kwargs: Any) -> Any:
    payload = head.replace("\n", "\r\n").encode("latin-1") + b"\r\n" + body
    return raw_exchange(sim, payload, **kwargs)[0]


def authorized_head(sim: SimTestServer, request_line: str, *extra: str) -> str:
    auth = token_header(sim)["Authorization"]
    lines = [request_line, f"Host: 127.0.0.1:{sim.port}", f"Authorization: {auth}", *extra]
    return "\n".join(lines) + "\n"


# -- success envelope and headers -------------------------------------------------------------------


def test_success_has_pve_envelope_and_headers(sim: SimTestServer) -> None:
    response = sim.session().get(f"{sim.api_url}/version", headers=token_header(sim))

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert response.headers["Server"] == "pve-api-daemon/3.0"
    assert response.headers["Cache-Control"] == "max-age=0"
    assert response.headers["Pragma"] == "no-cache"
    assert response.headers["Expires"] == response.headers["Date"]
    body = response.json()
    assert set(body) == {"data"}
    assert body["data"]["version"] == sim.scenario.cluster.pve_version
    assert {"release", "repoid"} <= set(body["data"])


def test_proxmoxer_reads_the_data_member(sim: SimTestServer) -> None:
    nodes = sim.proxmox().nodes.get()
    assert sorted(entry["node"] for entry in nodes) == ["srv-px1", "srv-px2"]
    assert all(entry["status"] == "online" for entry in nodes)


def test_keep_alive_reuses_one_connection(sim: SimTestServer) -> None:
    session = sim.session()
    for _ in range(5):
        assert session.get(f"{sim.api_url}/version", headers=token_header(sim)).status_code == 200
    adapter = session.get_adapter(sim.api_url)
    assert isinstance(adapter, requests.adapters.HTTPAdapter)
    manager = adapter.poolmanager
    pools = [manager.pools[key] for key in manager.pools.keys()]  # noqa: SIM118 (no __iter__)
    assert [(pool.num_connections, pool.num_requests) for pool in pools] == [(1, 5)]


def test_total_is_added_to_the_envelope(sim: SimTestServer) -> None:
    prox = sim.proxmox()
    upid = prox.nodes("srv-px2").lxc(FOREIGN_CT).status.stop.post()
    Tasks.blocking_status(prox, upid, polling_interval=0.01)

    response = sim.session().get(
        f"{sim.api_url}/nodes/srv-px2/tasks/{upid}/log", headers=token_header(sim)
    )
    body = response.json()
    assert body["total"] == len(body["data"]) >= 1
    assert body["data"][-1]["t"] == "TASK OK"


def test_large_answers_are_gzipped_when_accepted(sim: SimTestServer) -> None:
    session = sim.session()
    url = f"{sim.api_url}/cluster/resources"
    plain = session.get(url, headers={**token_header(sim), "Accept-Encoding": "identity"})
    zipped = session.get(url, headers={**token_header(sim), "Accept-Encoding": "gzip"}, stream=True)
    raw_body = zipped.raw.read(decode_content=False)

    assert len(plain.content) > 1024
    assert "Content-Encoding" not in plain.headers
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(raw_body))["data"] == plain.json()["data"]


# -- API errors: status, reason phrase = message, JSON body ----------------------------------------


def test_handler_error_reason_phrase_is_the_message(sim: SimTestServer) -> None:
    with pytest.raises(ResourceException) as caught:
        sim.proxmox().nodes("srv-px2").lxc(FOREIGN_CT).status.start.post()
    assert caught.value.status_code == 500
    assert caught.value.content == f"CT {FOREIGN_CT} already running"
    assert str(caught.value) == f"500 Internal Server Error: CT {FOREIGN_CT} already running"

    raw = sim.session().post(
        f"{sim.api_url}/nodes/srv-px2/lxc/{FOREIGN_CT}/status/start", headers=token_header(sim)
    )
    assert raw.status_code == 500
    assert raw.reason == f"CT {FOREIGN_CT} already running"
    assert raw.json() == {"data": None, "message": f"CT {FOREIGN_CT} already running\n"}
    assert raw.headers["Connection"] == "close"  # PVE closes the connection after any error


def test_parameter_errors_are_400_with_the_errors_map(sim: SimTestServer) -> None:
    with pytest.raises(ResourceException) as caught:
        sim.proxmox().nodes("srv-px1").lxc.post(
            vmid=3500, ostemplate=TEMPLATE, memory=8, start=True, colour="blue"
        )
    error = caught.value
    assert error.status_code == 400
    assert error.content == "Parameter verification failed."
    assert error.errors == {
        "memory": "value must have a minimum value of 16",
        "start": "type check ('boolean') failed - got 'True'",
        "colour": "property is not defined in schema and the schema does not allow additional properties",
    }

    raw = sim.session().post(
        f"{sim.api_url}/nodes/srv-px1/lxc",
        data={"vmid": "3500", "ostemplate": TEMPLATE, "memory": "8"},
        headers=token_header(sim),
    )
    assert raw.reason == "Parameter verification failed."
    assert raw.json() == {
        "data": None,
        "errors": {"memory": "value must have a minimum value of 16"},
        "message": "Parameter verification failed.\n",
    }


def test_missing_required_parameter(sim: SimTestServer) -> None:
    with pytest.raises(ResourceException) as caught:
        sim.proxmox().nodes("srv-px1").lxc(3150).migrate.post()
    assert caught.value.status_code == 400
    assert caught.value.errors == {"target": "property is missing and it is not optional"}


def test_path_parameters_may_not_conflict_with_query_parameters(sim: SimTestServer) -> None:
    response = sim.session().get(
        f"{sim.api_url}/nodes/srv-px1/lxc", params={"node": "srv-px2"}, headers=token_header(sim)
    )
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "node": "duplicate parameter (already defined in URI) with conflicting values!"
    }
    same = sim.session().get(
        f"{sim.api_url}/nodes/srv-px1/lxc", params={"node": "srv-px1"}, headers=token_header(sim)
    )
    assert same.status_code == 200


def test_json_bodies_are_accepted_with_json_booleans(sim: SimTestServer) -> None:
    session = sim.session()
    url = f"{sim.api_url}/nodes/srv-px2/lxc/{FOREIGN_CT}/config"
    response = session.put(
        url, json={"description": "set over JSON", "onboot": True}, headers=token_header(sim)
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"data": None}
    config = session.get(url, headers=token_header(sim)).json()["data"]
    assert config["description"] == "set over JSON\n"  # parse_pct_config ends each line in a newline
    assert config["onboot"] == 1


def test_unknown_endpoint_is_501_method_not_implemented(sim: SimTestServer) -> None:
    with pytest.raises(ResourceException) as caught:
        sim.proxmox().nodes("srv-px1").foo.get()
    assert caught.value.status_code == 501
    assert caught.value.content.startswith("Method 'GET /nodes/srv-px1/foo' not implemented")
    assert "pve_sim" in caught.value.content  # says the simulator lacks it, not PVE

    raw = sim.session().delete(f"{sim.api_url}/version", headers=token_header(sim))
    assert raw.status_code == 501
    assert raw.json()["message"].startswith("Method 'DELETE /version' not implemented")


def test_offline_node_is_595_with_empty_body(sim: SimTestServer) -> None:
    sim.cluster.set_node_online("srv-px2", False)
    with pytest.raises(ResourceException) as caught:
        sim.proxmox().nodes("srv-px2").status.get()
    error = caught.value
    assert error.status_code == 595
    assert error.content == "No route to host"
    assert str(error) == (
        "595 Errors during connection establishment, proxy handshake: No route to host - {'errors': b''}"
    )


def test_reason_phrase_is_the_first_line_and_latin1(sim: SimTestServer) -> None:
    sim.cluster.faults.add_request_fault(
        method="GET", path_regex="^/version$", status=500, message="schnee \u2603 fell\nsecond line"
    )
    response = sim.session().get(f"{sim.api_url}/version", headers=token_header(sim))
    assert response.status_code == 500
    assert response.reason == "schnee ? fell"
    assert response.json() == {"data": None, "message": "schnee \u2603 fell\nsecond line\n"}


def test_unexpected_exception_is_a_safe_500_and_logged(
    sim: SimTestServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(*_args: object, **_kwargs: object) -> object:
        raise RuntimeError("internal detail that must not reach clients")

    monkeypatch.setattr(sim.cluster, "handle", explode)
    with caplog.at_level(logging.ERROR, logger="pve_sim"):
        response = sim.session().get(f"{sim.api_url}/version", headers=token_header(sim))
    assert response.status_code == 500
    assert response.json() == {"data": None, "message": "pve_sim internal error (see the simulator log)\n"}
    assert "internal detail" not in response.text
    assert "internal detail that must not reach clients" in caplog.text
    assert "Traceback" in caplog.text


# -- HTTP-layer refusals ------------------------------------------------------------------------


def test_head_is_not_available(sim: SimTestServer) -> None:
    response = raw_request(
        sim, authorized_head(sim, "HEAD /api2/json/version HTTP/1.1"), head_only=True
    )
    assert response.status == 501
    assert response.reason == "method 'HEAD' not available"
    assert response.headers["server"] == "pve-api-daemon/3.0"


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_body_on_get_or_delete_is_refused(sim: SimTestServer, method: str) -> None:
    response = sim.session().request(
        method,
        f"{sim.api_url}/version",
        data="unexpected=1",
        headers={**token_header(sim), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 501
    assert response.reason == f"Unexpected content for method '{method}'"


def test_uris_outside_api2_json(sim: SimTestServer) -> None:
    session = sim.session()
    no_format = session.get(f"{sim.url}/api2/", headers=token_header(sim))
    assert (no_format.status_code, no_format.reason) == (501, "no such uri")
    extjs = session.get(f"{sim.url}/api2/extjs/version", headers=token_header(sim))
    assert (extjs.status_code, extjs.reason) == (501, "no formatter for uri /version, extjs")
    other = session.get(f"{sim.url}/pve2/js/pvemanagerlib.js")
    assert (other.status_code, other.reason) == (500, "no such file '/pve2/js/pvemanagerlib.js'")


def test_oversized_body_is_refused(sim: SimTestServer) -> None:
    response = sim.session().post(
        f"{sim.api_url}/nodes/srv-px1/lxc",
        data={"description": "x" * (600 * 1024)},
        headers=token_header(sim),
    )
    assert response.status_code == 501
    assert response.reason == "for data too large"


def test_chunked_requests_are_refused(sim: SimTestServer) -> None:
    response = raw_request(
        sim,
        authorized_head(sim, "POST /api2/json/nodes/srv-px1/lxc HTTP/1.1", "Transfer-Encoding: chunked"),
        b"5\r\nvmid=\r\n0\r\n\r\n",
    )
    assert (response.status, response.reason) == (501, "chunked transfer encoding not supported")


@pytest.mark.parametrize(
    ("request_line", "status", "reason"),
    [
        ("GARBAGE", 400, "bad request"),
        ("GET /api2/json/version HTTP/2.0", 506, "http protocol version 2.0 not supported"),
        ("GET user@host/api2/json/version HTTP/1.1", 400, "invalid url"),
    ],
)
def test_malformed_request_lines(sim: SimTestServer, request_line: str, status: int, reason: str) -> None:
    response = raw_request(sim, f"{request_line}\nHost: x\n")
    assert (response.status, response.reason) == (status, reason)


def test_too_many_header_lines(sim: SimTestServer) -> None:
    extra = [f"X-Filler-{i}: {i}" for i in range(70)]
    response = raw_request(sim, authorized_head(sim, "GET /api2/json/version HTTP/1.1", *extra))
    assert (response.status, response.reason) == (400, "too many http header lines (> 64)")


def test_plain_http_is_redirected_to_https(sim: SimTestServer) -> None:
    response = raw_request(
        sim, f"GET /api2/json/version HTTP/1.1\nHost: 127.0.0.1:{sim.port}\n", tls=False
    )
    assert response.status == 301
    assert response.headers["location"] == f"https://127.0.0.1:{sim.port}/api2/json/version"


# -- URL escaping ---------------------------------------------------------------------------------


def test_upids_work_raw_and_percent_escaped(sim: SimTestServer) -> None:
    prox = sim.proxmox(OPERATOR, token="operator")
    upid = prox.nodes("srv-px2").lxc(FOREIGN_CT).status.stop.post()
    assert upid.endswith(f":vzstop:{FOREIGN_CT}:{OPERATOR}!operator:")

    # proxmoxer puts the UPID in the path as-is (raw ':' and '!').
    via_proxmoxer = Tasks.blocking_status(prox, upid, polling_interval=0.01)
    assert via_proxmoxer["upid"] == upid
    assert via_proxmoxer["exitstatus"] == "OK"

    escaped = urllib.parse.quote(upid, safe="")
    assert "%3A" in escaped
    response = sim.session().get(
        f"{sim.api_url}/nodes/srv-px2/tasks/{escaped}/status", headers=token_header(sim)
    )
    assert response.status_code == 200
    assert response.json()["data"] == via_proxmoxer
