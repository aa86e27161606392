"""Business intelligence per email: action items with who and when, money that adds up, and
nothing filled in that was not found.

Asks are checked on real messages of the Enron dev split with spans computed independently
(``body.index`` of the text we expect); money on real Enron snippets (repeats, unit prices,
negatives, cost tables, fractions); the honest record by running every shipped plan against
a real in-process server and reading the stored JSON, the export and the report.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from qualitykit import config_for, make_mail, sim_run

from emailwb.facts import extract_facts, judge
from emailwb.facts.asks import find_asks
from emailwb.facts.extract import Fact
from emailwb.facts.money import find_money
from emailwb.facts.plans import FIELDS, PLANS
from emailwb.facts.records import AMOUNT_STRUCT, ASK_STRUCT, money_rollup, results_frame
from emailwb.mail.message import Email, parse_email
from emailwb.quality.gold import ask_counts
from emailwb.quality.watch import QualityConfig
from emailwb.testing.servers import SimServer
from emailwb.ui.report import build_report


def enron(enron_dir: Path, rel: str) -> Any:
    return parse_email((enron_dir / "maildir" / rel).read_bytes())


def mail(text: str, to: tuple[str, ...] = ("kay.mann@enron.com",), subject: str = "s") -> Email:
    return Email(
        message_id="m@x",
        date=None,
        date_flag=None,
        sender="jeff.dasovich@enron.com",
        sender_name="Jeff Dasovich",
        to=list(to),
        subject=subject,
        body=text,
        new_text=text,
    )


# --- action items on real mail ---------------------------------------------------------------
def test_asks_carry_their_exact_span_who_is_asked_and_the_resolved_address(
    enron_dir: Path,
) -> None:
    email = enron(enron_dir, "dasovich-j/budget/1.eml")  # dev split
    body = email.body.replace("\r\n", "\n")
    asks = {a.text: a for a in extract_facts(email).action_items}
    tom = "please make sure that Tom receives an e-copy of hard copy of this \ne-mail and attachments."
    assert asks[tom].start == body.index(tom) and asks[tom].end == body.index(tom) + len(tom)
    (who,) = asks[tom].who
    assert who.name == "Marcie" and body[who.start : who.end] == "Marcie"
    assert who.address == "marcie.milner@enron.com"  # the one To address that matches
    call = "Call me \ntomorrow morning with any comments, etc."
    assert call in asks and asks[call].who == ()  # nobody named: whoever received it
    assert asks[call].as_item()["who"] == ["recipients"]
    for a in asks.values():
        assert body[a.start : a.end] == a.text


def test_a_due_date_in_the_ask_comes_from_the_date_extractor(enron_dir: Path) -> None:
    email = enron(enron_dir, "beck-s/piper__greg/1.eml")  # dev split
    body = email.body.replace("\r\n", "\n")
    (ask,) = extract_facts(email).action_items
    assert ask.text.startswith("Why don't you and Rahil agree on the draft ASAP")
    assert ask.due == "Friday" and body[ask.due_start : ask.due_end] == "Friday"
    assert ask.due_start > ask.start  # inside the sentence that asks


def test_offers_own_commitments_and_fyi_are_no_asks() -> None:
    text = (
        "Kay,\n\nI will send the revised term sheet tomorrow.\n"
        "Please call me at x3-4771 if you have any questions.\n\nJeff"
    )
    assert find_asks(mail(text)) == []
    assert find_asks(mail("FYI - the Q3 numbers are below.\n\nJeff")) == []
    ask = "Kay, please send me the revised term sheet by Friday 2/9/01."
    facts = extract_facts(mail(ask))
    (item,) = facts.action_items
    assert item.text == "please send me the revised term sheet by Friday 2/9/01."
    assert [w.name for w in item.who] == ["Kay"] and item.who[0].address == "kay.mann@enron.com"
    assert item.due == "Friday 2/9/01"


def test_mass_mail_keeps_duties_and_drops_optional_invitations() -> None:
    many = tuple(f"user{i}@enron.com" for i in range(40))
    invite = "You are invited to attend a brown bag lunch on derivatives. Please join us."
    assert find_asks(mail(invite, many)) == []
    duty = "All employees must complete the Code of Conduct certification by Friday."
    (item,) = find_asks(mail(duty, many))
    assert item.cue == "duty"


def test_has_action_item_is_the_list_in_every_plan(enron_dir: Path) -> None:
    for rel in ("dasovich-j/budget/1.eml", "delainey-d/all_documents/29.eml"):
        email = enron(enron_dir, rel)
        facts = extract_facts(email)
        assert judge(email, facts.action_items).has_action_item == bool(facts.action_items)
        assert judge(email).has_action_item == bool(facts.action_items)


def test_the_scorer_matches_asks_by_span_overlap_and_scores_who_and_due() -> None:
    text = "Kay, please send me the revised term sheet by Friday.\nThanks"
    label = {
        "action_items": [{"ask": "send me the revised term sheet", "who": ["Kay"], "due": "Friday"}]
    }
    start = text.index("please")
    pred = {
        "action_items": [
            {"ask": text[start:53], "start": start, "end": 53, "who": ["Kay"], "due": "Friday"}
        ]
    }
    assert ask_counts(pred, label, text) == (1, 0, 0, 1, 1)
    wrong_who = {"action_items": [{**pred["action_items"][0], "who": ["recipients"]}]}
    assert ask_counts(wrong_who, label, text) == (1, 0, 0, 0, 1)
    assert ask_counts({"action_items": []}, label, text) == (0, 0, 1, 0, 0)


# --- money ------------------------------------------------------------------------------------
def test_an_amount_said_three_times_is_one_amount_with_three_mentions() -> None:
    text = "The fee is $250. We paid $250 in May and $250 in June; power at $250/MWh."
    facts = extract_facts(mail(text))
    fee = [f for f in facts.amounts if f.unit == ""]
    assert len(fee) == 1 and fee[0].value == 250.0 and len(fee[0].mentions) == 3
    assert [text[s:e] for s, e in fee[0].mentions] == ["$250", "$250", "$250"]
    (price,) = [f for f in facts.amounts if f.unit]
    assert price.kind == "unit_price" and price.unit == "MWh"  # not the same amount as $250


def test_unit_prices_negatives_cost_tables_and_fractions_are_parsed(enron_dir: Path) -> None:
    email = enron(enron_dir, "dasovich-j/budget/1.eml")  # dev split: "$2,000/day", "$10,000/month"
    kinds = {f.text: (f.kind, f.unit) for f in extract_facts(email).amounts}
    assert kinds["$2,000/day"] == ("unit_price", "day") and kinds["$200,000"] == ("total", "")
    (neg,) = find_money("a mark-to-market loss of ($2,000,000) on the book")
    assert neg.value == -2_000_000 and neg.negative and neg.text == "($2,000,000)"
    table = "Cost summary\nLabor        12,500.00\nTravel        1,200.00\nTotal      $13,700.00\n"
    found = {m.text: (m.value, m.marked) for m in find_money(table)}
    assert found["12,500.00"] == (12_500.0, "table") and found["1,200.00"] == (1_200.0, "table")
    assert find_money("We flowed 12,500 MMBtu on Tuesday.") == []  # a volume, not money
    (share,) = find_money("ENE closed at 84 3/8 on Friday")
    assert share.value == 84.375 and share.unit == "share"
    (cents,) = find_money("a 50-cent rise")
    assert cents.value == 0.5 and cents.kind == "unit_price"


def test_the_money_rollup_adds_totals_apart_from_unit_prices() -> None:
    frame = pl.DataFrame(
        {
            "email_id": [1, 2],
            "message_id": ["a", "b"],
            "date": ["2001-02-09T10:00:00", "2001-02-20T10:00:00"],
            "data": [
                json.dumps(
                    {
                        "amounts": [
                            {
                                "value": 195000.0,
                                "currency": "USD",
                                "kind": "total",
                                "context": "$195,000",
                            },
                            {
                                "value": 250.0,
                                "currency": "USD",
                                "kind": "unit_price",
                                "unit": "MWh",
                                "context": "$250/MWh",
                            },
                        ],
                        "evidence": {
                            "amounts": [
                                {"text": "$195,000", "start": 40, "end": 48},
                                {"text": "$250/MWh", "start": 90, "end": 98},
                            ],
                            "organizations": [{"text": "Dynegy", "start": 20, "end": 26}],
                        },
                    }
                ),
                json.dumps(
                    {
                        "amounts": [
                            {
                                "value": 5000.0,
                                "currency": "USD",
                                "kind": "total",
                                "context": "$5,000",
                            }
                        ],
                        "evidence": {
                            "amounts": [{"text": "$5,000", "start": 3, "end": 9}],
                            "organizations": [{"text": "Dynegy", "start": 30, "end": 36}],
                        },
                    }
                ),
            ],
        }
    )
    rollup = money_rollup(frame)
    totals = rollup.filter(pl.col("kind") == "total").row(0, named=True)
    assert totals["organization"] == "Dynegy" and totals["month"] == "2001-02"
    assert totals["total"] == 200_000.0 and totals["emails"] == 2
    assert {s["message_id"] for s in totals["sources"]} == {"a", "b"}  # traceable
    price = rollup.filter(pl.col("kind") == "unit_price").row(0, named=True)
    assert price["total"] is None and price["low"] == price["high"] == 250.0


# --- the honest record --------------------------------------------------------------------------
async def test_no_shipped_plan_stores_a_value_for_a_field_it_does_not_produce(store: Any) -> None:
    make_mail(store, 2)
    async with SimServer(kind="ollama") as srv:
        for name, plan in PLANS.items():
            _, summary = await sim_run(
                store,
                srv,
                f"honest-{name}",
                quality=QualityConfig(judge=False),
                config=config_for(srv, plan=name),
            )
            assert summary.done == 2, name
            unrouted = [f for f in FIELDS if plan.source(f) == "none"]
            frame = results_frame(store, f"honest-{name}")
            assert frame.schema["action_items"] == pl.List(ASK_STRUCT)  # list columns, not JSON
            assert frame.schema["amounts"] == pl.List(AMOUNT_STRUCT)
            for raw in frame["data"].to_list():
                data = json.loads(raw)
                assert data["result_version"] == 2
                assert data["has_action_item"] == bool(data["action_items"]), name
                for f in unrouted:
                    assert data[f] is None, (name, f)  # stored JSON
            for f in unrouted:
                column = "business_value" if f == "business_value" else f
                if column in frame.columns:
                    assert frame[column].null_count() == frame.height, (name, f)  # export
            report = build_report(store, f"honest-{name}")
            html_rows = report.split("<tr>")
            for f in unrouted:  # the report's field table says so, field by field
                row = next(r for r in html_rows if r.startswith(f"<td>{f}</td>"))
                assert f"not produced by plan &#x27;{name}&#x27;" in row, (name, f)
    assert [f for f in FIELDS if PLANS["default"].source(f) == "none"]  # something to check
    assert "business_value" in [f for f in FIELDS if PLANS["default"].source(f) == "none"]


# --- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        "",  # no counted text
        "Region   Q1   Q2\nWest   1,200.00   1,350.00\nEast   980.00   1,010.00\n",  # a table
        "$5 " * 10_000,  # 10,000 amounts in one email
        "Caf\u00e9 cr\u00e8me \u20ac5 \u00a3 3 please send \u00fcber data by Friday? " * 20,
    ],
    ids=["empty", "table", "10k-amounts", "mixed-encodings"],
)
def test_bad_bodies_give_a_result_with_lists_in_bounded_time(body: str) -> None:
    t0 = time.perf_counter()
    facts = extract_facts(mail(body))
    assert time.perf_counter() - t0 < 20
    assert isinstance(facts.action_items, list) and isinstance(facts.amounts, list)
    assert len(facts.action_items) <= 25
    if body.startswith("$5 "):
        assert len(facts.amounts) == 1 and len(facts.amounts[0].mentions) == 10_000


def test_a_5mb_body_is_read_in_bounded_time() -> None:
    body = ("Please send me the file. The price is $30/MWh and $1,000 in total.\n\n" * 80_000)[
        :5_000_000
    ]
    t0 = time.perf_counter()
    asks = find_asks(mail(body), [Fact("dates", "Friday", 10, 16, "rule")])
    money = find_money(body)
    assert time.perf_counter() - t0 < 60
    assert len(asks) <= 25 and len({(m.value, m.unit) for m in money}) == 2
