"""Ownership marks: a CT is ours only when range, tags and description record all agree."""

from __future__ import annotations

import pytest

from pve_operator.planning.ownership import (
    MANAGED_TAG,
    OwnershipRecord,
    format_description,
    is_owned,
    is_valid_tag,
    normalize_tags,
    ownership_tags,
    parse_record,
    policy_tag,
    remove_record,
)

UID = "0b8a2f5e-7d43-4c1e-9a4b-5f6e7d8c9b0a"
RECORD = OwnershipRecord("apps", "web", UID, 7, "2026-11-23T23:00:00Z")
RANGE = range(3100, 3200)


def test_marks_are_valid_pve_tags_and_differ_per_policy() -> None:
    for tag in ownership_tags(UID):
        assert is_valid_tag(tag)
    assert policy_tag(UID) != policy_tag("another-uid")
    assert MANAGED_TAG in ownership_tags("another-uid")


def test_record_round_trips_through_the_description_with_user_text() -> None:
    description = format_description(RECORD, "Web frontends\nowned by team A")
    assert description.startswith("Web frontends\nowned by team A\n")
    assert parse_record(description) == RECORD
    assert remove_record(description) == "Web frontends\nowned by team A"


def test_rewriting_the_description_does_not_duplicate_the_record() -> None:
    twice = format_description(RECORD, format_description(RECORD, "notes"))
    assert twice.count("pve-operator:") == 1


@pytest.mark.parametrize(
    "description",
    [
        None,
        "",
        "just notes",
        "pve-operator:policy=apps/web;uid=x;index=seven;created=t",
        "pve-operator:policy=apps;uid=x;index=1;created=t",
        "pve-operator:policy=apps/web;index=1;created=t",
        "pve-operator:garbage",
    ],
)
def test_missing_or_malformed_record_is_not_ours(description: str | None) -> None:
    assert parse_record(description) is None


def test_pve_normalised_tag_string_is_understood() -> None:
    pve_form = ";".join(sorted(ownership_tags(UID) | {"web"}))
    assert normalize_tags(pve_form) == ownership_tags(UID) | {"web"}
    assert normalize_tags("Web, PVE-Operator") == {"web", "pve-operator"}


@pytest.mark.parametrize(
    ("vmid", "tags", "description", "owned"),
    [
        (3107, ownership_tags(UID), format_description(RECORD), True),
        (3250, ownership_tags(UID), format_description(RECORD), False),  # outside the range
        (3107, {MANAGED_TAG}, format_description(RECORD), False),  # policy tag missing
        (3107, ownership_tags(UID), "hand-made CT", False),  # no record
        (3107, ownership_tags(UID), format_description(RECORD).replace(UID, "other"), False),  # other policy
        (3107, ownership_tags("other"), format_description(RECORD), False),  # tags copied from another policy
    ],
)
def test_all_three_marks_must_agree(vmid: int, tags: set[str], description: str, owned: bool) -> None:
    assert is_owned(vmid=vmid, tags=tags, description=description, policy_uid=UID, vmid_range=RANGE) is owned
