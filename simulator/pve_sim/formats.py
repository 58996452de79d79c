"""PVE's named parameter formats, list splitting and tag normalisation, with PVE's exact messages.

PVE validates a string against a *named* format (``format => 'pve-vmid'``) by calling a verifier
that dies with a one-line message; the schema checker then reports ``invalid format - <message>``.
This module re-implements those verifiers (from reading ``pve-common``'s ``JSONSchema.pm``,
``pve-access-control``, ``pve-storage`` and ``pve-container``; no code copied) so that a client of
the simulator sees the same 400 answers as from a real PVE 9.1 node.

The messages are kept byte for byte, **including the trailing newline** that Perl's ``die "...\\n"``
leaves in ``$@``: PVE's ``errors`` map really carries
``"invalid format - value does not look like a valid VM ID\\n"``. A few verifiers wrap another
verifier's message and so end in two or three newlines (the storage pair list); that is what PVE
sends, too.

Named formats accept the ``-list`` and ``-opt`` suffixes exactly as PVE's ``check_format`` does:
``pve-tag-list`` validates every element of :func:`split_list`, ``x-opt`` validates only a
non-empty value. Property-string formats (``net[n]``, ``rootfs``, ...) are not here: they are
schemas, and live with the other schemas in :mod:`pve_sim.api_schema`.

Nothing here reads files at import time; the time-zone list is loaded lazily on first use.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pve_sim.scenario import VALID_PRIVILEGES

__all__ = [
    "NAMED_FORMATS",
    "FormatError",
    "IdMap",
    "check_named_format",
    "is_known_format",
    "normalize_tags",
    "parse_boolean",
    "parse_idmap",
    "parse_size",
    "split_list",
]


class FormatError(ValueError):
    """A value failed a PVE format check.

    ``message`` is the text PVE's verifier dies with, trailing newline(s) included, so that the
    schema checker can report ``"invalid format - " + message`` verbatim. ``errors`` is set for
    property strings ("format error") and maps ``<param>.<key>`` to the per-key message.
    """

    def __init__(self, message: str, errors: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors: dict[str, str] = dict(errors) if errors else {}

    def __str__(self) -> str:
        """The text PVE interpolates as ``$@``: for a property string, the exception object's
        string form, i.e. the message followed by one ``<path>: <message>`` line per error."""
        return self.message + "".join(f"{key}: {msg}\n" for key, msg in self.errors.items())


# --------------------------------------------------------------------------------------------------
# Regular expressions. PVE matches with Perl's `m/^...$/`; Python's `re` has the same `$` semantics
# (end of string or before a final newline) and the same Unicode meaning of \d and \w for str input.

_IPV4_OCTET = r"(?:25[0-5]|(?:2[0-4]|1[0-9]|[1-9])?[0-9])"
_IPV4 = rf"(?:(?:{_IPV4_OCTET}\.){{3}}{_IPV4_OCTET})"
_H16 = r"(?:[0-9a-fA-F]{1,4})"
_LS32 = rf"(?:(?:{_IPV4}|{_H16}:{_H16}))"
# RFC 4291 section 2.2 text forms, one alternative per position of the "::" (as PVE's IPV6RE).
_IPV6 = (
    "(?:"
    rf"(?:(?:(?:{_H16}:){{6}}){_LS32})|"
    rf"(?:(?:::(?:{_H16}:){{5}}){_LS32})|"
    rf"(?:(?:(?:{_H16})?::(?:{_H16}:){{4}}){_LS32})|"
    rf"(?:(?:(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}){_LS32})|"
    rf"(?:(?:(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}){_LS32})|"
    rf"(?:(?:(?:(?:{_H16}:){{0,3}}{_H16})?::(?:{_H16}:){{1}}){_LS32})|"
    rf"(?:(?:(?:(?:{_H16}:){{0,4}}{_H16})?::){_LS32})|"
    rf"(?:(?:(?:(?:{_H16}:){{0,5}}{_H16})?::){_H16})|"
    rf"(?:(?:(?:(?:{_H16}:){{0,6}}{_H16})?::))"
    ")"
)

_VMID_RE = re.compile(r"^[1-9][0-9]{2,8}$")
_NODE_RE = re.compile(r"^([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$")
_CONFIGID_RE = re.compile(r"^[a-z][a-z0-9_-]+$", re.IGNORECASE)
_ID_RE = re.compile(r"^[a-z][a-z0-9\-_.]*[a-z0-9]$", re.IGNORECASE)
_POOL_RE = re.compile(r"^[A-Za-z0-9.\-_]+(?:/[A-Za-z0-9.\-_]+){0,2}$")
_REALM_RE = re.compile(r"^[A-Za-z][A-Za-z0-9.\-_]+$")
_DNS_LABEL = r"([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)"
_DNS_NAME_RE = re.compile(rf"^({_DNS_LABEL}\.)*{_DNS_LABEL}$")
_IPV4_RE = re.compile(rf"^(?:{_IPV4})$")
_IPV6_RE = re.compile(rf"^(?:{_IPV6})$")
_IP_RE = re.compile(rf"^(?:(?:{_IPV4})|(?:{_IPV6}))$")
_CIDRV4_RE = re.compile(rf"^(?:{_IPV4})(?:/(\d+))$")
_CIDRV6_RE = re.compile(rf"^(?:{_IPV6})(?:/(\d+))$")
_IPV4_CONFIG_KEYWORD_RE = re.compile(r"^(?:dhcp|manual)$")
_IPV6_CONFIG_KEYWORD_RE = re.compile(r"^(?:auto|dhcp|manual)$")
_MAC_RE = re.compile(r"^[a-f0-9][02468ace](?::[a-f0-9]{2}){5}$", re.IGNORECASE)
_IFACE_RE = re.compile(r"^[a-z][a-z0-9_]{1,20}([:.]\d+)?$", re.IGNORECASE)
_LL_IFACE_RE = re.compile(r"^(fe80:[^%]+)%(.*)$")
_VOLUME_ID_RE = re.compile(r"^([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)$", re.IGNORECASE)
_TAG_RE = re.compile(r"^[a-z0-9_][a-z0-9_\-+.]*$", re.IGNORECASE)
_TASK_STATUS_RE = re.compile(r"^(ok|error|warning|unknown)$", re.IGNORECASE)
_SIZE_RE = re.compile(r"^(\d+(\.\d+)?)([KMGT](?:iB)?)?$")
_STARTUP_ORDER_RE = re.compile(r"^(order=)?(\d+)$")
_STARTUP_UP_RE = re.compile(r"^up=(\d+)$")
_STARTUP_DOWN_RE = re.compile(r"^down=(\d+)$")
_BLANK_RE = re.compile(r"^\s*$")
_SPLIT_SEPARATORS_RE = re.compile(r"[,;]")
_MP_BAD_RE = (re.compile(r"/\.\.?/"), re.compile(r"/\.\.?$"), re.compile(r"^\.\./"))
_DEV_DOTS_RE = re.compile(r"/\.\.?(?:/|$)")
_DEV_PREFIX_RE = re.compile(r"^/dev/")
_IDMAP_PAIR_RE = re.compile(r"^([^:]+):([^:]+)$")
_FORMAT_SUFFIX_RE = re.compile(r"^(.*?)(?:-(list|opt))?$")
_BOOL_TRUE_RE = re.compile(r"^(1|on|yes|true)$", re.IGNORECASE)
_BOOL_FALSE_RE = re.compile(r"^(0|off|no|false)$", re.IGNORECASE)

# The privileges PVE knows (pve-access-control's $privgroups): one list, kept with the built-in roles.
_VALID_PRIVILEGES = VALID_PRIVILEGES

# pve-storage: the 'dir' plugin supports every content type, and verify_content checks against it.
_CONTENT_TYPES = frozenset({"images", "rootdir", "vztmpl", "iso", "backup", "snippets", "none", "import"})


# --------------------------------------------------------------------------------------------------
# Helpers PVE uses in several places.


def split_list(text: str) -> list[str]:
    """Split a PVE list value the way ``PVE::ParseUtils::split_list`` does.

    NUL-separated if the text contains a NUL; otherwise ``,`` and ``;`` count as whitespace and
    the text is split on runs of whitespace. Empty input gives an empty list (PVE allows empty
    lists wherever a ``-list`` format is used).
    """
    if "\0" in text:
        parts = text.split("\0")
        while parts and parts[-1] == "":  # Perl's split drops trailing empty fields
            parts.pop()
        return parts
    return _SPLIT_SEPARATORS_RE.sub(" ", text).split()


def parse_boolean(text: str) -> bool | None:
    """Booleans *inside property strings*: ``1|on|yes|true`` / ``0|off|no|false`` (any case).

    Top-level parameters are stricter (only ``0``/``1``); that check lives in the validator.
    """
    if _BOOL_TRUE_RE.match(text):
        return True
    if _BOOL_FALSE_RE.match(text):
        return False
    return None


def parse_size(text: str) -> int | None:
    """Bytes for a PVE disk size (``8``, ``8G``, ``512MiB``, ``1.5T``), or None if it is not one.

    A bare number is bytes, as in ``PVE::JSONSchema::parse_size``.
    """
    match = _SIZE_RE.match(text)
    if match is None:
        return None
    size = float(match.group(1))
    unit = match.group(3)
    if unit:
        size *= 1024 ** ("KMGT".index(unit[0]) + 1)
    return int(size)


def normalize_tags(value: str, *, case_sensitive: bool = False, keep_order: bool = False) -> str:
    """PVE's tag normalisation on write (``PVE::GuestHelpers::get_unique_tags``).

    Splits like :func:`split_list` (``,``, ``;`` and spaces), lower-cases unless the datacenter's
    ``tag-style`` is ``case-sensitive=1``, drops duplicates, sorts (case-insensitively unless
    case-sensitive) unless ``ordering=config`` (``keep_order=True``), and joins with ``;``.
    The operator compares tags as normalised sets because of exactly this rewrite.
    """
    tags = split_list(value)
    if not keep_order:
        tags = sorted(tags) if case_sensitive else sorted(tags, key=str.lower)
    seen: set[str] = set()
    result: list[str] = []
    for tag in tags:
        if not case_sensitive:
            tag = tag.lower()
        if tag in seen:
            continue
        seen.add(tag)
        result.append(tag)
    return ";".join(result)


@dataclass(frozen=True)
class IdMap:
    """A parsed ID map (``target-storage``): ``1`` = identity, a bare ID = default, ``a:b`` pairs."""

    identity: bool = False
    default: str | None = None
    entries: Mapping[str, str] = field(default_factory=dict)

    def map(self, source: str) -> str:
        """Target for ``source``: explicit entry, else the default, else the source itself."""
        if source in self.entries:
            return self.entries[source]
        return self.default or source


def parse_idmap(value: str, id_format: str = "pve-storage-id") -> IdMap:
    """Parse a whole storage/bridge map as ``PVE::JSONSchema::parse_idmap`` does.

    The schema only checks each list element; a handler (migrate) parses the whole value and
    reports failures itself (e.g. ``failed to parse storage map: <message>``). Raises
    :class:`FormatError` with PVE's message.
    """
    identity = False
    default: str | None = None
    entries: dict[str, str] = {}
    for entry in split_list(value):
        if entry == "1":
            identity = True
            continue
        pair = _IDMAP_PAIR_RE.match(entry)
        try:
            if pair is not None:
                check_named_format(id_format, pair.group(1))
                check_named_format(id_format, pair.group(2))
            else:
                check_named_format(id_format, entry)
        except FormatError as err:
            raise FormatError(f"entry '{entry}' contains invalid ID - {err.message}\n") from None
        if pair is not None:
            source, target = pair.group(1), pair.group(2)
            if source in entries:
                raise FormatError(f"duplicate mapping for source '{source}'\n")
            entries[source] = target
        else:
            if default is not None:
                raise FormatError("default target ID can only be provided once\n")
            default = entry
    if identity and (default is not None or entries):
        raise FormatError("identity mapping cannot be combined with other mappings\n")
    return IdMap(identity=identity, default=default, entries=entries)


# --------------------------------------------------------------------------------------------------
# The verifiers. Each raises FormatError with PVE's die message, or returns None.


def _verify_vmid(value: str) -> None:
    if not _VMID_RE.match(value):
        raise FormatError("value does not look like a valid VM ID\n")


def _verify_node(value: str) -> None:
    if not _NODE_RE.match(value):
        raise FormatError("value does not look like a valid node name\n")


def _verify_configid(value: str) -> None:
    if not _CONFIGID_RE.match(value):
        raise FormatError(f"invalid configuration ID '{value}'\n")


def _verify_storage_id(value: str) -> None:
    if len(value) < 2:
        raise FormatError(f"storage ID '{value}' cannot be shorter than 2 characters\n")
    if not _ID_RE.match(value):
        raise FormatError(f"storage ID '{value}' contains illegal characters\n")


def _perl_split_count(value: str, separator: str) -> int:
    """Number of fields Perl's ``split`` returns (trailing empty fields removed)."""
    parts = value.split(separator)
    while parts and parts[-1] == "":
        parts.pop()
    return len(parts)


def _verify_poolid(value: str) -> None:
    if _perl_split_count(value, "/") > 3:
        raise FormatError(f"pool name '{value}' nested too deeply (max levels = 3)\n")
    if not _POOL_RE.match(value):
        raise FormatError(f"pool name '{value}' contains invalid characters\n")


def _verify_realm(value: str) -> None:
    if not _REALM_RE.match(value):
        raise FormatError("value does not look like a valid realm\n")


def _verify_privilege(value: str) -> None:
    if value not in _VALID_PRIVILEGES:
        raise FormatError(f"invalid privilege '{value}'\n")


def _verify_dns_name(value: str) -> None:
    if not _DNS_NAME_RE.match(value):
        raise FormatError("value does not look like a valid DNS name\n")


def _verify_ipv4(value: str) -> None:
    if not _IPV4_RE.match(value):
        raise FormatError("value does not look like a valid IPv4 address\n")


def _verify_ipv6(value: str) -> None:
    if not _IPV6_RE.match(value):
        raise FormatError("value does not look like a valid IPv6 address\n")


def _is_ip(value: str) -> bool:
    return _IP_RE.match(value) is not None


def _verify_ip(value: str) -> None:
    if not _is_ip(value):
        raise FormatError("value does not look like a valid IP address\n")


def _is_cidr(pattern: re.Pattern[str], value: str, max_bits: int) -> bool:
    match = pattern.match(value)
    return match is not None and 7 < int(match.group(1)) <= max_bits


def _verify_ipv4_config(value: str) -> None:
    if _IPV4_CONFIG_KEYWORD_RE.match(value) or _is_cidr(_CIDRV4_RE, value, 32):
        return
    raise FormatError("value does not look like a valid ipv4 network configuration\n")


def _verify_ipv6_config(value: str) -> None:
    if _IPV6_CONFIG_KEYWORD_RE.match(value) or _is_cidr(_CIDRV6_RE, value, 128):
        return
    raise FormatError("value does not look like a valid ipv6 network configuration\n")


def _verify_ip_with_ll_iface(value: str) -> None:
    """A nameserver: an IP, or a link-local IPv6 with ``%iface`` (pve-container)."""
    link_local = _LL_IFACE_RE.match(value)
    if link_local and _is_ip(link_local.group(1)) and _IFACE_RE.match(link_local.group(2)):
        return
    _verify_ip(value)


def _verify_mac(value: str) -> None:
    if not _MAC_RE.match(value):
        raise FormatError("value does not look like a valid unicast MAC address\n")


def _verify_volume_id(value: str) -> None:
    if not _VOLUME_ID_RE.match(value):
        raise FormatError(f"unable to parse volume ID '{value}'\n")


def _verify_startup_order(value: str) -> None:
    # Perl truthiness: '' and '0' are false, and pve_parse_startup_order returns undef for them.
    ok = value not in ("", "0")
    if ok:
        for part in value.split(","):
            if _BLANK_RE.match(part):
                continue
            if not (_STARTUP_ORDER_RE.match(part) or _STARTUP_UP_RE.match(part) or _STARTUP_DOWN_RE.match(part)):
                ok = False
                break
    if not ok:
        raise FormatError("unable to parse startup options\n")


def _verify_tag(value: str) -> None:
    if not _TAG_RE.match(value):
        raise FormatError("invalid characters in tag\n")


@functools.cache
def _zone_tab_names() -> frozenset[str]:
    """Zone names from ``zone.tab`` (what PVE reads), falling back to the tzdata package."""
    text: str | None = None
    system = Path("/usr/share/zoneinfo/zone.tab")
    try:
        text = system.read_text(encoding="utf-8")
    except OSError:
        try:
            resource = importlib.resources.files("tzdata").joinpath("zoneinfo", "zone.tab")
            text = resource.read_text(encoding="utf-8")
        except (ModuleNotFoundError, OSError):
            text = None
    if text is None:
        return frozenset(zoneinfo.available_timezones())
    names = set()
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) > 2:
            names.add(fields[2])
    return frozenset(names)


def _verify_ct_timezone(value: str) -> None:
    if value in ("host", "UTC") or value in _zone_tab_names():
        return
    raise FormatError(f"invalid time zone '{value}'\n")


def _verify_task_status_type(value: str) -> None:
    if not _TASK_STATUS_RE.match(value):
        raise FormatError(f"invalid status '{value}'\n")


def _verify_storage_content(value: str) -> None:
    if value not in _CONTENT_TYPES:
        raise FormatError(f"invalid content type '{value}'\n")


def _verify_storage_pair(value: str) -> None:
    # pve-common's $verify_idpair re-dies with "$@\n": one more newline than parse_idmap's message.
    try:
        parse_idmap(value, "pve-storage-id")
    except FormatError as err:
        raise FormatError(f"{err.message}\n") from None


def _verify_lxc_mp_string(value: str) -> None:
    if any(pattern.search(value) for pattern in _MP_BAD_RE):
        raise FormatError(f"{value} contains illegal character sequences\n")


def _verify_lxc_dev_string(value: str) -> None:
    if _DEV_DOTS_RE.search(value) or not _DEV_PREFIX_RE.match(value):
        raise FormatError(f"{value} is not a valid device path\n")


def _verify_disk_size(value: str) -> None:
    if parse_size(value) is None:
        raise FormatError(f"value does not look like a valid disk size: {value}\n")


_HA_RESOURCE_ID_RE = re.compile(r"^[a-z]+:\S+$")
_HA_RESOURCE_OR_VMID_RE = re.compile(r"^([a-z]+:\S+|\d+)$")
_HA_NODE_RE = re.compile(r"^([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)(:\d+)?$")


def _verify_ha_resource_id(value: str) -> None:
    """pve-ha-manager ``src/PVE/HA/Tools.pm`` ``pve_verify_ha_resource_id``."""
    if not _HA_RESOURCE_ID_RE.match(value):
        raise FormatError("value does not look like a valid ha resource id\n")


def _verify_ha_resource_or_vm_id(value: str) -> None:
    """pve-ha-manager ``src/PVE/HA/Tools.pm`` ``pve_verify_ha_resource_or_vm_id``."""
    if not _HA_RESOURCE_OR_VMID_RE.match(value):
        raise FormatError("value does not look like a valid ha resource id\n")


def _verify_ha_node(value: str) -> None:
    """pve-ha-manager ``src/PVE/HA/Tools.pm`` ``pve_verify_ha_node`` (``node`` or ``node:<pri>``)."""
    if not _HA_NODE_RE.match(value):
        raise FormatError("value does not look like a valid ha node\n")


NAMED_FORMATS: Mapping[str, Callable[[str], None]] = {
    "pve-vmid": _verify_vmid,
    "pve-node": _verify_node,
    "pve-configid": _verify_configid,
    "pve-storage-id": _verify_storage_id,
    "pve-poolid": _verify_poolid,
    "pve-realm": _verify_realm,
    "pve-priv": _verify_privilege,
    "dns-name": _verify_dns_name,
    "ipv4": _verify_ipv4,
    "ipv6": _verify_ipv6,
    "ip": _verify_ip,
    "pve-ipv4-config": _verify_ipv4_config,
    "pve-ipv6-config": _verify_ipv6_config,
    "lxc-ip-with-ll-iface": _verify_ip_with_ll_iface,
    "mac-addr": _verify_mac,
    "pve-volume-id": _verify_volume_id,
    "pve-startup-order": _verify_startup_order,
    "pve-tag": _verify_tag,
    "pve-ct-timezone": _verify_ct_timezone,
    "pve-task-status-type": _verify_task_status_type,
    "pve-storage-content": _verify_storage_content,
    "storage-pair": _verify_storage_pair,
    "pve-lxc-mp-string": _verify_lxc_mp_string,
    "pve-lxc-dev-string": _verify_lxc_dev_string,
    "disk-size": _verify_disk_size,
    "pve-ha-resource-id": _verify_ha_resource_id,
    "pve-ha-resource-or-vm-id": _verify_ha_resource_or_vm_id,
    "pve-ha-node": _verify_ha_node,
}
"""Named formats by their PVE name (without ``-list``/``-opt``)."""


def _split_format_name(name: str) -> tuple[str, Literal["none", "list", "opt"]]:
    match = _FORMAT_SUFFIX_RE.match(name)
    assert match is not None  # the pattern matches every string
    suffix = match.group(2)
    kind: Literal["none", "list", "opt"] = "list" if suffix == "list" else "opt" if suffix == "opt" else "none"
    return match.group(1), kind


def is_known_format(name: str) -> bool:
    """True if ``name`` (optionally with ``-list``/``-opt``) is a named format implemented here."""
    base, _ = _split_format_name(name)
    return base in NAMED_FORMATS


def check_named_format(name: str, value: str) -> None:
    """Validate ``value`` against the named format ``name`` like PVE's ``check_format``.

    Raises :class:`FormatError` with PVE's message; :class:`KeyError` for a format this module
    does not implement (a programming error in a declaration, caught by the conformance tests).
    """
    base, kind = _split_format_name(name)
    verifier = NAMED_FORMATS[base]
    if kind == "list":
        for element in split_list(value):
            verifier(element)
    elif kind == "opt":
        if value not in ("", "0"):  # Perl truthiness of the value
            verifier(value)
    else:
        verifier(value)
