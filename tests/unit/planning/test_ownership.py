"""Ownership marks: a CT is ours only when range, tags and description record all agree, and the
record's signature verifies with the operator's key."""

from __future__ import annotations

import pytest

from pve_operator.planning.ownership import (
    MANAGED_TAG,
    OwnershipKey,
    OwnershipRecord,
    Verdict,
    carries_ownership_marks,
    format_description,
    is_owned,
    is_valid_tag,
    normalize_tags,
    ownership_tags,
    parse_record,
    policy_tag,
    remove_record,
    verdict,
)

UID = "0b8a2f5e-7d43-4c1e-9a4b-5f6e7d8c9b0a"
KEY = OwnershipKey(bytes(range(32)))
RECORD = OwnershipRecord("apps", "web", UID, 7, "2026-11-23T23:00:00Z").signed(3107, KEY)
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
    assert is_owned(vmid=vmid, tags=tags, description=description, policy_uid=UID, vmid_range=RANGE, key=KEY) is owned


def _verdict(vmid: int, description: str, key: OwnershipKey = KEY) -> Verdict:
    return verdict(
        vmid=vmid, tags=ownership_tags(UID), description=description, policy_uid=UID, vmid_range=RANGE, key=key
    )


def test_a_record_copied_onto_another_ct_does_not_verify_there() -> None:
    """The forgery of issue 10: tags and the whole description copied from CT 3107 onto CT 3108."""
    copied = format_description(RECORD)
    assert _verdict(3107, copied) is Verdict.OWNED
    assert _verdict(3108, copied) is Verdict.BAD_SIGNATURE
    assert carries_ownership_marks(
        vmid=3108, tags=ownership_tags(UID), description=copied, policy_uid=UID, vmid_range=RANGE
    ), "every mark is there: only the signature tells the copy apart"


@pytest.mark.parametrize(
    "tampered",
    [
        RECORD.__class__(**{**RECORD.__dict__, "index": 8}),  # another index: another host name, scale-down order
        RECORD.__class__(**{**RECORD.__dict__, "policy_uid": "other-uid"}),  # moved to another policy
    ],
)
def test_editing_a_signed_field_breaks_the_signature(tampered: OwnershipRecord) -> None:
    assert not KEY.verifies(3107, tampered)


def test_a_record_signed_with_another_key_or_unsigned_proves_nothing() -> None:
    other_key = OwnershipKey(b"\xff" * 32)
    assert _verdict(3107, format_description(RECORD), key=other_key) is Verdict.BAD_SIGNATURE
    unsigned = OwnershipRecord("apps", "web", UID, 7, "2026-11-23T23:00:00Z")
    assert unsigned.to_line().count("sig=") == 0
    assert _verdict(3107, format_description(unsigned)) is Verdict.UNSIGNED
    assert _verdict(3107, format_description(unsigned.signed(3107, KEY))) is Verdict.OWNED


def test_the_signature_round_trips_and_the_key_is_never_printed() -> None:
    line = RECORD.to_line()
    assert line.endswith(f";sig={RECORD.signature}") and len(RECORD.signature) == 32
    assert parse_record(line) == RECORD
    assert repr(KEY) == "OwnershipKey()", "the key's bytes never reach a log line or an exception"
    with pytest.raises(ValueError, match="at least 32 bytes"):
        OwnershipKey(b"short")


def test_a_template_hash_counts_only_when_its_own_signature_verifies() -> None:
    from pve_operator.planning.ownership import OwnershipKey, OwnershipRecord, parse_record

    key = OwnershipKey(b"unit-test-ownership-key-32-bytes")
    record = OwnershipRecord("apps", "web", "uid-1", 3, "2026-12-03T00:00:00Z").signed(3103, key)
    stamped = record.with_template(3103, key, "18d310f4407a")
    parsed = parse_record("notes\n" + stamped.to_line())
    assert parsed is not None and key.verifies(3103, parsed), "the ownership signature is unchanged"
    assert key.template_of(3103, parsed) == "18d310f4407a"
    # Edited by someone without the key (to force a recreate): unknown, so no rollout touches the CT.
    forged = parse_record(stamped.to_line().replace("template=18d310f4407a", "template=000000000000"))
    assert forged is not None and key.template_of(3103, forged) == ""
    assert key.template_of(3104, parsed) == "", "copied onto another CT"
    assert key.template_of(3103, record) == "", "no template recorded"


def test_the_ct_a_replacement_receives_volumes_from_counts_only_when_signed_for_that_replacement() -> None:
    from pve_operator.planning.ownership import OwnershipKey, OwnershipRecord, parse_record

    key = OwnershipKey(b"unit-test-ownership-key-32-bytes")
    record = OwnershipRecord("apps", "web", "uid-1", 3, "2026-12-03T00:00:00Z").signed(3103, key)
    receiving = record.with_template(3103, key, "18d310f4407a").receiving_volumes_from(3103, key, 3100)
    parsed = parse_record("notes\n" + receiving.to_line())
    assert parsed is not None and key.verifies(3103, parsed) and key.template_of(3103, parsed) == "18d310f4407a"
    assert key.volumes_from_of(3103, parsed) == 3100
    # The handover destroys the source: a hand-edited source (another CT of the policy) is not believed.
    forged = parse_record(receiving.to_line().replace("from=3100", "from=3101"))
    assert forged is not None and key.volumes_from_of(3103, forged) is None
    assert key.volumes_from_of(3104, parsed) is None, "copied onto another CT"
    assert key.volumes_from_of(3103, record) is None, "an ordinary CT receives nothing"
