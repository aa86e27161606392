"""Quality metrics on real Enron mail: money detection, grounding, sampling, judge, drift."""

from __future__ import annotations

import email
import email.policy
import hashlib
import random
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emailwb.errors import ConfigError
from emailwb.quality.measures import (
    JUDGE_SCHEMA,
    DriftDetector,
    amounts_missed,
    deep_check_sample,
    find_money,
    grounding,
    judge_json_schema,
    judge_messages,
    metrics_for,
    sample_keys,
)


def _enron(enron_dir: Path, rel: str) -> tuple[str, email.message.EmailMessage]:
    """Header lines plus the text body of one real message (stdlib parser)."""
    msg = email.message_from_bytes((enron_dir / rel).read_bytes(), policy=email.policy.default)
    head = "".join(
        f"{h}: {msg[h]}\n" for h in ("From", "To", "Subject", "Date", "X-From", "X-To") if msg[h]
    )
    return head + "\n" + msg.get_body(("plain",)).get_content(), msg


# path -> (money mentions the detector must find, in order: (value, currency, unit);
#          strings in the same email that are NOT money: phone numbers, dates, times, counts)
REAL_MONEY = {
    "maildir/dean-c/inbox/34.eml": (
        [(1.5e9, "USD", ""), (250e6, "USD", ""), (500e6, "USD", "")],
        ["201-938-5392", "December 3, 2001", "06:52 PM"],
    ),
    "maildir/delainey-d/sent_items/52.eml": (
        [
            (-2e6, "USD", ""),
            (1.73, "CAD", "GJ"),
            (2.40, "USD", ""),
            (-4.5e6, "USD", ""),
            (28.0, "CAD", "MWh"),
            (40.0, "USD", ""),
            (41.33, "CAD", "MWh"),
            (48.0, "USD", ""),
            (-9e6, "USD", ""),
            (14e6, "USD", ""),
            (2.5e6, "USD", ""),
        ],
        [
            "403-663-2832",
            "403-663-2899",
            "5:42 PM",
            "Sept 30, 2009",
            "7.5 M note",
            "(2,500,000)",
            "18MWh",
        ],
    ),
    "maildir/delainey-d/_sent_mail/69.eml": (
        [
            (v, "USD", "")
            for v in (
                278e3,
                462e3,
                135e3,
                214e3,
                50e3,
                77e3,
                46e3,
                25e3,
                7e3,
                40e3,
                778e3,
                278e3,
                100e6,
            )
        ],  # "$10,000,0000" (sic) read literally
        ["503-464-3820", "11/22/2000", "03:06 PM", "+12"],
    ),
    "maildir/blair-l/budget___2002/1.eml": (
        [(5130.0, "USD", ""), (285.0, "USD", "Hour"), (900.0, "USD", ""), (6030.0, "USD", "")],
        ["(713) 853-0438", "August 2002", "18 Hours"],
    ),
    "maildir/delainey-d/_sent_mail/153.eml": (
        [(11e6, "USD", ""), (1395e3, "USD", ""), (1350e3, "USD", ""), (1395e3, "USD", "")]
        + [
            (v, "USD", "")
            for v in (
                669600,
                604800,
                669600,
                648000,
                669600,
                648000,
                669600,
                669600,
                648000,
                669600,
                648000,
                669600,
            )
        ]
        + [(0.18, "USD", "MMBtu")],
        ["250,000 MMBtu/Day", "10/31/2000", "03:00 PM", "Oct-00"],
    ),
    "maildir/dasovich-j/magruder/1.eml": (
        [
            (0.10, "USD", ""),
            (30000.0, "USD", "month"),
            (0.10, "USD", ""),
            (400.0, "USD", "month"),
            (1000.0, "USD", "month"),
            (0.005, "USD", "dth"),
        ],
        ["300,000 dth", "page 1 of 1", "April \n2000"],
    ),
    "maildir/dean-c/inbox/442.eml": ([(29.0, "USD", "")], ["HE 9-17", "10/24", "8mw", "26 mw"]),
    "maildir/dean-c/inbox/292.eml": (
        [(44.0, "USD", "mwh"), (19.0, "USD", "mwh"), (22.0, "USD", "mwh"), (1000.0, "USD", "")],
        ["543-4181", "06:00", "330 MW", "October 18th", "8:43 AM"],
    ),
    "maildir/delainey-d/_sent_mail/546.eml": (
        [
            (v, "USD", "")
            for v in (
                1e6,
                9.086e6,
                12.899e6,
                45.35e6,
                41.112e6,
                4.161e6,
                11.5e6,
                -26.786e6,
                -279e3,
                27.5e6,
                10e6,
            )
        ],
        [],
    ),
    "maildir/delainey-d/_sent_mail/242.eml": (
        [
            (6.9e6, "USD", "year"),
            (153.0, "USD", "kwyear"),
            (6.9e6, "USD", "year"),
            (153.0, "USD", "kwyear"),
            (13.2e6, "USD", "year"),
            (137.0, "USD", "kwyear"),
            (10e6, "USD", "year"),
            (44.0, "USD", "kwyear"),
            (20.0, "USD", "MWh"),
            (20.0, "USD", ""),
            (20e6, "USD", ""),
        ],
        ["2,000 MW", "45MW", "10/04/2000", "07:16 PM", "500 \nhours"],
    ),
}


@pytest.mark.parametrize("rel", sorted(REAL_MONEY))
def test_money_detector_finds_the_amounts_in_real_enron_mail_and_nothing_else(enron_dir, rel):
    text, _ = _enron(enron_dir, rel)
    body = text.split("\n\n", 1)[1]
    expected, not_money = REAL_MONEY[rel]
    found = find_money(body)
    assert [(round(m.value, 6), m.currency, m.unit) for m in found] == [
        (round(v, 6), c, u) for v, c, u in expected
    ]
    for m in found:
        assert body[m.span[0] : m.span[1]] == m.text
    for decoy in not_money:
        start = body.find(decoy)
        if start < 0:
            continue  # a wrapped decoy; the exact list above already rules it out
        end = start + len(decoy)
        assert not [m.text for m in found if m.span[0] < end and start < m.span[1]], decoy


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$5 million", [5e6]),
        ("$5MM", [5e6]),
        ("$5mm", [5e6]),
        ("$2.5 billion", [2.5e9]),
        ("$300K", [3e5]),
        ("USD 1,000", [1000]),
        ("1,000 dollars", [1000]),
        ("US$ 12", [12]),
        ("EUR 3.5 bn", [3.5e9]),
        ("€200", [200]),
        ("£1,250.50", [1250.5]),
        ("$.5 million", [5e5]),
        ("5 cents", [0.05]),
        ("$0.05/MMBtu", [0.05]),
        ("-$5", [-5]),
        ("($1,200)", [-1200]),
        ("$(17) million", [-17e6]),
        ("$5-7 million", [5e6, 7e6]),
        ("$5 to $7 million", [5e6, 7e6]),
        ("$1\nbillion", [1e9]),
        ("Cdn$1.73/GJ", [1.73]),
        ("€1.000.000,50", [1000000.5]),
    ],
)
def test_money_formats(text, expected):
    assert [m.value for m in find_money(text)] == pytest.approx(expected)


@pytest.mark.parametrize(
    "text",
    [
        "call 713-853-4258 or (713) 853-0438",
        "on 12/13/2000 at 10:30 AM",
        "up 28% to 4.5 percent",
        "we sold 250,000 MMBtu/Day and 330 MW",
        "2001 plan: 57 heads, +12",
        "error $2A04 again",
        "in 2001 dollars",
        "meet Dec. 13, 2000",
        "ext. 3-5968",
    ],
)
def test_money_detector_ignores_phones_dates_times_percentages_counts(text):
    assert find_money(text) == []


@settings(max_examples=60, deadline=None)
@given(
    st.from_regex(
        r"\A(\(?\d{3}\)? ?\d{3}-\d{4}|\d{1,2}/\d{1,2}/\d{2,4}|\d{1,2}:\d{2}( [AP]M)?"
        r"|\d{1,3}(\.\d)?%|\d{1,6})\Z"
    )
)
def test_money_detector_never_fires_without_a_currency(text):
    assert find_money(f"see {text} today") == []


# --- grounding on a real email ----------------------------------------------------------
REAL = "maildir/delainey-d/sent_items/52.eml"
FAITHFUL = {
    "email_type": "deal",
    "priority": "high",
    "workflow": "bankruptcy exposure",
    "priority_reason": "bankruptcy filing tomorrow",
    "summary": "Positions of Owens Corning Canada before EESC bankruptcy.",
    "people": [
        {"name": "Don", "role": "", "email": ""},
        {"name": "Kitagawa, Kyle", "role": "", "email": ""},
        {"name": "Scott Campbell", "role": "Director", "email": ""},
        {"name": "Dave Delainey", "role": "", "email": ""},
        {"name": "Brian Gillis", "role": "", "email": ""},
    ],
    "organizations": ["Enron Energy Services Canada Corp.", "Owens Corning", "EES", "Quaker Oats"],
    "amounts": [
        {"value": -2000000, "currency": "USD", "context": "gas position"},
        {"value": 4.5e6, "currency": "USD", "context": "Alberta position"},
        {"value": "US$14 million", "currency": "USD", "context": "EES estimate"},
        {"value": 2500000.0, "currency": "USD", "context": "Ontario position"},
        {"value": 7.5e6, "currency": "CAD", "context": "note"},
    ],
    "dates": [
        {"date": "2009-09-30", "what": "sale until"},
        {"date": "April 2005", "what": ""},
        {"date": "1/1/2003", "what": ""},
        {"date": "December 13, 2001", "what": "sent"},
        {"date": "Thursday", "what": ""},
    ],
    "deal_refs": ["EDCC"],
    "action_items": [{"task": "list positions", "owner": "Don", "due": ""}],
    "business_value": {
        "level": "high",
        "evidence": "ECC is going to take a big bath on its 7.5 M note",
    },
    "sentiment": "negative",
    "confidence": 0.8,
}


def test_grounding_accepts_a_faithful_extraction_of_a_real_email(enron_dir):
    text, _ = _enron(enron_dir, REAL)
    g = grounding(FAITHFUL, text)
    assert g.ungrounded == {}
    assert g.score == 1.0
    assert g.fields["evidence"].grounded and g.fields["deal_refs"].grounded


def test_grounding_flags_a_planted_invented_amount_and_person(enron_dir):
    text, _ = _enron(enron_dir, REAL)
    planted = dict(FAITHFUL)
    planted["people"] = [
        *FAITHFUL["people"],
        {"name": "Margaret Thornbury", "role": "CFO", "email": ""},
    ]
    planted["amounts"] = [
        *FAITHFUL["amounts"],
        {"value": 3750000, "currency": "USD", "context": "fee"},
    ]
    g = grounding(planted, text)
    assert g.fields["people"].ungrounded == ["Margaret Thornbury"]
    assert g.fields["people"].ungrounded_index == [5]
    assert g.fields["amounts"].ungrounded == ["3,750,000 USD"]
    assert g.fields["organizations"].ungrounded == [] and g.fields["dates"].ungrounded == []
    assert g.score == pytest.approx(19 / 21)  # 6 people, 4 organizations, 6 amounts, 5 dates
    m = metrics_for(planted, text, schema_valid=True, truncated=False)
    assert (m.ungrounded_people, m.ungrounded_amounts, m.ungrounded_total) == (1, 1, 2)


def test_grounding_is_tolerant_to_formats(enron_dir):
    text, _ = _enron(enron_dir, "maildir/dean-c/inbox/34.eml")
    result = {
        "people": [
            {"name": "Bienenstock, Martin"},
            {"name": "Kathy Chu"},
            {"name": "Martin Smithers"},
            {"name": "", "email": "nobody@example.com"},
        ],
        "organizations": [
            "ENRON CORP",
            "J.P. Morgan Chase & Co",
            "Citigroup",
            "Dow Jones & Company",
        ],
        "amounts": [
            {"value": 1500000000},
            {"value": "$1.5 billion"},
            {"value": "250 million"},
            {"value": 500e6},
            {"value": "1.5MM"},
        ],
        "dates": [
            {"date": d}
            for d in (
                "12/03/2001",
                "Dec 3",
                "December 3, 2001",
                "2001-12-03",
                "Monday",
                "2001-12-10",
                "within weeks",
            )
        ],
    }
    g = grounding(result, text)
    assert g.fields["people"].grounded == ["Bienenstock, Martin", "Kathy Chu", "Martin Smithers"]
    assert g.fields["people"].partial == ["Martin Smithers"]  # first name only
    assert g.fields["people"].ungrounded == ["nobody@example.com"]
    assert g.fields["organizations"].ungrounded == []
    assert g.fields["amounts"].ungrounded == ["1,500,000"]  # 1.5MM is not in this email
    assert g.fields["dates"].ungrounded == ["2001-12-10"]


def test_relative_dates_ground_resolved_dates_only_with_the_sent_date():
    text = "From: Tim Belden\n\nLet's meet tomorrow, and again next week on Friday.\nTim"
    sent = datetime(2000, 12, 13, 9, 0)  # a Wednesday
    result = {
        "dates": [
            {"date": "tomorrow"},
            {"date": "next week"},
            {"date": "2000-12-14"},
            {"date": "Dec 15, 2000"},
            {"date": "2000-12-19"},
            {"date": "2001-01-05"},
        ]
    }
    with_sent = grounding(result, text, sent=sent).fields["dates"]
    assert with_sent.ungrounded == ["2001-01-05"]
    assert grounding(result, text).fields["dates"].grounded == ["tomorrow", "next week"]


def test_amounts_missed_lists_money_the_result_left_out(enron_dir):
    text, _ = _enron(enron_dir, "maildir/dean-c/inbox/34.eml")
    missed = amounts_missed({"amounts": [{"value": 1.5e9, "currency": "USD"}]}, text)
    assert [m.text for m in missed] == ["$250 million", "$500 million"]
    assert (
        amounts_missed({"amounts": [{"value": 1.5e9}, {"value": 2.5e8}, {"value": 5e8}]}, text)
        == []
    )


def test_metrics_for_a_missing_result_and_rule_agreement(enron_dir):
    text, _ = _enron(enron_dir, "maildir/dean-c/inbox/34.eml")
    none = metrics_for(
        None, text, raw="not json", schema_valid=False, truncated=True, rule_type="deal"
    )
    row = none.as_dict()
    assert row["schema_valid"] is False and row["truncated"] is True
    assert row["completeness"] == 0.0 and row["response_chars"] == 8
    assert row["grounding"] is None and row["amounts_missed"] == 3 and row["type_agrees"] is None
    full = metrics_for(
        FAITHFUL, text, schema_valid=True, truncated=False, rule_type="Deal", rule_priority="medium"
    ).as_dict()
    assert full["type_agrees"] is True and full["priority_agrees"] is False
    assert full["completeness"] == 1.0
    assert all(isinstance(v, (bool, int, float, type(None))) for v in full.values())


# --- deep-check sampling ----------------------------------------------------------------
def test_every_100th_sampler_is_order_free_and_about_one_percent(enron_dir):
    manifest = (enron_dir / "MANIFEST.tsv").read_text().splitlines()[1:]
    keys = [line.split("\t")[4] for line in manifest]  # real content hashes
    keys += [hashlib.sha256(f"synthetic {i}".encode()).hexdigest() for i in range(20000)]
    shuffled = keys[:]
    random.Random(7).shuffle(shuffled)
    first, second = sample_keys(keys), sample_keys(shuffled)
    assert set(first) == set(second)
    assert 0.008 < len(set(first)) / len(set(keys)) < 0.012
    assert len(sample_keys(keys[:500], every=1)) == len(set(keys[:500]))
    assert set(sample_keys(keys, salt="b")) != set(first)
    with pytest.raises(ConfigError):
        deep_check_sample("x", every=0)


# sha256(salt + key) read as a big-endian integer from its first 8 bytes, mod 10 == 0, for
# key i = sha256("synthetic i").hexdigest(), i < 200: worked out once, outside emailwb
EVERY_10TH = [
    18,
    25,
    36,
    37,
    38,
    51,
    59,
    66,
    69,
    78,
    96,
    100,
    111,
    116,
    123,
    125,
    140,
    144,
    166,
    169,
]
EVERY_10TH_SALT_B = [
    7,
    42,
    46,
    50,
    68,
    84,
    86,
    93,
    108,
    117,
    131,
    156,
    158,
    166,
    167,
    175,
    176,
    181,
    185,
    191,
    194,
]


def test_every_10th_sampler_picks_the_keys_whose_hash_is_0_mod_10_each_once_in_order():
    keys = [hashlib.sha256(f"synthetic {i}".encode()).hexdigest() for i in range(200)]
    assert sample_keys(keys, every=10) == [keys[i] for i in EVERY_10TH]
    assert sample_keys(keys, every=10, salt="b") == [keys[i] for i in EVERY_10TH_SALT_B]
    assert [i for i, k in enumerate(keys) if deep_check_sample(k, 10)] == EVERY_10TH
    # repeats are sampled once, where they first appear; the order given is kept
    backwards = keys[::-1] + keys
    assert sample_keys(backwards, every=10) == [keys[i] for i in reversed(EVERY_10TH)]
    assert sample_keys(keys, every=100) == [keys[38]]


# --- judge ------------------------------------------------------------------------------
def test_judge_messages_put_the_static_rubric_first():
    msgs = judge_messages("Subject: hi\n\nPay $5 by Friday.", {"email_type": "request"})
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[0]["content"] == judge_messages("other", {})[0]["content"]
    assert (
        "Pay $5 by Friday." in msgs[1]["content"]
        and '"email_type": "request"' in msgs[1]["content"]
    )
    verdict = JUDGE_SCHEMA.model_validate_json(
        '{"email_type": "Correct", "priority": "incorrect", "people": "unsure", "organizations":'
        ' "correct", "amounts": "wrong", "dates": "correct", "action_items": "correct",'
        ' "business_value": "correct", "overall": 4, "notes": "priority too high"}'
    )
    assert verdict.email_type == "correct" and verdict.amounts == "incorrect"
    schema = judge_json_schema()
    assert (
        set(schema["required"]) == set(JUDGE_SCHEMA.model_fields)
        and not schema["additionalProperties"]
    )
    with pytest.raises(ValueError):
        JUDGE_SCHEMA.model_validate({**verdict.model_dump(), "overall": 6})


# --- drift ------------------------------------------------------------------------------
def test_drift_detector_alerts_within_the_window_after_a_drop_and_not_before():
    det = DriftDetector(["grounding", "schema_valid"], baseline_size=50, window=50, threshold=0.15)
    alerts = [det.update({"grounding": 0.95, "schema_valid": True}) for _ in range(130)]
    assert alerts == [None] * 130
    drop_at = det.seen
    alert = None
    for _ in range(50):
        alert = det.update({"grounding": 0.2, "schema_valid": True, "other": 1})
        if alert:
            break
    assert alert is not None and alert.metric == "grounding"
    assert 0 < alert.seen - drop_at <= 50
    assert (alert.baseline, alert.baseline_n, alert.window_n) == (pytest.approx(0.95), 50, 50)
    assert alert.baseline - alert.current > 0.15 and "grounding" in alert.message
    assert det.update({"grounding": 0.2}) is None  # alerts once until reset
    det.reset()
    assert all(det.update({"grounding": 0.95}) is None for _ in range(100))


def test_drift_detector_relative_mode_lower_is_better_and_skips_none():
    det = DriftDetector(
        ["latency"],
        baseline_size=5,
        window=5,
        threshold=0.5,
        relative=True,
        lower_is_better=["latency"],
    )
    for _ in range(5):
        assert det.update({"latency": 2.0}) is None
    assert [det.update({"latency": None}) for _ in range(20)] == [None] * 20
    got = [det.update({"latency": 4.0}) for _ in range(5)]
    assert (
        got[:4] == [None] * 4 and got[4].metric == "latency" and got[4].change == pytest.approx(1.0)
    )
    with pytest.raises(ConfigError):
        DriftDetector(["x"], window=0)


def test_grounding_text_puts_header_names_where_grounding_finds_them():
    from emailwb.mail.message import Email
    from emailwb.quality.measures import grounding_text

    mail = Email(
        message_id="m1",
        date=datetime(2000, 12, 13),
        date_flag=None,
        sender="jeff.dasovich@enron.com",
        sender_name="Jeff Dasovich",
        to=["skean@enron.com"],
        subject="PG&E tariff",
        body="Steve, call me. Jeff",
    )
    text = grounding_text(mail)
    result = {
        "people": [{"name": "Jeff Dasovich"}, {"name": "Steven Kean"}],
        "organizations": ["Pacific Gas & Electric"],
        "dates": [{"date": "12/13/2000"}],
    }
    g = grounding(result, text)
    assert g.fields["people"].ungrounded == [] and g.fields["dates"].ungrounded == []
    assert g.fields["organizations"].ungrounded == ["Pacific Gas & Electric"]  # no alias table
