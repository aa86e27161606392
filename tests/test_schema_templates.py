"""The output schema, the rule-based type detector and the prompt templates."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from emailwb.errors import ConfigError
from emailwb.llm import schema as schema_mod
from emailwb.llm.prompts import (
    COMMON_INSTRUCTIONS,
    TEMPLATES,
    USER_LEAD,
    build_messages,
    describe_templates,
    get_template,
)
from emailwb.llm.schema import (
    EMAIL_TYPES,
    SCHEMA_VERSION,
    SUMMARY,
    EmailAnalysis,
    output_json_schema,
    parse_reply,
    schema_hash,
)
from emailwb.mail import detect as det
from emailwb.mail.message import Email


@pytest.fixture(autouse=True)
def _fresh_detect_cache():
    # the detector caches by message id; tests reuse ids, so start each one empty
    det.clear_cache()
    yield
    det.clear_cache()


def mail(
    text: str = "Hello there, just checking in about the report.",
    *,
    subject: str = "Hi",
    sender: str = "jeff.skilling@enron.com",
    mid: str = "m1",
    **kw,
) -> Email:
    return Email(
        message_id=mid,
        date=datetime(2001, 5, 14, 16, 39, tzinfo=UTC),
        date_flag=None,
        sender=sender,
        sender_name="Jeff Skilling",
        to=["kenneth.lay@enron.com"],
        subject=subject,
        new_text=text,
        body=kw.pop("body", text),
        **kw,
    )


# --- schema -------------------------------------------------------------------------------
def walk(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def test_json_schema_is_inline_strict_and_compact():
    schema = output_json_schema()
    text = json.dumps(schema)
    assert "$ref" not in text and "$defs" not in text and '"title"' not in text
    for node in walk(schema):
        if node.get("type") == "object":
            assert node["additionalProperties"] is False
            assert set(node["required"]) == set(node["properties"])
    assert schema["properties"]["email_type"]["enum"] == list(EMAIL_TYPES)
    assert schema["properties"]["priority"]["enum"] == ["low", "medium", "high", "urgent"]
    assert next(iter(schema["properties"])) == "email_type"
    assert len(json.dumps(schema, separators=(",", ":"))) < 2500
    loose = json.dumps(output_json_schema(limits=False))
    assert "maxLength" not in loose and "maxItems" not in loose
    schema["properties"].clear()  # a fresh copy each call
    assert output_json_schema()["properties"]


def _sha16(version: str, schema: dict) -> str:
    """The hash worked out here: sha256 of the version, a newline and the compact JSON."""
    text = version + "\n" + json.dumps(schema, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_schema_hash_is_sha256_of_the_version_and_the_compact_json_schema():
    assert SCHEMA_VERSION == "1"
    assert schema_hash() == _sha16("1", output_json_schema())
    fields = ("email_type", "priority")
    narrowed = schema_hash(fields)
    assert narrowed == _sha16("1", output_json_schema(fields=fields))
    assert narrowed != schema_hash()  # another schema, another hash


def test_schema_hash_changes_with_the_version_and_with_the_schema(monkeypatch):
    before = schema_hash()
    fields = ("email_type", "people")
    as_objects, as_choices = schema_hash(fields), schema_hash(fields, ("people",))
    assert as_choices == _sha16("1", output_json_schema(fields=fields, choices=("people",)))
    assert len({before, as_objects, as_choices}) == 3  # people as objects, people as names
    monkeypatch.setattr(schema_mod, "SCHEMA_VERSION", "2")
    assert schema_hash() == _sha16("2", output_json_schema()) != before


def test_servers_are_given_confidence_as_values_their_grammar_can_enforce():
    # llama.cpp and Ollama turn minimum/maximum into grammar rules for integers only; a float
    # field needs an enum, else a small model writes 10000 and the reply is asked again
    for limits in (True, False):
        conf = output_json_schema(limits=limits)["properties"]["confidence"]
        assert conf["enum"] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    for value in output_json_schema()["properties"]["confidence"]["enum"]:
        assert parse_reply(f'{{"confidence": {value}}}').confidence == value
    assert list(output_json_schema()["properties"])[-1] == "confidence"  # written last


def test_defaults_and_partial_answers_validate():
    assert EmailAnalysis().model_dump()["email_type"] == "other"
    got = parse_reply('{"email_type": "meeting", "summary": "Lunch on Friday"}')
    assert got.email_type == "meeting" and got.people == [] and got.confidence == 0.5
    # a full default object round-trips through the schema the servers are given
    assert parse_reply(EmailAnalysis().model_dump_json()) == EmailAnalysis()


@pytest.mark.parametrize(
    ("reply", "field", "expected"),
    [
        ('{"email_type": " Deal/Trade "}', "email_type", "deal"),
        ('{"email_type": "Status Update"}', "email_type", "status_update"),
        ('{"email_type": "contract"}', "email_type", "legal"),
        ('{"priority": "URGENT"}', "priority", "urgent"),
        ('{"confidence": 85}', "confidence", 0.85),
        ('{"confidence": "0.4"}', "confidence", 0.4),
        (
            '{"amounts": [{"value": "$1,200.50", "currency": "USD", "context": "fee"}]}',
            "amounts",
            [{"value": 1200.5, "currency": "USD", "context": "fee"}],
        ),
        (
            '{"amounts": [{"value": "2.5 million"}]}',
            "amounts",
            [{"value": 2.5e6, "currency": "USD", "context": ""}],
        ),
    ],
)
def test_lenient_where_unambiguous(reply, field, expected):
    assert parse_reply(reply).model_dump()[field] == expected


def test_long_strings_and_lists_are_cut_to_their_limits():
    got = parse_reply(
        json.dumps({"summary": "word " * 500, "organizations": [f"Org {i}" for i in range(30)]})
    )
    org_limit = EmailAnalysis.model_fields["organizations"].metadata[-1].max_length
    assert len(got.summary) <= SUMMARY and len(got.organizations) == org_limit == 3


@pytest.mark.parametrize(
    "reply",
    [
        "{}",  # none of our keys: the server ignored the schema
        '{"type": "email", "text": "hello"}',
        '{"email_type": "meeting", "invented": 1}',
        '{"email_type": "invoice"}',
        '{"priority": 7}',
        '{"confidence": -3}',
        '{"people": [{"name": "A", "age": 4}]}',
        '["meeting"]',
        "Sure! Here is the JSON you asked for.",
        '{"email_type": "meeting", "summary": "cut',
    ],
)
def test_strict_where_the_schema_was_ignored(reply):
    with pytest.raises(ValueError):
        parse_reply(reply)


def test_fenced_json_is_unwrapped():
    assert parse_reply('```json\n{"email_type": "spam"}\n```').email_type == "spam"


def test_validation_errors_are_value_errors():
    # the schema guard in the backends relies on this
    with pytest.raises(ValidationError):
        parse_reply('{"priority": 7}')
    assert issubclass(ValidationError, ValueError)


# --- detector ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("subject", "text", "sender", "expected"),
    [
        (
            "Meeting tomorrow",
            "The agenda for the conference call is attached. Dial-in below.",
            "a@enron.com",
            "meeting",
        ),
        (
            "Quick question",
            "Can you please send me the latest numbers? Let me know.",
            "a@enron.com",
            "request",
        ),
        (
            "Deal 456789",
            "We sold 10,000 MMBtu to Dynegy at $4.25, counterparty confirmed.",
            "a@enron.com",
            "deal",
        ),
        (
            "Master agreement",
            "Attached is the redline of the ISDA master agreement; legal "
            "needs the termination clause reviewed.",
            "a@enron.com",
            "legal",
        ),
        (
            "FERC order",
            "FERC issued its order in the docket today; the CPUC tariff filing follows.",
            "a@enron.com",
            "regulatory",
        ),
        (
            "Energy news",
            "Top stories this week. To unsubscribe click here.",
            "newsletter@energycentral.com",
            "newsletter",
        ),
        ("You have won", "You have won the lottery! Act now, 100% free.", "x@spam.biz", "spam"),
        ("Hey", "Thanks for the birthday party, the kids loved it.", "a@enron.com", "personal"),
        ("Hmm", "Okay.", "a@enron.com", "other"),
    ],
)
def test_detect_text(subject, text, sender, expected):
    got = det.detect_text(subject, text, sender)
    assert got.email_type == expected
    assert 0.0 <= got.score <= 1.0


def test_urgency_raises_the_priority_hint():
    calm = det.detect_text("Contract", "Here is the agreement for your files.")
    urgent = det.detect_text("URGENT: contract", "We need the signed agreement today, ASAP.")
    assert urgent.score > calm.score
    assert urgent.priority_hint in ("high", "urgent")
    assert det.detect_text("News", "unsubscribe", "newsletter@x.com").priority_hint == "low"


def test_detect_is_cached_by_the_given_key():
    first = det.detect(mail("Can you please review the attached agreement?"), key="k1")
    # same key, different content: the cached answer comes back (the key IS the content id)
    again = det.detect(mail("You have won the lottery!"), key="k1")
    assert again == first
    assert det.cache_info()["hits"] == 1 and det.cache_info()["size"] == 1
    assert det.detect(mail("You have won the lottery! Act now"), key=None).email_type == "spam"
    assert det.cache_info()["size"] == 1


def test_priority_score_reorders_a_queue():
    queue = [("newsletter", 0.9), ("deal", 0.5), ("other", 0.6)]
    weights = {"deal": 3.0, "newsletter": 0.1}
    ranked = sorted(queue, key=lambda q: det.priority_score(q[0], q[1], weights), reverse=True)
    assert [q[0] for q in ranked] == ["deal", "other", "newsletter"]
    assert det.priority_score("other", 0.5, {"*": 2.0}) == 1.0
    with pytest.raises(ConfigError, match="negative"):
        det.priority_score("deal", 0.5, {"deal": -1})


# --- templates ------------------------------------------------------------------------------
def test_one_template_per_type_plus_default():
    assert set(TEMPLATES) == set(EMAIL_TYPES) | {"default"}
    hashes = {t["hash"] for t in describe_templates()}
    assert len(hashes) == len(TEMPLATES)
    assert get_template("deal") is TEMPLATES["deal"]
    with pytest.raises(ConfigError, match="unknown prompt template"):
        get_template("invoice")


def test_static_prefix_is_byte_identical_and_email_comes_last():
    a = build_messages(mail("Can you send the gas volumes for May?", mid="a"))
    b = build_messages(
        mail(
            "Could you send me the power curves please?",
            mid="b",
            subject="Curves",
            sender="someone.else@enron.com",
        )
    )
    assert a.template_name == b.template_name == "request"
    assert a.messages[0] == b.messages[0]  # system message identical
    assert a.messages[1]["content"].startswith(USER_LEAD)
    assert b.messages[1]["content"].startswith(USER_LEAD)
    assert a.messages[1]["content"].endswith("Can you send the gas volumes for May?")
    # across types, the shared instructions are the common prefix
    deal = build_messages(
        mail("We bought 5,000 MMBtu at $3.10 from Dynegy.", mid="d", subject="Deal 123456")
    )
    assert deal.template_name == "deal"
    assert deal.messages[0]["content"].startswith(COMMON_INSTRUCTIONS)
    assert a.messages[0]["content"].startswith(COMMON_INSTRUCTIONS)
    assert a.template_hash == TEMPLATES["request"].hash and a.template_version == "1"


def test_headers_are_in_the_prompt():
    user = build_messages(mail()).messages[1]["content"]
    assert "From: Jeff Skilling <jeff.skilling@enron.com>" in user
    assert "To: kenneth.lay@enron.com" in user
    assert "Date: 2001-05-14 16:39 UTC" in user and "Subject: Hi" in user


def test_truncation_is_recorded_never_silent():
    short = build_messages(mail("Short note."), token_budget=1500)
    assert not short.truncated and short.dropped_chars == 0
    long = build_messages(mail("All work and no play. " * 2000), token_budget=1500)
    assert long.truncated and long.dropped_chars > 0
    assert "characters cut to fit the prompt budget]" in long.messages[1]["content"]
    assert long.prompt_chars <= 1500 * 4 + 10
    assert long.prompt_chars == sum(len(m["content"]) for m in long.messages)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=20_000), budget=st.integers(min_value=800, max_value=4000)
)
def test_budget_property(n, budget):
    text = ("x" * 9 + " ") * (n // 10)
    p = build_messages(mail(text), token_budget=budget, template="default")
    assert p.prompt_chars <= budget * 4 + 10
    assert p.truncated == (p.dropped_chars > 0)
    if not p.truncated:
        assert text.strip() in p.messages[1]["content"]


def test_clean_vs_raw_mode():
    quoted = "-----Original Message-----\nFrom: Ken\nOld quoted text about pipelines."
    e = mail("Sounds good, go ahead.", body="Sounds good, go ahead.\n\n" + quoted, quoted=quoted)
    clean = build_messages(e, template="default")
    raw = build_messages(e, template="default", mode="raw")
    assert "Old quoted text" not in clean.messages[1]["content"]
    assert "Old quoted text" in raw.messages[1]["content"]
    assert clean.messages[0] == raw.messages[0]
    with pytest.raises(ConfigError, match="mode"):
        build_messages(e, mode="fancy")  # type: ignore[arg-type]


def test_forwarded_text_used_when_new_text_is_nearly_empty():
    e = mail("FYI", forwarded="The FERC hearing moved to June 3; filing due May 30.")
    p = build_messages(e)
    assert "Forwarded message:\nThe FERC hearing moved" in p.messages[1]["content"]
    assert p.notes and "forwarded" in p.notes[0]


def test_chain_mode_drops_the_oldest_first():
    chain = [
        mail(f"Message number {i}. " + "filler " * 300, mid=f"c{i}", subject=f"Re: plan {i}")
        for i in range(6)
    ]
    p = build_messages(chain, token_budget=2000)
    user = p.messages[1]["content"]
    assert p.truncated and p.chain_dropped > 0 and p.chain_len == 6 - p.chain_dropped
    assert p.chain_len >= 2
    assert "Message number 5." in user and "Message number 0." not in user
    assert user.index(f"[{7 - p.chain_len}/6]") < user.index("[6/6]")  # oldest kept first
    small = build_messages(chain[:2], token_budget=4000)
    assert not small.truncated and small.chain_len == 2
    with pytest.raises(ConfigError, match="empty chain"):
        build_messages([])
