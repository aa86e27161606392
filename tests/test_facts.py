"""Facts first: extractors with spans on real Enron mail, plans that route fields, evidence.

The extractors are checked on real messages of the Enron dev set (the labeled dev split,
never the test split) with spans computed independently (``body.index`` of the text we
expect); plans are checked against real in-process servers that record what they were
sent; the floors and strict JSON against the behaviours a user meets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from qualitykit import ThreadedSim, config_for, make_mail, sim_run

from emailwb import cli
from emailwb.facts import extract_facts, get_plan, judge, place
from emailwb.facts.cache import FACTS_VERSION, analyse, ensure_facts, facts_for
from emailwb.facts.counted import blank_headers, counted_segments
from emailwb.facts.extract import DATE_RE
from emailwb.llm.schema import EmailAnalysis, output_json_schema, parse_reply, plan_model
from emailwb.mail.message import parse_email
from emailwb.quality.measures import DriftDetector, grounding_warning
from emailwb.quality.watch import QualityConfig
from emailwb.store.database import Store
from emailwb.testing.servers import SimServer

REPO = Path(__file__).resolve().parents[1]


def enron(enron_dir: Path, rel: str) -> Any:
    return parse_email((enron_dir / "maildir" / rel).read_bytes())


# --- extractors on real mail ---------------------------------------------------------------
def test_money_dates_and_a_signature_name_come_with_their_exact_spans(enron_dir: Path) -> None:
    email = enron(enron_dir, "dasovich-j/mba_program/1.eml")  # dev split
    facts = extract_facts(email)
    body = email.body.replace("\r\n", "\n")
    amounts = {f.text: (f.start, f.end, f.value) for f in facts.amounts}
    start = body.index("$159/night")
    assert amounts["$159/night"] == (start, start + len("$159/night"), 159.0)
    dates = {f.text: (f.start, f.source) for f in facts.dates}
    assert dates["Friday, October 27"] == (body.index("Friday, October 27"), "rule")
    people = {f.text: f.start for f in facts.people}
    assert people == {"Meg St. John": body.index("Meg St. John")}  # one entry, the fullest form
    for fact in (*facts.people, *facts.amounts, *facts.dates, *facts.organizations):
        assert body[fact.start : fact.end] == fact.text  # every span points at its text


def test_organizations_keep_the_fullest_form_and_drop_their_acronyms(enron_dir: Path) -> None:
    email = enron(enron_dir, "baughman-d/ect_admin/1.eml")  # dev split
    orgs = [f.text for f in extract_facts(email).organizations]
    assert "Enron Wholesale Services" in orgs and "EWS" not in orgs
    assert "Enron North America" in orgs and "ENA" not in orgs
    people = [f.text for f in extract_facts(email).people]
    assert "Don Miller" in people and "Don Miller - ENA" not in people


def test_names_in_header_lines_inside_the_body_are_not_people() -> None:
    text = (
        "Please call me about the Dynegy confirm.\n\nJohn Arnold\n\n"
        "---------------------- Forwarded by Sally Beck/HOU/ECT on 10/04/2000 09:12 AM\n"
        "From: Mary Smith\nTo: Bob Jones/HOU/ECT@ECT\ncc: Kim Ward\nSubject: confirm\n"
    )
    blanked = blank_headers(text)
    assert len(blanked) == len(text)  # offsets unchanged
    for name in ("Sally Beck", "Mary Smith", "Bob Jones", "Kim Ward"):
        assert name not in blanked
    assert "John Arnold" in blanked and "Dynegy" in blanked


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see you Tuesday, March 6 at 10:00 AM", ["Tuesday, March 6"]),
        ("the Friday 2/9/01 deadline", ["Friday 2/9/01"]),
        ("the course runs April 3 through 7.", ["April 3 through 7"]),
        ("prices for June 2001 and Nov 3,2000", ["June 2001", "Nov 3,2000"]),
        ("by tomorrow, next week or in March; 10:00 AM sharp; 2001 budget", []),
    ],
)
def test_dates_are_those_that_pin_a_day_or_a_month_with_a_year(
    text: str, expected: list[str]
) -> None:
    assert [m.group(0).rstrip(",. ") for m in DATE_RE.finditer(text)] == expected


def test_a_forward_counts_only_when_it_is_the_point(enron_dir: Path) -> None:
    # dev split: a one-line FYI over a forwarded message: the forward is the point
    fyi = enron(enron_dir, "delainey-d/_sent_mail/576.eml")
    assert "forwarded" in {s.part for s in counted_segments(fyi)}
    # a sender whose own text stands on its own: the forwarded chain is background
    own = enron(enron_dir, "delainey-d/_sent_mail/549.eml")
    assert "forwarded" not in {s.part for s in counted_segments(own)}


def test_the_judgment_rules_answer_in_the_labels_vocabulary(enron_dir: Path) -> None:
    j = judge(enron(enron_dir, "dasovich-j/mba_program/1.eml"))
    assert j.email_type in (
        "deal",
        "meeting",
        "report",
        "request",
        "announcement",
        "personal",
        "other",
    )
    assert j.priority in ("low", "medium", "high", "urgent")
    assert j.has_action_item is True  # "please return your preferences by Friday"


# --- evidence ---------------------------------------------------------------------------------
def test_a_generic_offer_of_help_is_not_an_ask(enron_dir: Path) -> None:
    """The guide: "call me with any questions" offers are no action item; a real ask is."""
    from emailwb.facts.asks import without_offers

    bulletin = parse_email((enron_dir / "maildir/baughman-d/so2___nox/1.eml").read_bytes())
    assert "Please give us a call if you have any" in bulletin.body
    assert judge(bulletin).has_action_item is False  # a price bulletin's courtesy line
    text = "Please send me the Q3 numbers.  Call me at x3-4771 if you have any questions."
    kept = without_offers(text)
    assert len(kept) == len(text) and "Please send me the Q3 numbers." in kept
    assert "questions" not in kept and "x3-4771" not in kept  # the offer sentence is blanked
    # offers where a text or a line starts are blanked too; the rest of the line stays
    lines = "If you have any questions, call me.  Thanks\nJeff\nCall Ann with any questions"
    assert without_offers(lines).split() == ["Thanks", "Jeff"]
    email = parse_email(b"From: a@enron.com\nTo: b@enron.com\nSubject: Q3\n\n" + text.encode())
    assert judge(email).has_action_item is True  # the ask before it still counts


def test_placing_a_value_finds_it_exactly_fuzzily_or_not_at_all() -> None:
    text = "Please send the\nconfirmation to Jane Q.  Smith at Enron North America today."
    exact = place("jane q. smith", text)
    assert exact["match"] == "exact" and text[exact["start"] : exact["end"]] == "Jane Q.  Smith"
    fuzzy = place("Enron North Amerika", text)
    assert (
        fuzzy["match"] == "fuzzy"
        and "Enron North America" in text[fuzzy["start"] - 2 : fuzzy["end"] + 2]
    )
    assert place("Zaphod Beeblebrox", text)["match"] == "unplaced"


# --- plans route fields -------------------------------------------------------------------------
def test_a_plan_that_gives_the_model_one_field_sends_a_one_field_schema() -> None:
    plan = get_plan("default")
    assert plan.llm_fields == ("summary",)
    schema = output_json_schema(fields=plan.llm_fields)
    assert list(schema["properties"]) == ["summary"]
    full = output_json_schema()
    assert len(full["properties"]) == len(EmailAnalysis.model_fields) > 10
    assert len(json.dumps(schema)) * 10 < len(json.dumps(full))


async def test_runs_send_each_plan_its_own_schema_and_record_the_plan(store: Any) -> None:
    make_mail(store, 4)
    quiet = QualityConfig(judge=False)  # only the runs' own requests reach the server
    async with SimServer(kind="ollama") as srv:
        _, s_default = await sim_run(
            store, srv, "plan-default", quality=quiet, config=config_for(srv, plan="default")
        )
        sent_default = [r.body["format"] for r in srv.chat_requests]
        n = len(srv.chat_requests)
        _, s_llm = await sim_run(
            store, srv, "plan-llm", quality=quiet, config=config_for(srv, plan="llm")
        )
        sent_llm = [r.body["format"] for r in srv.chat_requests[n:]]
    assert s_default.done == s_llm.done == 4
    assert all(list(f["properties"]) == ["summary"] for f in sent_default)
    assert all(len(f["properties"]) == len(EmailAnalysis.model_fields) for f in sent_llm)
    row = store.query_one(
        "SELECT data FROM results r JOIN runs u ON u.id = r.run_id "
        "WHERE u.name = 'plan-default' LIMIT 1"
    )
    data = json.loads(row[0])
    assert data["plan"] == "default" and data["sources"]["people"] == "facts"
    assert data["sources"]["summary"] == "llm" and data["summary"]  # the model's summary
    assert s_default.config["plan"] == "default"
    assert s_default.config["plan_sources"]["llm_fields"] == ["summary"]


async def test_a_choice_field_can_only_hold_an_extracted_candidate(store: Any) -> None:
    make_mail(store, 3)

    def answer(body: dict[str, Any]) -> str:  # a server that ignores the enum it was sent
        enum = body["format"]["properties"]["people"]["items"].get("enum", [])
        return json.dumps(
            {
                "people": [*enum[:1], "Zaphod Beeblebrox"],
                "organizations": [],
                "dates": [],
                "email_type": "deal",
                "priority": "high",
                "summary": "s",
                "action_items": [],
            }
        )

    async with SimServer(kind="ollama", answer=answer) as srv:
        _, summary = await sim_run(
            store,
            srv,
            "choice",
            quality=QualityConfig(judge=False),
            config=config_for(srv, plan="choice"),
        )
        sent = srv.chat_requests[0].body["format"]["properties"]["people"]
    assert summary.done == 3
    for (raw,) in store.query(
        "SELECT data FROM results r JOIN runs u ON u.id = r.run_id WHERE u.name = 'choice'"
    ):
        data = json.loads(raw)
        names = [p["name"] for p in data["people"]]
        assert "Zaphod Beeblebrox" not in names
        assert data["refused"]["people"] == ["Zaphod Beeblebrox"]
        assert all(e["match"] == "exact" for e in data["evidence"]["people"])
    assert sent["items"].get("enum") or sent.get("maxItems") == 0  # narrowed per email


def test_the_facts_plan_starts_no_server_and_grounds_every_value(
    tmp_path: Path, capsys: Any
) -> None:
    db = tmp_path / "f.sqlite"
    rc = cli.main(
        ["run", str(REPO / "data" / "enron-sample"), "--db", str(db), "--plan", "facts", "--quiet"]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "completed: 151 done, 0 failed" in out
    assert "grounding: 100% of the extracted strings are in the emails (plan 'facts')" in out
    with Store(db) as store:
        kinds = {r[0] for r in store.query("SELECT model FROM results")}
        assert kinds == {"plan:facts"}  # no model answered anything
        n = store.scalar("SELECT COUNT(*) FROM facts WHERE version = ?", (FACTS_VERSION,))
        assert n == 151


def test_facts_are_computed_once_per_store(store: Any, enron_dir: Path) -> None:
    from emailwb.store.ingest import ingest

    ingest(store, [str(enron_dir / "maildir" / "dasovich-j" / "mba_program")], progress=False)
    store.flush()
    assert ensure_facts(store, processes=1) == 1
    assert ensure_facts(store, processes=1) == 0  # stored: nothing to redo
    (eid,) = store.query_one("SELECT id FROM emails")
    got = facts_for(store, [eid])[eid]
    assert got.text[got.facts.amounts[0].start : got.facts.amounts[0].end] == "$159/night"


# --- strict JSON and quality you cannot miss ---------------------------------------------------
def test_a_reply_with_a_non_finite_number_is_refused() -> None:
    with pytest.raises(ValueError, match="Infinity"):
        parse_reply('{"amounts": [{"value": Infinity, "currency": "USD", "context": ""}]}')
    with pytest.raises(ValueError, match="finite"):
        parse_reply('{"amounts": [{"value": 1e999, "currency": "USD", "context": ""}]}')
    model = plan_model(("summary",))
    assert parse_reply('{"summary": "ok"}', model).model_dump() == {"summary": "ok"}
    with pytest.raises(ValueError):  # a key the plan did not ask for
        parse_reply('{"summary": "ok", "people": []}', model)


def test_a_run_that_starts_below_the_grounding_floor_alerts() -> None:
    detector = DriftDetector(
        ["grounding"], baseline_size=5, window=5, threshold=0.15, floors={"grounding": 0.5}
    )
    alerts = [detector.update({"grounding": 0.2}) for _ in range(6)]
    fired = [a for a in alerts if a is not None]
    assert len(fired) == 1 and fired[0].floor  # no drop from a bad start, but below the floor
    assert "--plan default" in fired[0].message
    assert grounding_warning(0.31) is not None and "31%" in grounding_warning(0.31)
    assert grounding_warning(0.9) is None and grounding_warning(None) is None


def test_the_cli_warns_when_most_extracted_strings_are_invented(
    tmp_path: Path, capsys: Any
) -> None:
    def invented(body: dict[str, Any]) -> str:
        return EmailAnalysis(
            people=[{"name": "Zaphod Beeblebrox"}, {"name": "Ford Prefect"}],
            organizations=["Sirius Cybernetics"],
            dates=[{"date": "2009-08-31 14:07:56"}],
        ).model_dump_json()

    with ThreadedSim(answer=invented) as srv:
        rc = cli.main(
            [
                "run",
                str(REPO / "data" / "enron-sample"),
                "--db",
                str(tmp_path / "w.sqlite"),
                "--backend",
                "ollama",
                "--url",
                srv.url,
                "--model",
                srv.model,
                "--plan",
                "llm",
                "--limit",
                "12",
                "--quiet",
                "--no-judge",
            ]
        )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "WARNING: only 0% of the extracted strings are in the emails" in out
    assert "--plan default" in out


def test_analyse_gives_facts_and_judgment_for_a_batch(enron_dir: Path) -> None:
    emails = [
        enron(enron_dir, p) for p in ("dasovich-j/mba_program/1.eml", "baughman-d/ect_admin/1.eml")
    ]
    got = analyse(emails)
    assert len(got) == 2 and got[0].facts.amounts and not got[1].facts.amounts
    assert QualityConfig().floors == {"grounding": 0.5}


def test_the_money_detector_skips_only_texts_that_cannot_hold_money(
    enron_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The substring prefilter never changes what is found (checked on real Enron bodies)."""
    from emailwb.facts import money

    texts = [parse_email(p.read_bytes()).body for p in sorted(enron_dir.rglob("*.eml"))[::10]]
    texts += ["It cost 40 bucks.", "¥500", "Rs. 20", "5 pounds sterling", "12 cents", "no money"]

    def found(prefilter: bool) -> list[list[tuple[float, tuple[int, int]]]]:
        if not prefilter:  # "" is in every text: every pattern scans every text
            monkeypatch.setattr(money, "_PREFIX_TOKENS", ("",))
            monkeypatch.setattr(money, "_SUFFIX_TOKENS", ("",))
        out = []
        for text in texts:
            money._find_money.cache_clear()
            out.append([(m.value, m.span) for m in money.find_money(text)])
        monkeypatch.undo()
        return out

    fast, full = found(True), found(False)
    assert fast == full
    assert sum(bool(f) for f in full) > 50  # the sample does hold money
