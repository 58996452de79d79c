"""The simulator's authentication layer: tickets, CSRF prevention tokens and API-token headers.

This mirrors what PVE's API daemon does before any handler runs (pve-http-server
``AnyEvent.pm`` ``authenticate_and_handle_request``, pve-manager ``HTTPServer.pm`` ``auth_handler``,
pve-common ``Ticket.pm``, pve-access-control ``AccessControl.pm``):

* credentials come from the ``PVEAuthCookie`` cookie, else ``Authorization: PVEAuthCookie=…``,
  else ``Authorization: PVEAPIToken=user@realm!tokenid=secret`` (``=`` or a space after the
  scheme name, ``=`` between token id and secret, exactly PVE's parsing; proxmoxer uses ``=``
  for PVE — the ``:`` separator is Proxmox Backup Server's and real PVE rejects it);
* tickets look like PVE's, ``PVE:<userid>:<8 HEX timestamp>::<signature>``, and live two hours on
  the *simulated* clock (so a test can expire one by advancing the clock); the signature is an
  HMAC with a per-server random key instead of PVE's RSA signature, which no client can tell apart
  because clients treat tickets as opaque;
* CSRF prevention tokens are ``<8 HEX timestamp>:<HMAC-SHA256 base64>`` bound to the user, required
  on every non-GET request authenticated by a ticket and never for API tokens;
* failures raise the auth-layer errors PVE sends with an empty body: 401 ``No ticket``,
  401 ``Authentication failed!``, 401 ``Permission denied - invalid csrf token``.

Secrets never leave this module through logs: log lines carry the user or token *id* only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from .clock import SimClock
from .common import Subject
from .errors import PveApiError

log = logging.getLogger("pve_sim.auth")

TICKET_LIFETIME_SECONDS = 2 * 3600
"""PVE's ``$ticket_lifetime`` (pve-access-control ``AccessControl.pm``)."""

AUTH_GRACE_SECONDS = 5 * 60
"""PVE accepts tickets and CSRF tokens up to five minutes "from the future" (clock skew)."""

COOKIE_NAME = "PVEAuthCookie"
API_TOKEN_NAME = "PVEAPIToken"
CSRF_HEADER = "CSRFPreventionToken"

# pve-access-control: userid = <name>@<realm>; token id = <userid>!<token name>.
_USERID_RE = re.compile(r"^(?P<user>[^\s:/]+)@(?P<realm>[A-Za-z][A-Za-z0-9.\-_]+)$")
_TOKEN_SUBID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9.\-_]+$")
_TICKET_RE = re.compile(r"^(?P<plain>PVE:\S+)::(?P<sig>[^:\s]+)$")
_TICKET_PLAIN_RE = re.compile(r"^PVE:(?P<data>\S+):(?P<ts>[A-Z0-9]{8})$")
_CSRF_RE = re.compile(r"^(?P<ts>[A-Z0-9]{8}):(?P<sig>\S+)$")


class CredentialStore(Protocol):
    """What the auth layer needs from the cluster's user database."""

    def check_password(self, userid: str, password: str) -> bool: ...

    def check_token(self, userid: str, tokenid: str, secret: str) -> bool: ...

    def user_enabled(self, userid: str) -> bool: ...


def no_ticket() -> PveApiError:
    """401 ``No ticket``: no credentials at all (empty body, like PVE)."""
    return PveApiError(401, "No ticket", empty_body=True)


def authentication_failed() -> PveApiError:
    """401 ``Authentication failed!``: a ticket or token that does not verify (empty body)."""
    return PveApiError(401, "Authentication failed!", empty_body=True)


def invalid_csrf_token() -> PveApiError:
    """401 ``Permission denied - invalid csrf token`` (empty body, raised by PVE's Ticket.pm)."""
    return PveApiError(401, "Permission denied - invalid csrf token", empty_body=True)


def login_failed() -> PveApiError:
    """401 ``authentication failure`` from ``POST /access/ticket``: a handler error, so it has a body.

    PVE deliberately says nothing more, to prevent user enumeration.
    """
    return PveApiError(401, "authentication failure")


def split_userid(userid: str) -> tuple[str, str] | None:
    """``name@realm`` -> (name, realm), or None when it is not a valid PVE user id."""
    match = _USERID_RE.match(userid)
    if match is None:
        return None
    return match.group("user"), match.group("realm")


def split_tokenid(full_tokenid: str) -> tuple[str, str] | None:
    """``user@realm!token`` -> (``user@realm``, ``token``), or None when malformed."""
    userid, sep, token = full_tokenid.rpartition("!")
    if not sep or split_userid(userid) is None or not _TOKEN_SUBID_RE.match(token):
        return None
    return userid, token


def extract_auth_value(header: str | None, key: str) -> str | None:
    """PVE's ``Formatter::extract_auth_value``: ``<key>=<value>`` or ``<key> <value>`` up to ``;``.

    The key must start the header or follow whitespace (so ``Cookie: a=b; PVEAuthCookie=…``
    works), and the value is URI-unescaped, as the GUI stores the ticket URI-escaped in the cookie.
    """
    if not header:
        return None
    match = re.search(r"(?:^|\s)" + re.escape(key) + r"(?:=| )([^;]*)", header)
    if match is None or not match.group(1):
        return None
    return urllib.parse.unquote(match.group(1), errors="replace")


@dataclass(frozen=True)
class Credentials:
    """What a request presented. Values are secrets: never log or repr them."""

    ticket: str | None
    csrf_token: str | None
    api_token: str | None

    def __repr__(self) -> str:  # keeps secrets out of tracebacks and debug logs
        return (
            f"Credentials(ticket={'<set>' if self.ticket else None}, "
            f"csrf_token={'<set>' if self.csrf_token else None}, "
            f"api_token={'<set>' if self.api_token else None})"
        )

    @classmethod
    def from_headers(cls, get_header: Mapping[str, str]) -> Credentials:
        """Pick credentials the way PVE does: cookie first, then the Authorization header.

        ``get_header`` maps lower-case header names to values.
        """
        cookie = get_header.get("cookie")
        authorization = get_header.get("authorization")
        ticket = extract_auth_value(cookie, COOKIE_NAME) or extract_auth_value(authorization, COOKIE_NAME)
        api_token = None if ticket else extract_auth_value(authorization, API_TOKEN_NAME)
        return cls(ticket=ticket, csrf_token=get_header.get(CSRF_HEADER.lower()), api_token=api_token)


@dataclass(frozen=True)
class AuthContext:
    """The outcome of the auth layer: who is calling and how.

    ``subject`` is None only for the calls PVE lets through without authentication
    (``/access/ticket``). ``via_api_token`` is True whenever a token header was presented, even on
    those calls, because PVE's allowtoken check looks at the header, not at the login state.
    """

    subject: Subject | None
    via_api_token: bool

    @property
    def log_user(self) -> str:
        """The caller as access logs show it (an id, never a secret)."""
        return self.subject.upid_user if self.subject else "-"


def _b64_nopad(raw: bytes) -> str:
    """Perl's ``*_base64`` digests: standard alphabet, no ``=`` padding."""
    return base64.b64encode(raw).decode("ascii").rstrip("=")


class TicketAuthority:
    """Issues and verifies tickets and CSRF tokens for one simulator instance.

    Keys are random per instance: tickets from one simulator run are worthless against another,
    like tickets from another PVE cluster. Time comes from the simulated clock, so ticket expiry
    follows ``advance_clock`` and time scaling.
    """

    def __init__(self, clock: SimClock, *, key: bytes | None = None) -> None:
        self._clock = clock
        master = key if key is not None else secrets.token_bytes(32)
        # Separate keys for the two token kinds, so a CSRF signature can never pass as a ticket.
        self._ticket_key = hmac.new(master, b"pve-sim ticket", hashlib.sha256).digest()
        self._csrf_key = hmac.new(master, b"pve-sim csrf", hashlib.sha256).digest()

    def _timestamp(self) -> str:
        return f"{int(self._clock.now()):08X}"

    def _age(self, timestamp_hex: str) -> float:
        return self._clock.now() - int(timestamp_hex, 16)

    @staticmethod
    def _age_ok(age: float) -> bool:
        return -AUTH_GRACE_SECONDS < age < TICKET_LIFETIME_SECONDS

    def issue_ticket(self, userid: str) -> str:
        """``PVE:<userid>:<8 HEX>::<signature>``; ``:`` in the data is URI-escaped as PVE does."""
        plain = f"PVE:{urllib.parse.quote(userid, safe='@!.-_~')}:{self._timestamp()}"
        signature = _b64_nopad(hmac.new(self._ticket_key, plain.encode("utf-8"), hashlib.sha256).digest())
        return f"{plain}::{signature}"

    def verify_ticket(self, ticket: str) -> str | None:
        """The ticket's user id if the signature is ours and the ticket is within its lifetime."""
        match = _TICKET_RE.match(ticket)
        if match is None:
            return None
        plain = match.group("plain")
        expected = _b64_nopad(hmac.new(self._ticket_key, plain.encode("utf-8"), hashlib.sha256).digest())
        if not hmac.compare_digest(expected.encode("ascii"), match.group("sig").encode("utf-8", "replace")):
            return None
        parts = _TICKET_PLAIN_RE.match(plain)
        if parts is None or not self._age_ok(self._age(parts.group("ts"))):
            return None
        return urllib.parse.unquote(parts.group("data"))

    def issue_csrf_token(self, userid: str) -> str:
        """``<8 HEX>:<HMAC-SHA256 base64 of "<ts>:<userid>">``, as pve-common ``Ticket.pm``."""
        timestamp = self._timestamp()
        digest = hmac.new(self._csrf_key, f"{timestamp}:{userid}".encode(), hashlib.sha256).digest()
        return f"{timestamp}:{_b64_nopad(digest)}"

    def verify_csrf_token(self, userid: str, token: str | None) -> bool:
        """True when ``token`` was issued by us for ``userid`` and is within the ticket lifetime."""
        if not token:
            return False
        match = _CSRF_RE.match(token)
        if match is None:
            return False
        timestamp = match.group("ts")
        digest = hmac.new(self._csrf_key, f"{timestamp}:{userid}".encode(), hashlib.sha256).digest()
        expected = _b64_nopad(digest).encode("ascii")
        if not hmac.compare_digest(expected, match.group("sig").encode("utf-8", "replace")):
            return False
        return self._age_ok(self._age(timestamp))

    # -- request authentication -------------------------------------------------------------------

    def authenticate(
        self,
        method: str,
        rel_uri: str,
        credentials: Credentials,
        store: CredentialStore,
        *,
        client: str = "-",
    ) -> AuthContext:
        """PVE's ``auth_handler``: who is calling, or the auth-layer 401 to answer.

        ``/access/ticket`` (GET and POST) needs no authentication: it is how one logs in.
        """
        via_token = credentials.api_token is not None
        if rel_uri == "/access/ticket" and method in ("GET", "POST"):
            return AuthContext(subject=None, via_api_token=via_token)

        if credentials.api_token is not None:
            subject = self._verify_api_token(credentials.api_token, store, client=client)
            # API tokens are exempt from CSRF: they are meant for stateless, non-browser clients.
            return AuthContext(subject=subject, via_api_token=True)

        if not credentials.ticket:
            raise no_ticket()
        userid = self.verify_ticket(credentials.ticket)
        if userid is None or not store.user_enabled(userid):
            log.warning(
                "authentication failure; rhost=%s user=%s msg=invalid PVE ticket",
                client,
                userid if userid is not None else "-",
            )
            raise authentication_failed()
        if method != "GET" and not self.verify_csrf_token(userid, credentials.csrf_token):
            log.warning("csrf check failed; rhost=%s user=%s", client, userid)
            raise invalid_csrf_token()
        return AuthContext(subject=Subject(userid=userid), via_api_token=False)

    @staticmethod
    def _verify_api_token(value: str, store: CredentialStore, *, client: str) -> Subject:
        # pve-access-control verify_token: greedy `^(.*)=(.*)$`, so the secret is what follows
        # the last `=`; everything before it must be a valid `user@realm!token`.
        full_tokenid, sep, secret = value.rpartition("=")
        parsed = split_tokenid(full_tokenid) if sep else None
        if parsed is None:
            log.warning("authentication failure; rhost=%s msg=malformed API token header", client)
            raise authentication_failed()
        userid, tokenid = parsed
        if not store.user_enabled(userid) or not store.check_token(userid, tokenid, secret):
            log.warning("authentication failure; rhost=%s token=%s!%s", client, userid, tokenid)
            raise authentication_failed()
        return Subject(userid=userid, tokenid=tokenid)

    # -- POST /access/ticket ----------------------------------------------------------------------

    def login(
        self,
        params: Mapping[str, object],
        store: CredentialStore,
        *,
        client: str = "-",
    ) -> tuple[str, str, str]:
        """PVE's ``create_ticket``: (userid, ticket, CSRF token) or 401 ``authentication failure``.

        ``password`` may be a still-valid ticket (renewal, which proxmoxer does every hour); a
        ticket of root@pam may create tickets for any user, as in PVE. ``realm``, when given, is
        appended to ``username``.
        """
        username = str(params.get("username", ""))
        realm = params.get("realm")
        if realm:
            username = f"{username}@{realm}"
        password = params.get("password")
        password_text = "" if password is None else str(password)

        ok = False
        if split_userid(username) is not None and store.user_enabled(username):
            if "tfa-challenge" in params:
                ok = False  # no simulated user has a second factor, so no challenge can be answered
            else:
                ticket_user = self.verify_ticket(password_text) if password_text.startswith("PVE:") else None
                ok = ticket_user is not None and ticket_user in ("root@pam", username)
                if not ok:
                    ok = store.check_password(username, password_text)
        if not ok:
            log.warning("authentication failure; rhost=%s user=%s", client, username or "-")
            raise login_failed()
        log.info("successful auth for user '%s'", username)
        return username, self.issue_ticket(username), self.issue_csrf_token(username)


def header_map(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-cased header names -> value (repeated headers joined with ``, `` like HTTP::Headers)."""
    merged: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged
