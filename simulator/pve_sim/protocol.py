"""Request -> response for the simulator: PVE's HTTP semantics without any socket code.

The server (``server.py``) turns bytes into an :class:`HttpRequest` and writes whatever
:class:`HttpResponse` comes back; everything PVE-specific about the HTTP exchange lives here, in
the order PVE's API daemon applies it (pve-http-server ``AnyEvent.pm``, pve-manager
``HTTPServer.pm``):

1. unknown HTTP method -> 501 ``method 'HEAD' not available``; ``Transfer-Encoding`` -> 501;
2. ``/api2/<format>/...`` only (``/_sim/...`` is the simulator's admin endpoint); anything else
   under ``/api2`` -> 501 ``no such uri``, and other paths -> 500 ``no such file '<path>'``;
3. authentication (ticket cookie/header, CSRF on non-GET, API token), failures answered with an
   empty-body 401 after the configured delay (PVE: 3 s);
4. a body on GET/DELETE -> 501 ``Unexpected content for method 'GET'``; over 512 KiB -> 501;
5. parameters from the query string and the form or JSON body; path parameters may not conflict;
   API tokens on ``allowtoken: 0`` endpoints -> 403; the endpoint's permission and the proxy hop
   to the URL's node (403, 500 unknown node, 595 offline node); schema validation -> 400;
6. injected faults (latency, errors), then the cluster's handler, then PVE's JSON envelope.

API errors carry PVE's message in the HTTP reason phrase (first line, latin-1) and in the body
(``{"data": null, "message": "...\\n"}`` + ``errors`` for 400). Errors raised by the HTTP layer
itself (no such uri, unexpected content, ...) have the message as a plain-text body, as
PVE's ``error()`` writes them. Any 4xx/5xx closes the connection, as PVE does.

Request logs name the caller by user or token *id* only, and the path without its query string,
so no password, ticket or token secret can reach a log line.
"""

from __future__ import annotations

import email.utils
import gzip
import http
import json
import logging
import re
import threading
import time
import traceback
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

from .admin import AdminApi
from .api_schema import match_endpoint, validate_params
from .auth import AuthContext, Credentials, TicketAuthority, header_map
from .cluster import SimCluster
from .common import ApiResult
from .errors import PveApiError, not_implemented
from .handlers.registry import perl_text

log = logging.getLogger("pve_sim.http")
access_log = logging.getLogger("pve_sim.http.access")

KNOWN_METHODS = frozenset({"GET", "POST", "PUT", "DELETE"})
MAX_POST_BYTES = 512 * 1024
"""PVE's ``$limit_max_post``: larger bodies are refused with 501 ``for data too large``."""

SERVER_HEADER = "pve-api-daemon/3.0"
JSON_CONTENT_TYPE = "application/json;charset=UTF-8"
GZIP_MIN_BYTES = 1024
"""PVE compresses bodies over 1 KiB when the client accepts gzip (AnyEvent.pm ``response``)."""

ADMIN_PREFIX = "/_sim"
MAX_REASON_CHARS = 4096

# AnyEvent::HTTP pseudo-statuses PVE's proxy produces; reason phrases as proxmoxer knows them.
_ANYEVENT_REASONS = {
    595: "Errors during connection establishment, proxy handshake",
    596: "Errors during TLS negotiation, request sending and header processing",
    597: "Errors during body receiving or processing",
    598: "User aborted request via on_header or on_body",
    599: "Other, usually nonretryable, errors (garbled URL etc.)",
}

_API_URI_RE = re.compile(r"^/api2/+([a-z][a-z0-9]+)(/.*)?$")
_CONTROL_CHARS_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1 controls


@dataclass
class HttpRequest:
    """One parsed request. ``body`` is empty when ``body_too_large`` (it was not read)."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    content_length: int = 0
    body_too_large: bool = False
    client: str = "-"
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.header_map = header_map(self.headers)

    def header(self, name: str) -> str | None:
        return self.header_map.get(name.lower())

    @property
    def path(self) -> str:
        """The URI-unescaped path (PVE: ``uri_unescape($request->uri->path())``).

        proxmoxer sends UPIDs with raw ``:`` and ``!``; other clients send ``%3A``; both arrive
        here identical. Invalid UTF-8 after unescaping becomes U+FFFD instead of failing.
        """
        raw_path = urllib.parse.urlsplit(self.target).path if "://" in self.target else self.target
        raw_path = raw_path.split("?", 1)[0].split("#", 1)[0]
        return urllib.parse.unquote_to_bytes(raw_path).decode("utf-8", "replace")

    @property
    def query(self) -> str:
        _, sep, rest = self.target.partition("?")
        return rest.split("#", 1)[0] if sep else ""


@dataclass
class HttpResponse:
    """A response before framing. ``reason`` is sanitised when rendered."""

    status: int
    reason: str
    body: bytes = b""
    content_type: str | None = None
    extra_headers: list[tuple[str, str]] = field(default_factory=list)
    close: bool = False
    log_user: str = "-"


def reason_phrase(status: int, message: str | None) -> str:
    """PVE's reason phrase: the message's first line, or the standard phrase when empty.

    HTTP reason phrases are latin-1 and single-line; characters outside latin-1 become ``?`` and
    control characters spaces, so no message can break the response framing. Over
    ``MAX_REASON_CHARS`` it is cut short.
    """
    first = (message or "").split("\n", 1)[0].split("\r", 1)[0]
    first = _CONTROL_CHARS_RE.sub(" ", first).strip()
    if not first:
        try:
            first = http.HTTPStatus(status).phrase
        except ValueError:
            first = _ANYEVENT_REASONS.get(status, "Unknown")
    if len(first) > MAX_REASON_CHARS:
        # PVE does not cap it, but messages that echo a client's path could outgrow the 64 KiB
        # status line clients accept (http.client's _MAXLINE); the body keeps the full text.
        first = first[: MAX_REASON_CHARS - 3] + "..."
    return first.encode("latin-1", "replace").decode("latin-1")


def json_bytes(value: object) -> bytes:
    """Compact UTF-8 JSON, as PVE's ``to_json(..., {utf8 => 1})`` (non-ASCII kept as UTF-8)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def api_error_response(error: PveApiError) -> HttpResponse:
    """PVE's JSON-formatter error: reason = message, body ``{"data":null,"message":"…\\n"}``.

    The trailing newline is PVE's (messages come from ``die "...\\n"``); the one exception is the
    501 for unknown methods, whose message rest_handler builds without one. Auth-layer 401s and
    59x have an empty body.
    """
    if error.empty_body:
        return HttpResponse(error.status, error.message, close=True)
    message = error.message if error.status == 501 else f"{error.message}\n"
    envelope: dict[str, object] = {"data": None}
    if error.errors:
        envelope["errors"] = error.errors
    envelope["message"] = message
    return HttpResponse(
        error.status,
        error.message,
        body=json_bytes(envelope),
        content_type=JSON_CONTENT_TYPE,
        close=True,
    )


def plain_error(status: int, message: str) -> HttpResponse:
    """PVE's ``error()``: the message as reason phrase and as a plain-text body; connection closes."""
    return HttpResponse(
        status,
        message,
        body=message.encode("utf-8", "replace"),
        content_type="text/plain;charset=UTF-8",
        close=True,
    )


def envelope_response(result: object) -> HttpResponse:
    """``{"data": …}`` (+ ``total`` when the handler set a non-zero one, exactly as PVE)."""
    envelope: dict[str, object]
    if isinstance(result, ApiResult):
        envelope = {"data": result.data}
        if result.total:
            envelope["total"] = result.total
    else:
        envelope = {"data": result}
    return HttpResponse(200, "OK", body=json_bytes(envelope), content_type=JSON_CONTENT_TYPE)


def render_response(
    response: HttpResponse,
    *,
    request_method: str | None,
    keep_alive: bool,
    accept_gzip: bool,
    now: float | None = None,
) -> bytes:
    """Frame a response as HTTP/1.1 bytes with PVE's headers (Server, Expires, Cache-Control, …).

    ``Content-Length`` is always sent (also 0) so keep-alive clients can frame every answer.
    """
    body = response.body
    headers: list[tuple[str, str]] = []
    date = email.utils.formatdate(now, usegmt=True)
    headers.append(("Date", date))
    headers.append(("Expires", date))
    headers.append(("Cache-Control", "max-age=0"))
    headers.append(("Pragma", "no-cache"))
    headers.append(("Server", SERVER_HEADER))
    if response.content_type:
        headers.append(("Content-Type", response.content_type))
    if accept_gzip and len(body) > GZIP_MIN_BYTES and response.status < 300:
        # Level 1: on loopback the CPU spent compressing is the cost that matters, and clients see
        # the same thing either way (a gzip Content-Encoding they transparently decode).
        body = gzip.compress(body, compresslevel=1, mtime=0)
        headers.append(("Content-Encoding", "gzip"))
    headers.extend(response.extra_headers)
    headers.append(("Content-Length", str(len(body))))
    headers.append(("Connection", "Keep-Alive" if keep_alive else "close"))
    head = [f"HTTP/1.1 {response.status} {reason_phrase(response.status, response.reason)}"]
    head.extend(f"{name}: {value}" for name, value in headers)
    wire = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1", "replace")
    if request_method == "HEAD":
        return wire
    return wire + body


def decode_urlencoded(data: str) -> dict[str, list[str]]:
    """PVE's ``decode_urlencoded``: ``&``/``;`` separated, ``+`` = space, repeated keys -> lists.

    Values keep their order and may be empty: ``a`` and ``a=`` are Perl's undef, which the schema
    validator folds exactly as PVE does (an empty value means "not given" and replaces earlier
    values of the same key). Like Perl's ``split(/=/)``, only the text up to a second ``=`` is the
    value. Invalid UTF-8 becomes U+FFFD.
    """
    result: dict[str, list[str]] = {}
    for pair in re.split(r"[&;]", data):
        if not pair:
            continue
        fields = pair.split("=")
        key = urllib.parse.unquote_to_bytes(fields[0].replace("+", " ")).decode("utf-8", "replace")
        value = fields[1] if len(fields) > 1 else ""
        value = urllib.parse.unquote_to_bytes(value.replace("+", " ")).decode("utf-8", "replace")
        result.setdefault(key, []).append(value)
    return result


def _perl_scalar_text(value: object) -> str | None:
    """How Perl's ``ne`` sees a decoded JSON scalar (true/false are 1/0); None for non-scalars."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | str):
        return str(value)
    return None


def permission_params(raw: Mapping[str, list[str]], json_values: Mapping[str, object] | None) -> dict[str, object]:
    """The parameters ``check_api2_permissions`` sees, as Perl scalars' text (None = undef).

    pve-manager ``PVE::HTTPServer::rest_handler`` hands the permission check everything
    ``extract_params`` (pve-http-server ``PVE::APIServer::AnyEvent``) decoded -- a JSON body as
    well as a form body and the query string -- merged with the URI's parameters, before the
    schema validates anything. JSON values are what ``decode_json`` made of them: booleans are
    ``1``/``0``, numbers print as Perl prints them, arrays and objects are references (whose text
    ``normalize_path`` rejects). Query parameters replace body parameters of the same name.
    """
    params: dict[str, object] = {}
    if json_values is not None:
        for key, value in json_values.items():
            if isinstance(value, list):
                params[key] = "ARRAY(0x0)"
            elif isinstance(value, dict):
                params[key] = "HASH(0x0)"
            else:
                params[key] = perl_text(value)
    for key, values in raw.items():
        params[key] = perl_text(values)
    return params


class ParamsError(Exception):
    """A body that cannot be decoded (PVE answers 500 from ``extract_params``)."""


def extract_params(request: HttpRequest) -> tuple[dict[str, list[str]], dict[str, object] | None]:
    """Raw parameters: body (form or JSON, POST/PUT only) overlaid by the query string.

    Returns (form/query string lists, decoded JSON body values or None), the two inputs of
    ``api_schema.validate_params``. Query parameters replace body parameters of the same name,
    as in PVE.
    """
    raw: dict[str, list[str]] = {}
    json_values: dict[str, object] | None = None
    if request.method in ("POST", "PUT") and request.body:
        content_type = re.split(r"\s*[;,]\s*", (request.header("content-type") or "").strip())[0]
        if content_type == "application/json":
            try:
                decoded = json.loads(request.body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise ParamsError(f"malformed JSON string: {exc}") from None
            if not isinstance(decoded, dict):
                raise ParamsError("malformed JSON parameters: the body must be a JSON object")
            json_values = dict(decoded)
        else:
            raw.update(decode_urlencoded(request.body.decode("latin-1")))
    for key, values in decode_urlencoded(request.query).items():
        raw[key] = values
        if json_values is not None:
            json_values.pop(key, None)
    return raw, json_values


def _safe_for_log(text: str, limit: int = 200) -> str:
    """Printable, bounded text for log lines (fuzzed paths can hold anything)."""
    cleaned = _CONTROL_CHARS_RE.sub("?", text)
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."


class ApiDispatcher:
    """Answers one request at a time for one simulated cluster; safe to call from many threads.

    ``stop_event`` interrupts the deliberate waits (the 401 delay, injected latency) when the
    server shuts down, so a stop never waits on a sleeping handler.
    """

    def __init__(
        self,
        cluster: SimCluster,
        authority: TicketAuthority,
        admin: AdminApi,
        *,
        auth_failure_delay_seconds: float = 3.0,
        stop_event: threading.Event | None = None,
    ) -> None:
        self.cluster = cluster
        self.authority = authority
        self.admin = admin
        self.auth_failure_delay_seconds = auth_failure_delay_seconds
        self._stop_event = stop_event or threading.Event()

    # -- entry point ------------------------------------------------------------------------------

    def handle(self, request: HttpRequest) -> HttpResponse:
        """The response for ``request``; never raises."""
        try:
            response = self._handle(request)
        except PveApiError as error:
            response = api_error_response(error)
        except Exception:
            log.error(
                "internal error answering %s %s\n%s",
                request.method,
                _safe_for_log(request.path),
                traceback.format_exc(),
            )
            response = api_error_response(
                PveApiError(500, "pve_sim internal error (see the simulator log)")
            )
        if response.status == 401 and self.auth_failure_delay_seconds > 0:
            # PVE: "always delay unauthorized calls by 3 seconds" (counted from request start).
            remaining = self.auth_failure_delay_seconds - (time.monotonic() - request.started)
            if remaining > 0:
                self._stop_event.wait(remaining)
        access_log.info(
            '%s %s "%s %s" %d %d',
            request.client,
            response.log_user,
            _safe_for_log(request.method, 20),
            _safe_for_log(request.path),
            response.status,
            len(response.body),
        )
        return response

    def _handle(self, request: HttpRequest) -> HttpResponse:
        method = request.method
        if method not in KNOWN_METHODS:
            return HttpResponse(501, f"method '{method}' not available", close=True)
        transfer_encoding = request.header("transfer-encoding")
        if transfer_encoding:
            if transfer_encoding.strip().lower() == "chunked":
                return plain_error(501, "chunked transfer encoding not supported")
            return plain_error(501, f"Unknown transfer encoding '{transfer_encoding}'")

        path = request.path
        if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
            return self._handle_admin(request, path)
        if not path.startswith("/api2"):
            return self._handle_static(request, path)

        match = _API_URI_RE.match(path)
        if match is None:
            return plain_error(501, "no such uri")
        api_format, rel_uri = match.group(1), match.group(2) or "/"

        credentials = Credentials.from_headers(request.header_map)
        auth = self.authority.authenticate(method, rel_uri, credentials, self.cluster, client=request.client)

        body_check = self._check_body(request)
        if body_check is not None:
            body_check.log_user = auth.log_user
            return body_check
        if api_format != "json":
            return plain_error(501, f"no formatter for uri {rel_uri}, {api_format}")
        try:
            raw, json_values = extract_params(request)
        except ParamsError as exc:
            return plain_error(500, str(exc))

        try:
            response = self._rest_handler(method, rel_uri, auth, raw, json_values, client=request.client)
        except PveApiError as error:
            response = api_error_response(error)
        response.log_user = auth.log_user
        return response

    @staticmethod
    def _check_body(request: HttpRequest) -> HttpResponse | None:
        """PVE's content checks, made after authentication (AnyEvent.pm)."""
        if not request.content_length:
            return None
        if request.method not in ("PUT", "POST"):
            return plain_error(501, f"Unexpected content for method '{request.method}'")
        if request.body_too_large:
            return plain_error(501, "for data too large")
        content_type = request.header("content-type")
        if content_type:
            media_type = re.split(r"\s*[;,]\s*", content_type.strip())[0]
            if media_type not in ("", "application/x-www-form-urlencoded", "application/json"):
                return plain_error(506, f"upload 'Content-Type '{media_type}' not implemented")
        return None

    # -- PVE's rest_handler -----------------------------------------------------------------------

    def _rest_handler(
        self,
        method: str,
        rel_uri: str,
        auth: AuthContext,
        raw: dict[str, list[str]],
        json_values: dict[str, object] | None,
        *,
        client: str,
    ) -> HttpResponse:
        found = match_endpoint(method, rel_uri)
        if found is None:
            raise not_implemented(method, rel_uri)
        endpoint, path_params = found

        for name, value in path_params.items():
            given = raw.get(name)
            conflict = given is not None and given != [value]
            if json_values is not None and name in json_values:
                conflict = conflict or _perl_scalar_text(json_values[name]) != value
            if conflict:
                raise PveApiError(
                    400,
                    "Parameter verification failed.",
                    {name: "duplicate parameter (already defined in URI) with conflicting values!"},
                )
            raw[name] = [value]
            if json_values is not None:
                json_values.pop(name, None)

        if auth.via_api_token and not endpoint.allow_token:
            # raise_perm_exc("URI '...' not available with API token, need proper ticket.\n"):
            # PVE wraps that text, newline included, in "Permission check failed (...)", so the
            # reason phrase stops before the closing parenthesis, exactly as real PVE sends it.
            raise PveApiError(
                403,
                f"Permission check failed (URI '{rel_uri}' not available with API token, need proper ticket.\n)",
            )

        subject = auth.subject
        if subject is not None:
            # PVE checks the declared permission and proxies to the URL's node before the handler
            # validates parameters, so a 403 or a 595 wins over a 400 as on a real node.
            self.cluster.preflight(method, endpoint.path, subject, permission_params(raw, json_values))
        params = validate_params(endpoint, raw, json_values=json_values)

        latency, injected = self.cluster.faults.before_request(method, rel_uri)
        if latency > 0:
            self._stop_event.wait(latency)
        if injected is not None:
            raise injected

        if rel_uri == "/access/ticket":
            return envelope_response(self._access_ticket(method, params, client=client))
        if subject is None:  # only /access/ticket is reachable without authentication
            raise PveApiError(401, "No ticket", empty_body=True)
        return envelope_response(self.cluster.handle(method, endpoint.path, subject, params))

    def _access_ticket(self, method: str, params: Mapping[str, object], *, client: str) -> object:
        """``GET /access/ticket`` (a no-op returning null) and ``POST /access/ticket`` (login)."""
        if method == "GET":
            return None
        if params.get("path") or params.get("privs"):
            raise PveApiError(
                501,
                "pve_sim does not implement ticket verification with 'path' and 'privs'",
            )
        userid, ticket, csrf = self.authority.login(params, self.cluster, client=client)
        data: dict[str, object] = {
            "username": userid,
            "ticket": ticket,
            "CSRFPreventionToken": csrf,
            "cap": self.cluster.api_capabilities(userid),
        }
        clustername = self.cluster.login_clustername(userid)
        if clustername:
            data["clustername"] = clustername
        return data

    # -- non-API paths ----------------------------------------------------------------------------

    def _handle_static(self, request: HttpRequest, path: str) -> HttpResponse:
        """Outside ``/api2``: a short index at ``/`` (PVE serves its GUI there), else PVE's 500."""
        body_check = self._check_body(request)
        if body_check is not None:
            return body_check
        if path == "/" and request.method == "GET":
            text = (
                "pve_sim - Proxmox VE API simulator\n"
                f"cluster: {self.cluster.name}\n"
                "API: /api2/json/ (log in with POST /api2/json/access/ticket or an API token)\n"
            )
            return HttpResponse(200, "OK", body=text.encode(), content_type="text/plain;charset=UTF-8")
        return plain_error(500, f"no such file '{path}'")

    def _handle_admin(self, request: HttpRequest, path: str) -> HttpResponse:
        if request.content_length and request.body_too_large:
            return plain_error(501, "for data too large")
        status, payload = self.admin.handle(
            request.method,
            path[len(ADMIN_PREFIX) :] or "/",
            request.body,
            request.header("authorization"),
        )
        response = HttpResponse(
            status,
            _admin_reason(status, payload),
            body=json_bytes(payload),
            content_type=JSON_CONTENT_TYPE,
            close=status >= 400,
            log_user="sim-admin" if status != 401 else "-",
        )
        return response


def _admin_reason(status: int, payload: Mapping[str, object]) -> str:
    message = payload.get("message")
    if status >= 400 and isinstance(message, str):
        return message
    return http.HTTPStatus(status).phrase if status in http.HTTPStatus._value2member_map_ else "OK"
