"""PII redaction: modes, restore, placeholders, policies, message shapes, streaming."""

from __future__ import annotations

import copy
import random
import re
from typing import Any

import pytest
from pydantic import ValidationError

from llmops.errors import ConfigError, PolicyBlocked
from llmops.gateway.redaction import (
    BUILTIN_ENTITIES,
    CustomPattern,
    EntityMode,
    RedactionPolicy,
    Redactor,
    StreamRestorer,
)

KEY = "k" * 32
EMAIL = "maria.garcia@example.com"
PHONE = "+44 20 7946 0958"
CARD = "4111 1111 1111 1111"
IBAN = "DE89 3704 0044 0532 0130 00"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"

PII_TEXT = (
    f"Hi, I'm Maria ({EMAIL}), call {PHONE}. Refund card {CARD} to IBAN {IBAN}; "
    f"my SSN is 536-22-1948 and I log in from 203.0.113.42 with key {AWS_KEY}."
)


def redactor(**policy: object) -> Redactor:
    return Redactor(RedactionPolicy.model_validate(policy))


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


# -- modes -------------------------------------------------------------------------------


def test_mask_replaces_every_entity_with_a_numbered_placeholder() -> None:
    text, findings = redactor().redact_text(PII_TEXT)
    assert text == (
        "Hi, I'm Maria ([EMAIL_1]), call [PHONE_1]. Refund card [CARD_1] to IBAN [IBAN_1]; "
        "my SSN is [SSN_1] and I log in from [IP_1] with key [SECRET_1]."
    )
    assert [f.entity for f in findings] == ["EMAIL", "PHONE", "CARD", "IBAN", "SSN", "IP", "SECRET"]
    assert findings[-1].kind == "aws_access_key_id"


def test_every_builtin_entity_defaults_to_mask() -> None:
    policy = RedactionPolicy()
    assert set(policy.entities) == set(BUILTIN_ENTITIES)
    assert all(policy.mode_for(e) is EntityMode.MASK for e in BUILTIN_ENTITIES)


def test_hash_gives_a_stable_keyed_token_and_no_mapping() -> None:
    one = redactor(entities={"EMAIL": "hash"}, hash_key=KEY)
    again = redactor(entities={"EMAIL": "hash"}, hash_key=KEY)
    other_key = redactor(entities={"EMAIL": "hash"}, hash_key="q" * 32)

    red = one.redact_messages([user(f"mail {EMAIL} or {EMAIL.upper()}")])
    text = red.messages[0]["content"]
    tokens = re.findall(r"\[EMAIL:[0-9a-f]{12}\]", text)
    assert len(tokens) == 2 and tokens[0] == tokens[1]  # case-insensitive address: same token
    assert EMAIL not in text and red.mapping == {} and red.counts == {"EMAIL": 2}
    assert red.restore(text) == text  # hashes are not reversible, not even by us
    assert again.redact_text(EMAIL)[0] == tokens[0]  # stable across redactors and requests
    assert other_key.redact_text(EMAIL)[0] != tokens[0]
    assert one.redact_text("other@example.com")[0] != tokens[0]


def test_hash_mode_without_a_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="hash_key"):
        redactor(entities={"PHONE": "hash"})


def test_block_refuses_the_request_naming_the_type_but_never_the_value() -> None:
    r = redactor(entities={"CARD": "block", "SECRET": "block"})
    messages = [user(f"my email is {EMAIL}"), user(f"card {CARD}, key {AWS_KEY}")]
    with pytest.raises(PolicyBlocked) as info:
        r.redact_messages(messages)
    message = str(info.value)
    assert "CARD" in message and "SECRET" in message
    for value in (CARD, CARD.replace(" ", ""), AWS_KEY, EMAIL, "4111"):
        assert value not in message
    assert info.value.error_class == "pii_blocked"
    with pytest.raises(PolicyBlocked):
        r.redact_text(CARD)


def test_off_leaves_the_entity_alone() -> None:
    text, findings = redactor(entities={"EMAIL": "off"}).redact_text(f"{EMAIL} {PHONE}")
    assert text == f"{EMAIL} [PHONE_1]"
    assert [f.entity for f in findings] == ["PHONE"]


def test_entities_missing_from_a_policy_are_masked() -> None:
    text, _ = redactor(entities={"EMAIL": "block"}).redact_text(PHONE)
    assert text == "[PHONE_1]"


# -- restore, numbering, collisions ------------------------------------------------------


def test_restore_round_trips_the_model_echo() -> None:
    red = redactor().redact_messages([user(PII_TEXT)])
    echoed = f"Sure. You wrote: {red.messages[0]['content']}"
    assert red.restore(echoed) == f"Sure. You wrote: {PII_TEXT}"
    assert red.total == 7
    assert set(red.mapping.values()) >= {EMAIL, PHONE, CARD, IBAN, AWS_KEY}


def test_same_value_same_placeholder_across_messages() -> None:
    other = "tom.nguyen@startup.ai"
    red = redactor().redact_messages(
        [
            {"role": "system", "content": f"Escalate to {other}."},
            user(f"I am {EMAIL}"),
            {"role": "assistant", "content": f"Noted, {EMAIL}. Cc {other}?"},
            user(f"Yes, and {EMAIL.upper()} is fine too"),
        ]
    )
    contents = [m["content"] for m in red.messages]
    assert contents == [
        "Escalate to [EMAIL_1].",
        "I am [EMAIL_2]",
        "Noted, [EMAIL_2]. Cc [EMAIL_1]?",
        "Yes, and [EMAIL_2] is fine too",
    ]
    assert red.mapping == {"[EMAIL_1]": other, "[EMAIL_2]": EMAIL}
    assert red.counts == {"EMAIL": 5}


def test_same_phone_in_two_formats_shares_a_placeholder() -> None:
    text, _ = redactor().redact_text("+44 20 7946 0958 or 020 7946 0958")
    assert text == "[PHONE_1] or [PHONE_1]"


def test_placeholders_do_not_collide_with_text_already_in_the_input() -> None:
    messages = [
        user("Template: Dear [EMAIL_1], your code is [PHONE_2]."),
        user(f"Fill it for {EMAIL}, phone {PHONE}, cc [EMAIL_2]."),
    ]
    red = redactor().redact_messages(messages)
    assert red.messages[0]["content"] == messages[0]["content"]
    assert red.messages[1]["content"] == "Fill it for [EMAIL_3], phone [PHONE_1], cc [EMAIL_2]."
    assert red.mapping == {"[EMAIL_3]": EMAIL, "[PHONE_1]": PHONE}
    answer = "Dear [EMAIL_1] -> Dear [EMAIL_3], code [PHONE_2], phone [PHONE_1]"
    assert red.restore(answer) == f"Dear [EMAIL_1] -> Dear {EMAIL}, code [PHONE_2], phone {PHONE}"


def test_messages_are_not_mutated_and_untouched_ones_are_shared() -> None:
    messages = [{"role": "system", "content": "Be brief."}, user(f"mail {EMAIL}")]
    before = copy.deepcopy(messages)
    red = redactor().redact_messages(messages)
    assert messages == before
    assert red.messages[0] is messages[0]
    assert red.messages[1] is not messages[1]


def test_no_pii_returns_the_messages_unchanged() -> None:
    messages = [user("Summarize ORD-2024-001234, shipped 2024-03-15, v1.2.3, $1,299.00")]
    red = redactor().redact_messages(messages)
    assert red.messages == messages and red.mapping == {} and red.total == 0


def test_disabled_policy_is_a_no_op() -> None:
    r = redactor(enabled=False, entities={"EMAIL": "block"})
    red = r.redact_messages([user(PII_TEXT)])
    assert red.messages[0]["content"] == PII_TEXT
    assert red.total == 0 and red.mapping == {} and red.restore("[EMAIL_1]") == "[EMAIL_1]"
    assert r.redact_text(PII_TEXT) == (PII_TEXT, [])


def test_values_stay_out_of_reprs() -> None:
    red = redactor().redact_messages([user(EMAIL)])
    _, findings = redactor().redact_text(EMAIL)
    assert EMAIL not in repr(red) and EMAIL not in repr(findings)
    assert KEY not in repr(RedactionPolicy(hash_key=KEY))


# -- message shapes ----------------------------------------------------------------------


def test_content_parts_redact_text_parts_only() -> None:
    image: dict[str, Any] = {
        "type": "image_url",
        "image_url": {"url": f"https://x.test/{EMAIL}.png"},
    }
    message = user([{"type": "text", "text": f"who is {EMAIL}?"}, image])
    red = redactor().redact_messages([message])
    parts = red.messages[0]["content"]
    assert parts[0] == {"type": "text", "text": "who is [EMAIL_1]?"}
    assert parts[1] is image
    assert message["content"][0]["text"] == f"who is {EMAIL}?"  # original untouched


def test_tool_call_arguments_are_redacted() -> None:
    call: dict[str, Any] = {"id": "c1", "type": "function", "function": {"name": "send"}}
    call["function"]["arguments"] = f'{{"to": "{EMAIL}", "body": "hi"}}'
    messages: list[dict[str, Any]] = [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": f"sent to {EMAIL}"},
    ]
    red = redactor().redact_messages(messages)
    assert red.messages[0]["tool_calls"][0]["function"]["arguments"] == (
        '{"to": "[EMAIL_1]", "body": "hi"}'
    )
    assert red.messages[1]["content"] == "sent to [EMAIL_1]"
    assert EMAIL in call["function"]["arguments"]


# -- custom patterns ---------------------------------------------------------------------


def test_custom_pattern_masks_with_its_own_label() -> None:
    r = redactor(custom=[{"name": "EMPLOYEE_ID", "pattern": r"\bEMP-\d{6}\b"}])
    red = r.redact_messages([user("EMP-004211 and EMP-004211 and EMP-000007")])
    assert red.messages[0]["content"] == "[EMPLOYEE_ID_1] and [EMPLOYEE_ID_1] and [EMPLOYEE_ID_2]"
    assert red.counts == {"EMPLOYEE_ID": 3}
    assert red.restore("[EMPLOYEE_ID_2]") == "EMP-000007"


def test_custom_pattern_value_group_keeps_the_label_text() -> None:
    r = redactor(custom=[{"name": "CASE_REF", "pattern": r"case ref:\s*(?P<value>\w+)"}])
    assert r.redact_text("case ref: AB12XY")[0] == "case ref: [CASE_REF_1]"


def test_custom_pattern_can_block() -> None:
    r = redactor(custom=[{"name": "PROJECT", "pattern": "(?i)project bluebird", "mode": "block"}])
    with pytest.raises(PolicyBlocked, match="PROJECT"):
        r.redact_messages([user("status of Project Bluebird?")])


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ({"name": "EMP", "pattern": "(unclosed"}, "invalid regular expression"),
        ({"name": "EMP", "pattern": "x*"}, "empty string"),
        ({"name": "emp_id", "pattern": "x"}, "UPPER_SNAKE"),
        ({"name": "EMAIL", "pattern": "x"}, "built-in"),
    ],
)
def test_custom_patterns_are_validated(pattern: dict[str, str], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        CustomPattern.model_validate(pattern)


# -- policy ------------------------------------------------------------------------------


def test_policy_rejects_unknown_entities_and_regions() -> None:
    with pytest.raises(ValidationError, match="unknown entities"):
        RedactionPolicy(entities={"EMAILS": EntityMode.MASK})
    with pytest.raises(ValidationError, match="unknown phone regions"):
        RedactionPolicy(phone_regions=("XX",))
    with pytest.raises(ValidationError, match="unique"):
        RedactionPolicy(custom=[CustomPattern(name="A", pattern="a")] * 2)
    with pytest.raises(ValidationError):
        RedactionPolicy.model_validate({"entites": {}})  # extra="forbid": typos fail loudly


def test_merge_applies_only_what_the_override_sets() -> None:
    base = RedactionPolicy(
        entities={"EMAIL": EntityMode.HASH},
        hash_key=KEY,
        custom=[CustomPattern(name="EMP", pattern=r"EMP-\d+")],
    )
    merged = base.merged(
        {"entities": {"card": "block"}, "custom": [{"name": "TICKET", "pattern": r"T-\d+"}]}
    )
    assert merged.mode_for("EMAIL") is EntityMode.HASH  # kept from base
    assert merged.mode_for("CARD") is EntityMode.BLOCK
    assert merged.mode_for("PHONE") is EntityMode.MASK
    assert [c.name for c in merged.custom] == ["EMP", "TICKET"]
    assert merged.hash_key == KEY and merged.enabled

    # An instance override counts only its explicitly set fields.
    off = merged.merged(RedactionPolicy(entities={"EMAIL": EntityMode.OFF}))
    assert off.mode_for("EMAIL") is EntityMode.OFF and off.mode_for("CARD") is EntityMode.BLOCK
    # A custom pattern is replaced by name, e.g. switched off for one feature.
    no_emp = merged.merged({"custom": [{"name": "EMP", "pattern": "x", "mode": "off"}]})
    assert no_emp.mode_for("EMP") is EntityMode.OFF
    assert Redactor(no_emp).redact_text("EMP-12 T-3")[0] == "EMP-12 [TICKET_1]"
    assert merged.merged(None) is merged
    assert merged.merged({"enabled": False}).enabled is False
    assert base.mode_for("CARD") is EntityMode.MASK  # frozen: merge never edits the base


# -- detection details -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "entity"),
    [
        ("(415) 555-0132", "PHONE"),
        ("+1-415-555-0132", "PHONE"),
        ("030 123456", "PHONE"),
        ("01 23 45 67 89", "PHONE"),
        ("020 7946 0958", "PHONE"),
        ("3782-822463-10005", "CARD"),
        ("GB82WEST12345698765432", "IBAN"),
        ("078-05-1121", "SSN"),
        ("2001:db8::8a2e:370:7334", "IP"),
        ("sk-proj-" + "a1B2" * 12, "SECRET"),
        ("sk-ant-api03-" + "x9" * 20, "SECRET"),
        ("github_pat_" + "A1" * 11 + "_" + "b2" * 30, "SECRET"),
        ("rk_live_" + "Z9" * 12, "SECRET"),
        (
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0In0."
            "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
            "SECRET",
        ),
    ],
)
def test_detects(text: str, entity: str) -> None:
    findings = redactor().detect(f"see {text} here")
    assert [(f.entity, f.value) for f in findings] == [(entity, text)]


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1112",  # fails Luhn
        "v1.2.3.4",
        "10.0.1.2.3",
        "1.2.3",
        "999.1.1.1",
        "eyJub3RhIjoiand0In0.eyJzdWIiOiIxIn0.c2ln",  # header without "alg"
        "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----",
        "DE89 3704 0044 0532 0130 01",  # bad check digits
    ],
)
def test_does_not_detect(text: str) -> None:
    assert redactor().detect(f"see {text} here") == []


@pytest.mark.parametrize(
    "ssn",
    [
        "000-12-3456",
        "666-12-3456",
        "912-34-5678",
        "123-00-4567",
        "123-45-0000",
        "078-05-1120",  # the Woolworth wallet number: never valid (and a valid German phone)
        "219-09-9999",  # printed on a Social Security card advertisement
    ],
)
def test_ssns_outside_the_issued_ranges_are_not_ssns(ssn: str) -> None:
    assert "SSN" not in {f.entity for f in redactor().detect(f"SSN: {ssn}")}


def test_phone_regions_decide_which_national_formats_count() -> None:
    text = "US (415) 555-0132, FR 01 23 45 67 89, intl +44 20 7946 0958"
    french = [f.value for f in redactor(phone_regions=["FR"]).detect(text)]
    assert french == ["01 23 45 67 89", "+44 20 7946 0958"]
    international_only = [f.value for f in redactor(phone_regions=[]).detect(text)]
    assert international_only == ["+44 20 7946 0958"]


def test_pem_private_key_spans_lines_through_end() -> None:
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAKC+/=\n-----END RSA PRIVATE KEY-----"
    text, findings = redactor().redact_text(f"key:\n{pem}\nthanks")
    assert text == "key:\n[SECRET_1]\nthanks"
    assert findings[0].kind == "private_key"


def test_aws_secret_key_only_when_labelled() -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    assert redactor().redact_text(f"aws_secret_access_key = {secret}")[0] == (
        "aws_secret_access_key = [SECRET_1]"
    )
    assert redactor().detect(f"blob {secret}") == []


def test_overlaps_keep_the_most_specific_entity() -> None:
    # An IBAN's digits are not also a card; a card is not also a phone; an e-mail whose
    # local part is a phone number is one e-mail.
    findings = redactor().detect(f"{IBAN} / 4111111111111111 / 4155550132@txt.att.net")
    assert [f.entity for f in findings] == ["IBAN", "CARD", "EMAIL"]


# -- streaming ---------------------------------------------------------------------------


def _stream(restorer: StreamRestorer, chunks: list[str]) -> str:
    return "".join(restorer.feed(c) for c in chunks) + restorer.flush()


def test_stream_restorer_handles_every_split_point() -> None:
    red = redactor().redact_messages([user(f"{EMAIL} {PHONE} [EMAIL_9] {CARD}")])
    answer = (
        "Write to [EMAIL_1] or call [PHONE_1]; [EMAIL_9] is yours; [CARD_1][EMAIL_1]. "
        "Brackets [ stay [EM and [EMAIL_ too, and [EMAIL_1"
    )
    expected = red.restore(answer)
    assert EMAIL in expected and "[EMAIL_9]" in expected and expected.endswith("[EMAIL_1")
    for i in range(len(answer) + 1):
        assert _stream(red.stream_restorer(), [answer[:i], answer[i:]]) == expected, i
    for i in range(len(answer)):
        for j in range(i, len(answer) + 1):
            parts = [answer[:i], answer[i:j], answer[j:]]
            assert _stream(red.stream_restorer(), parts) == expected, (i, j)
    rng = random.Random(7)
    for _ in range(300):
        cuts = sorted(rng.sample(range(len(answer) + 1), rng.randint(1, 12)))
        chunks = [answer[a:b] for a, b in zip([0, *cuts], [*cuts, len(answer)], strict=True)]
        assert _stream(red.stream_restorer(), chunks) == expected, cuts


def test_stream_restorer_emits_as_soon_as_text_cannot_be_a_placeholder() -> None:
    restorer = redactor().redact_messages([user(EMAIL)]).stream_restorer()
    assert restorer.feed("Hello [") == "Hello "
    assert restorer.feed("EMAIL_") == ""
    assert restorer.feed("1] and [x") == f"{EMAIL} and [x"
    assert restorer.feed("") == ""
    assert restorer.flush() == ""


def test_stream_restorer_without_placeholders_passes_chunks_through() -> None:
    restorer = redactor().redact_messages([user("nothing here")]).stream_restorer()
    assert restorer.feed("[EMAIL_") == "[EMAIL_"
    assert restorer.flush() == ""
