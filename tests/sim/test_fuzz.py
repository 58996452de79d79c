"""Robustness: 1,200 seeded-random malformed requests against one simulator, over raw sockets.

Every request that reaches the server as a request (a request line and a terminated header block)
must get a well-formed HTTP/1.1 answer with a PVE-style status; JSON answers must have PVE's
envelope; nothing may surface as an internal error; and the server must still serve a proper client
afterwards. Requests mix real endpoints with broken parameters, junk paths and percent-escapes,
odd methods and protocol versions, broken or missing credentials, bad encodings, huge values and
bodies, and header-block abuse. The seed is fixed so a failure reproduces; the failing payload is in
the assertion message.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import string
import urllib.parse
from collections import Counter
from dataclasses import dataclass

import pytest
from proxmoxer.tools import Tasks

from pve_sim.api_schema import ENDPOINTS
from tests.fixtures.sim import MalformedResponse, RawResponse, SimServerFactory, SimTestServer, raw_exchange

SEED = 0x5EED_F022
REQUESTS = 1200
OPERATOR = "ctoperator@pve"

# What PVE itself answers: 200, its redirects for plain HTTP, auth/permission/parameter errors,
# handler errors (500), its HTTP-layer refusals (501, 506 for unparsable headers and unsupported
# protocol versions / content types), and the proxy pseudo-statuses 595-599.
ALLOWED_STATUS = {200, 301, 308, 400, 401, 403, 500, 501, 506, 595, 596, 597, 598, 599}
ENVELOPE_KEYS = {"data", "errors", "message", "total"}
INTERNAL_ERROR = "pve_sim internal error"

TEMPLATES = sorted({path for _method, path in ENDPOINTS})
NODES = ["srv-px1", "srv-px2", "srv-px9", "bad node", "..", "%2e%2e", "n\u00f6de", "a" * 300, "-x-", "localhost"]
VMIDS = ["3150", "3151", "100", "99", "abc", "-1", "1e3", "999999999999", "0x10", "3150 ", "%33150"]
JUNK_TEXT = [
    "",
    " ",
    "True",
    "False",
    "yes",
    "1",
    "0",
    "-0",
    "NaN",
    "1e309",
    "\u2603",
    "\x00",
    "\ud7ff",
    "%",
    "%zz",
    "=",
    "&",
    ";",
    "a=b=c",
    "local-lvm:8",
    "name=eth0,bridge=vmbr0,ip=dhcp",
    "size=-1G",
    "x" * 5000,
    "nesting=1,keyctl=on,bogus=1",
    "tag1;tag2;TAG3",
    "ip=300.1.1.1/99",
    "../../etc/passwd",
    "'\"<>",
]


@dataclass
class Case:
    payload: bytes
    tls: bool = True
    head: bool = False
    responses: int = 1
    expect_answer: bool = True


class RequestFuzzer:
    """Builds one random request at a time; all randomness comes from one seeded ``Random``."""

    def __init__(self, rng: random.Random, sim: SimTestServer, ticket: str, csrf: str, upid: str) -> None:
        self.rng = rng
        self.sim = sim
        self.ticket = ticket
        self.csrf = csrf
        self.upid = upid
        secret = sim.token_secret(OPERATOR, "operator")
        self.token_header = f"PVEAPIToken={OPERATOR}!operator={secret}"
        self.root_token = f"PVEAPIToken=root@pam!x={secret}"
        self.template_params: list[str] = []

    # -- pieces -------------------------------------------------------------------------------------

    def junk(self, length: int | None = None) -> str:
        size = length if length is not None else self.rng.choice([0, 1, 3, 8, 30, 200])
        alphabet = string.printable + "\u00e9\u2603\U0001f600\x7f\x80"
        return "".join(self.rng.choice(alphabet) for _ in range(size))

    def value(self) -> str:
        roll = self.rng.random()
        if roll < 0.4:
            return self.rng.choice(JUNK_TEXT)
        if roll < 0.6:
            return str(self.rng.choice([0, 1, -1, 16, 512, 3150, 2**31, 2**63, 10**20]))
        if roll < 0.7:
            return "x" * self.rng.choice([256, 4096, 70_000])
        return self.junk()

    def path(self) -> str:
        roll = self.rng.random()
        self.template_params = []
        if roll < 0.62:
            template = self.rng.choice(TEMPLATES)
            self.template_params = [p for (_m, t), spec in ENDPOINTS.items() if t == template for p in spec.params]
            filled = template
            for name, options in (("node", NODES), ("vmid", VMIDS)):
                # mostly real names, so requests get past routing into validation and handlers
                choice = options[: 2 if name == "node" else 1] if self.rng.random() < 0.6 else options
                filled = filled.replace("{" + name + "}", self.rng.choice(choice))
            upid_choices = [self.upid, urllib.parse.quote(self.upid, safe=""), "UPID:x", "UPID::::::::", self.junk(20)]
            filled = filled.replace("{upid}", self.rng.choice(upid_choices))
            for name in ("storage", "poolid", "snapname", "userid", "tokenid"):
                filled = filled.replace("{" + name + "}", self.rng.choice(["local-lvm", "lab", "x", "", self.junk(5)]))
            return "/api2/json" + filled
        if roll < 0.75:
            segments = [
                self.rng.choice([self.junk(6), "%ff%fe", "%zz", "%00", "", ".", "..", "%2F", "nodes"])
                for _ in range(self.rng.randint(1, 6))
            ]
            return "/api2/json/" + "/".join(segments)
        if roll < 0.87:
            return self.rng.choice(
                [
                    "/",
                    "/_sim/state",
                    "/_sim/faults",
                    "/_sim/nope",
                    "/api2",
                    "/api2/json",
                    "/api2/extjs/version",
                    "/api2/html/nodes",
                    "/pve2/css/ext6-pve.css",
                    "//api2//json//version",
                    "/api2/json/../json/version",
                    "/_sim",
                    "/api2/json/access/ticket",
                    "/api2/JSON/version",
                ]
            )
        if roll < 0.93:
            return "/api2/json/" + "a" * self.rng.choice([5_000, 70_000])
        return self.rng.choice(
            [
                f"https://127.0.0.1:{self.sim.port}/api2/json/version",
                "*",
                "user@host/api2/json/version",
                "api2/json/version",
                "/api2/json/version#frag",
                "/api2/json/version?",
            ]
        )

    def query(self) -> str:
        if self.rng.random() < 0.4:
            return ""
        pairs = [
            (self.rng.choice(["vmid", "node", "type", "full", "limit", "start", "_dc", self.junk(4)]), self.value())
            for _ in range(self.rng.randint(1, 5))
        ]
        if self.rng.random() < 0.1:
            return "?" + "&".join(f"{k}={v}" for k, v in pairs)  # raw, unescaped: may be invalid
        return "?" + urllib.parse.urlencode(pairs)

    def auth_headers(self) -> list[str]:
        roll = self.rng.random()
        if roll < 0.62:
            return [f"Authorization: {self.token_header}"]
        if roll < 0.72:
            headers = [f"Cookie: PVEAuthCookie={self.ticket}"]
            if self.rng.random() < 0.7:
                headers.append(f"CSRFPreventionToken: {self.csrf}")
            return headers
        return self.rng.choice(
            [
                [],
                ["Authorization: PVEAPIToken="],
                ["Authorization: PVEAPIToken=root@pam!x"],
                [f"Authorization: {self.root_token}"],
                ["Authorization: PVEAPIToken=\u00ff\u00fe=1"],
                ["Cookie: PVEAuthCookie=PVE:root@pam:ZZZZZZZZ::x"],
                ["Cookie: PVEAuthCookie="],
                ["Authorization: Basic cm9vdDpwYXNz"],
                ["Authorization: SimAdmin wrong"],
                [f"Authorization: {self.junk(40)}"],
                ["CSRFPreventionToken: 00000000:x", f"Cookie: PVEAuthCookie={self.ticket}"],
                [f"Authorization: PVEAuthCookie={self.ticket}"],
            ]
        )

    def body(self, template_params: list[str]) -> tuple[bytes, str | None]:
        roll = self.rng.random()
        names = template_params or ["vmid"]
        if roll < 0.45:
            pairs = [(self.rng.choice([*names, self.junk(4)]), self.value()) for _ in range(self.rng.randint(0, 8))]
            if self.rng.random() < 0.2:
                pairs += [(names[0], "1"), (names[0], "2")]  # repeated key -> ARRAY
            return urllib.parse.urlencode(pairs).encode(), "application/x-www-form-urlencoded"
        if roll < 0.65:
            candidates: list[object] = [
                None,
                True,
                False,
                0,
                -1,
                1.5,
                10**30,
                "",
                "x" * 300,
                [],
                [1, "a"],
                {"a": {"b": []}},
            ]
            document: object = {
                self.rng.choice([*names, self.junk(3)]): self.rng.choice(candidates)
                for _ in range(self.rng.randint(0, 6))
            }
            if self.rng.random() < 0.15:
                document = self.rng.choice([[1, 2], "string", 42, None])
            text = json.dumps(document)
            if self.rng.random() < 0.1:
                text = text[: max(1, len(text) // 2)]  # truncated JSON
            return text.encode(), "application/json"
        if roll < 0.8:
            return bytes(self.rng.getrandbits(8) for _ in range(self.rng.randint(1, 300))), self.rng.choice(
                [None, "application/octet-stream", "multipart/form-data; boundary=x", "text/plain", "application/json"]
            )
        if roll < 0.81:
            return b"x" * (600 * 1024), "application/x-www-form-urlencoded"
        return b"", None

    # -- whole requests -----------------------------------------------------------------------------

    def case(self) -> Case:
        roll = self.rng.random()
        if roll < 0.02:
            return Case(
                self.rng.choice(
                    [
                        b"GARBAGE\r\n\r\n",
                        b"GET / HTTP/1.1\r\n\r\n",
                        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
                    ]
                ),
                tls=False,
            )
        if roll < 0.03:
            # A broken TLS handshake is not HTTP: the server just has to survive it.
            return Case(
                b"\x16\x03\x01" + bytes(self.rng.getrandbits(8) for _ in range(64)), tls=False, expect_answer=False
            )
        if roll < 0.06:
            request = f"GET /api2/json/version HTTP/1.1\r\nHost: h\r\nAuthorization: {self.token_header}\r\n\r\n"
            return Case((request * 2).encode(), responses=2)

        method = self.rng.choices(
            ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "get", "G\x00T", "", "CONNECT"],
            weights=[30, 25, 10, 10, 3, 2, 2, 1, 1, 1, 1],
        )[0]
        path = self.path()
        if self.rng.random() < 0.9:  # clients escape paths; sometimes send them raw anyway
            path = urllib.parse.quote(path, safe="/:@!%?=&;+,$*'()~#")
        target = path + (self.query() if self.rng.random() < 0.6 else "")
        version = self.rng.choices(
            ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.x", "HTTP/0.9", "", "HTTP/1.1 x"],
            weights=[88, 6, 2, 1, 1, 1, 1],
        )[0]
        request_line = (
            " ".join(part for part in (method, target, version) if part) if method else f" {target} {version}"
        )

        headers = [f"Host: 127.0.0.1:{self.sim.port}", *self.auth_headers()]
        template_params = self.template_params
        body = b""
        content_type: str | None = None
        if method in ("POST", "PUT") or self.rng.random() < 0.1:
            body, content_type = self.body(template_params)
        if content_type is not None and self.rng.random() < 0.9:
            headers.append(f"Content-Type: {content_type}")
        length_mode = self.rng.random()
        if length_mode < 0.04:
            headers.append(self.rng.choice(["Content-Length: abc", "Content-Length: -1", "Content-Length: 1e3"]))
        elif length_mode < 0.06:
            headers += [f"Content-Length: {len(body)}", f"Content-Length: {len(body) + 1}"]
        elif length_mode < 0.09:
            headers.append("Transfer-Encoding: chunked")
            body = b"0\r\n\r\n"
        elif body and length_mode < 0.97:
            headers.append(f"Content-Length: {len(body)}")
        # else: a body without Content-Length, which the server reads as the next request
        extra = self.rng.random()
        if extra < 0.05:
            headers += [f"X-Filler-{i}: {i}" for i in range(self.rng.choice([10, 70]))]
        elif extra < 0.08:
            headers.append("X-Big: " + "b" * 9000)
        elif extra < 0.11:
            headers.append("this line has no colon")
        elif extra < 0.14:
            headers += ["X-Folded: first", "  continued"]
        elif extra < 0.2:
            headers.append(
                self.rng.choice(
                    ["Connection: close", "Connection: keep-alive", "Accept-Encoding: gzip", "Expect: 100-continue"]
                )
            )
        newline = "\r\n" if self.rng.random() < 0.9 else "\n"
        head = newline.join([request_line, *headers]) + newline + newline
        return Case(head.encode("utf-8", "surrogatepass") + body, head=method == "HEAD")


def check_answer(response: RawResponse) -> None:
    assert response.status in ALLOWED_STATUS, f"status {response.status} {response.reason}"
    assert response.reason and response.reason.isprintable(), f"reason {response.reason!r}"
    assert response.headers.get("server") == "pve-api-daemon/3.0"
    assert INTERNAL_ERROR not in response.reason
    assert b"Traceback" not in response.body and INTERNAL_ERROR.encode() not in response.body
    if response.headers.get("content-type", "").startswith("application/json") and response.body:
        document = json.loads(response.body)
        assert isinstance(document, dict) and "data" in document and set(document) <= ENVELOPE_KEYS, document
        if response.status >= 400:
            assert document["data"] is None
            assert isinstance(document["message"], str)
        else:
            assert "message" not in document and "errors" not in document


def survives_bad_handshake(sim: SimTestServer, payload: bytes) -> None:
    """Send a broken TLS handshake, then end the stream; the server must just drop it."""
    with socket.create_connection((sim.host, sim.port), timeout=15) as sock:
        try:  # the server may drop the connection at any point: that is a fine answer here
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass
        except OSError:
            pass


@pytest.mark.slow
def test_fuzzed_requests_get_well_formed_pve_answers(
    pve_sim_server: SimServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sim = pve_sim_server()
    prox = sim.proxmox()
    ticket, csrf = prox.get_tokens()
    upid = prox.nodes("srv-px2").lxc(3150).status.stop.post()
    Tasks.blocking_status(prox, upid, polling_interval=0.01)
    fuzzer = RequestFuzzer(random.Random(SEED), sim, ticket, csrf, upid)

    statuses: Counter[int | str] = Counter()
    with caplog.at_level(logging.WARNING, logger="pve_sim"):
        for index in range(REQUESTS):
            case = fuzzer.case()
            if not case.expect_answer:
                survives_bad_handshake(sim, case.payload)
                statuses["no-http"] += 1
                continue
            try:
                answers = raw_exchange(sim, case.payload, tls=case.tls, head_only=case.head, responses=case.responses)
                for answer in answers:
                    check_answer(answer)
                    statuses[answer.status] += 1
            except (AssertionError, MalformedResponse, OSError, ValueError) as exc:
                raise AssertionError(f"request #{index}: {exc}\npayload: {case.payload[:600]!r}") from exc

    print("fuzz status histogram:", dict(sorted(statuses.items(), key=lambda kv: str(kv[0]))))
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors == [], errors[0].getMessage()
    assert sim.cluster.internal_errors == []
    # the server still serves a proper client, and a spread of answers was exercised
    assert prox.version.get()["version"] == sim.scenario.cluster.pve_version
    assert sum(statuses.values()) >= 1000
    assert {200, 400, 401, 403, 500, 501} <= set(statuses)
