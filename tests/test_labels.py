"""Scoring extractions against hand labels (emailwb.quality.gold and `emailwb score`).

Every expected number below is worked out by hand from the labeling guide's scoring rules.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from emailwb.cli import main
from emailwb.errors import ConfigError
from emailwb.quality.gold import (
    amount_values,
    load_labels,
    majority_baseline,
    match_counts,
    score,
    score_table,
    scores_as_dict,
    strings_match,
)


def label(mid: str, **kw):
    row = {
        "message_id": mid,
        "email_type": "other",
        "priority": "medium",
        "people": [],
        "organizations": [],
        "amounts": [],
        "dates": [],
        "has_action_item": False,
        "notes": "n",
    }
    row.update(kw)
    return row


# --- string matching --------------------------------------------------------------------
def test_strings_match_ignoring_case_and_punctuation():
    assert strings_match("JEFF SKILLING", "Jeff Skilling")
    assert strings_match("Enron Corp.", "enron corp")
    assert strings_match("O'Neal, Sarah", "o neal sarah")
    assert strings_match("Friday 2/9/01", "friday 2 9 01")
    assert not strings_match("Jeff Skilling", "Jeff Skillings")


def test_shorter_string_matches_inside_the_longer_only_at_word_boundaries():
    assert strings_match("Skilling", "Jeff Skilling")
    assert strings_match("Enron North America", "Enron")  # either side may be the shorter
    assert strings_match("the West Power Desk", "West Power")
    assert not strings_match("kill", "Jeff Skilling")  # inside a word
    assert not strings_match("Enro", "Enron Corp")


def test_a_substring_needs_at_least_three_characters_but_equality_does_not():
    assert not strings_match("EB", "EB Capital")
    assert strings_match("ENA", "ENA West desk")
    assert strings_match("BP", "bp")


def test_each_label_is_matched_at_most_once():
    # "Smith" takes the only label; "John Smith" then has nothing left: a false positive
    pred = {"people": [{"name": "Smith"}, {"name": "John Smith"}]}
    assert match_counts("people", pred, label("a", people=["John Smith"])) == (1, 1, 0)
    # one prediction cannot match two labels
    pred = {"people": ["Smith"]}
    assert match_counts("people", pred, label("a", people=["John Smith", "Jane Smith"])) == (
        1,
        0,
        1,
    )


def test_a_repeated_prediction_counts_once():
    pred = {"organizations": ["Enron", "ENRON", "enron."]}
    assert match_counts("organizations", pred, label("a", organizations=["Enron"])) == (1, 0, 0)
    pred = {"organizations": ["Dynegy", "dynegy"]}
    assert match_counts("organizations", pred, label("a")) == (0, 1, 0)


def test_dates_match_as_strings_from_dicts():
    pred = {"dates": [{"date": "Tuesday, March 6", "what": "meeting"}, {"date": "2001-03-06"}]}
    got = match_counts("dates", pred, label("a", dates=["March 6"]))
    assert got == (1, 1, 0)  # the ISO form is another string, not the written one


# --- amounts ------------------------------------------------------------------------------
def test_amounts_match_by_value_with_scale_words():
    assert match_counts(
        "amounts",
        {"amounts": [{"value": 5000000, "currency": "USD"}]},
        label("a", amounts=["$5MM"]),
    ) == (1, 0, 0)
    assert match_counts(
        "amounts", {"amounts": [{"value": 500000}]}, label("a", amounts=["$5MM"])
    ) == (0, 1, 1)


def test_amounts_match_within_one_percent():
    lab = label("a", amounts=["$40/MWh"])
    assert match_counts("amounts", {"amounts": [{"value": 40.2}]}, lab) == (1, 0, 0)  # 0.5% off
    assert match_counts("amounts", {"amounts": [{"value": 41}]}, lab) == (0, 1, 1)  # 2.5% off


def test_label_amounts_without_a_currency_parse_as_plain_numbers():
    assert amount_values("84 3/8") == {84.375}
    assert amount_values("50-cent") == {0.5}
    assert amount_values("12,500") == {12500.0}
    assert match_counts(
        "amounts",
        {"amounts": ["$12,500.00", {"value": 84.375}]},
        label("a", amounts=["84 3/8", "12,500"]),
    ) == (2, 0, 0)


def test_a_zero_amount_matches_only_zero():
    assert match_counts("amounts", {"amounts": [{"value": 0}]}, label("a", amounts=["$0"])) == (
        1,
        0,
        0,
    )
    assert match_counts("amounts", {"amounts": [{"value": 0.001}]}, label("a", amounts=["$0"])) == (
        0,
        1,
        1,
    )


def test_evidence_is_ignored_for_matching():
    pred = {"amounts": [{"value": 5}], "evidence": {"amounts": [{"text": "$5MM"}]}}
    # the value 5 is one of "$5MM"'s candidates (unscaled): it matches; the evidence adds nothing
    assert match_counts("amounts", pred, label("a", amounts=["$5MM", "$7MM"])) == (1, 0, 1)


# --- accuracy fields ---------------------------------------------------------------------
def test_schema_types_score_as_their_label_type():
    labels = [
        label("a", email_type="report"),
        label("b", email_type="deal"),
        label("c", email_type="other"),
    ]
    preds = {
        "a": {"email_type": "status_update"},
        "b": {"email_type": "legal"},
        "c": {"email_type": "newsletter"},
    }
    s = score(labels, preds)
    assert s.email_type.correct == 2  # report, deal right; newsletter (= report) is not other
    assert s.email_type.accuracy.value == pytest.approx(2 / 3)


def test_a_missing_result_counts_wrong_and_predicts_nothing():
    labels = [
        label("a", email_type="deal", people=["Jeff Skilling"]),
        label("b", email_type="deal", people=["Sara Shackleton"]),
    ]
    s = score(
        labels, {"a": {"email_type": "deal", "people": [{"name": "Jeff Skilling"}]}, "b": None}
    )
    assert (s.email_type.correct, s.email_type.n) == (1, 2)
    assert (s.people.tp, s.people.fp, s.people.fn) == (1, 0, 1)
    assert s.people.precision.value == 1.0
    assert s.people.recall.value == 0.5


def test_has_action_item_is_derived_from_action_items_when_absent():
    labels = [
        label("a", has_action_item=True),
        label("b", has_action_item=False),
        label("c", has_action_item=False),
    ]
    preds = {
        "a": {"action_items": [{"task": "send the invoice"}]},
        "b": {"action_items": []},
        "c": {"email_type": "other"},
    }  # neither key: wrong
    assert score(labels, preds).has_action_item.correct == 2


def test_micro_averages_pool_the_counts_of_all_emails():
    labels = [label("a", organizations=["Enron"]), label("b", organizations=["Dynegy", "El Paso"])]
    preds = {"a": {"organizations": ["Enron", "Reliant"]}, "b": {"organizations": []}}
    s = score(labels, preds)
    # tp 1, fp 1, fn 2: P = 1/2, R = 1/3, F1 = 2/(2 + 1 + 2)
    assert (s.organizations.tp, s.organizations.fp, s.organizations.fn) == (1, 1, 2)
    assert s.organizations.precision.value == 0.5
    assert s.organizations.recall.value == pytest.approx(1 / 3)
    assert s.organizations.f1.value == pytest.approx(0.4)


def test_majority_baseline_predicts_the_most_common_label_values():
    labels = [
        label(
            "a", email_type="deal", priority="low", has_action_item=False, people=["Jeff Skilling"]
        ),
        label("b", email_type="deal", priority="low", has_action_item=True),
        label("c", email_type="meeting", priority="low", has_action_item=True),
        label("d", email_type="report", priority="high", has_action_item=True),
    ]
    base = majority_baseline(labels)
    assert base.email_type.accuracy.value == 0.5  # deal: a, b
    assert base.priority.accuracy.value == 0.75  # low: a, b, c
    assert base.has_action_item.accuracy.value == 0.75  # true: b, c, d
    assert base.people.f1.value == 0.0
    assert (base.people.tp, base.people.fp, base.people.fn) == (0, 0, 1)
    assert base.grounding is None


# --- intervals ----------------------------------------------------------------------------
def test_a_perfect_prediction_has_a_degenerate_interval():
    labels = [label(str(i), email_type="deal", organizations=["Enron"]) for i in range(8)]
    s = score(
        labels, {str(i): {"email_type": "deal", "organizations": ["Enron Corp"]} for i in range(8)}
    )
    a = s.email_type.accuracy
    assert (a.value, a.low, a.high) == (1.0, 1.0, 1.0)
    f = s.organizations.f1
    assert (f.value, f.low, f.high) == (1.0, 1.0, 1.0)


def test_the_interval_contains_the_estimate_and_is_reproducible():
    labels = [label(str(i), email_type="deal") for i in range(10)]
    preds = {str(i): {"email_type": "deal" if i < 6 else "meeting"} for i in range(10)}
    first, again = (
        score(labels, preds).email_type.accuracy,
        score(labels, preds).email_type.accuracy,
    )
    assert first.value == 0.6
    assert first.low < 0.6 < first.high
    assert 0.0 <= first.low and first.high <= 1.0
    assert (first.low, first.high) == (again.low, again.high)


# --- grounding ----------------------------------------------------------------------------
def test_grounding_is_the_share_of_predicted_strings_found_in_the_text():
    labels = [label("a"), label("b")]
    preds = {
        "a": {
            "people": [{"name": "Jeff  Skilling"}],
            "organizations": ["Dynegy", "Reliant"],
            "amounts": [{"value": 5}],
        },  # numeric only: not checked
        "b": {
            "dates": ["Friday 2/9/01"],
            "evidence": {"amounts": [{"text": "$5MM"}, {"text": "$7 million"}]},
        },
    }
    texts = {"a": "jeff skilling met\nDYNEGY on Monday.", "b": "Due Friday 2/9/01, about $5MM."}
    s = score(labels, preds, texts)
    # a: Jeff Skilling, Dynegy yes, Reliant no; b: the date and $5MM yes, $7 million no
    assert (s.grounding.grounded, s.grounding.checked) == (4, 6)
    assert s.grounding.share.value == pytest.approx(4 / 6)
    assert score(labels, preds).grounding is None


# --- the table ----------------------------------------------------------------------------
def test_score_table_has_a_row_per_field_and_a_column_per_name():
    labels = [label("a", email_type="deal", people=["Jeff Skilling"])]
    good = score(labels, {"a": {"email_type": "deal", "people": ["Jeff Skilling"]}}, {"a": "x"})
    text = score_table({"mine": good, "majority": majority_baseline(labels)})
    lines = text.splitlines()
    assert lines[0].split() == ["field", "mine", "majority"]
    rows = {line.split("  ")[0].strip(): line for line in lines[2:]}
    assert list(rows) == [
        "email_type",
        "priority",
        "has_action_item",
        "people F1",
        "organizations F1",
        "amounts F1",
        "dates F1",
        "action_items F1",
        "action_items who",
        "action_items due",
        "identities F1",
        "grounding",
    ]
    assert "1.00 [1.00, 1.00]" in rows["email_type"]
    assert rows["people F1"].split()[-3:] == ["0.00", "[0.00,", "0.00]"]  # majority
    assert rows["grounding"].split()[1:] == ["0.00", "[0.00,", "0.00]", "n/a"]
    d = scores_as_dict(good)
    assert d["people"]["f1"]["value"] == 1.0 and d["people"]["tp"] == 1
    json.dumps(d)


# --- loading ------------------------------------------------------------------------------
def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_load_labels_names_the_line_that_is_not_json(tmp_path):
    path = _write(tmp_path / "labels.jsonl", [label("a"), '{"message_id": "b", oops}'])
    with pytest.raises(ConfigError, match="line 2"):
        load_labels(path)


def test_load_labels_refuses_an_unknown_type_and_priority(tmp_path):
    path = _write(tmp_path / "l.jsonl", [label("a", email_type="invoice")])
    with pytest.raises(ConfigError, match="invoice") as err:
        load_labels(path)
    assert err.value.hint
    path = _write(tmp_path / "p.jsonl", [label("a", priority="asap")])
    with pytest.raises(ConfigError, match="asap"):
        load_labels(path)


def test_load_labels_refuses_a_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_labels(tmp_path / "nope.jsonl")


def test_load_labels_takes_splits_from_the_rows_or_selection_tsv(tmp_path):
    path = _write(
        tmp_path / "labels.jsonl",
        [label("<m1@x>"), label("m2@x"), label("m3@x", split="dev"), label("m4@x")],
    )
    (tmp_path / "selection.tsv").write_text(
        "path\tmessage_id\tuser\tfolder\tchars\tsplit\n"
        "maildir/a/1\t<m1@x>\ta\tinbox\t100\tdev\n"
        "maildir/a/2\t<m2@x>\ta\tinbox\t120\ttest\n"
    )
    assert [r["message_id"] for r in load_labels(path, "dev")] == ["m1@x", "m3@x"]
    assert [r["message_id"] for r in load_labels(path, "test")] == ["m2@x"]
    assert len(load_labels(path)) == 4


# --- end to end: `emailwb score` on a real store -----------------------------------------
A_ID = "12292666.1075849629235.JavaMail.evans@thyme"  # arnold-j: Enron spend data, $5MM-500K
B_ID = "30925696.1075840345844.JavaMail.evans@thyme"  # baughman-d: a friend's feeder company


@pytest.fixture
def scored_db(tmp_path, sample_dir):
    """Two real Enron emails ingested; run r1 has a result for A and a failure for B."""
    from emailwb.store.database import Store
    from emailwb.store.results import result_params, result_sql
    from emailwb.store.runs import open_run

    mail = tmp_path / "mail"
    mail.mkdir()
    shutil.copy(sample_dir / "maildir/arnold-j/enron_europe/1.eml", mail / "a.eml")
    shutil.copy(sample_dir / "maildir/baughman-d/personal/letters/1.eml", mail / "b.eml")
    db = tmp_path / "e.sqlite"
    assert main(["ingest", str(mail), "--db", str(db), "--quiet"]) == 0
    with Store(db) as st:
        run = asyncio.run(open_run(st, "r1", "group", {"preset": "test"}))
        groups = {
            r["message_id"]: r["group_id"]
            for r in st.query("SELECT message_id, group_id FROM emails")
        }
        assert set(groups) == {A_ID, B_ID}
        st.submit(
            result_sql("group"),
            result_params(
                run.id,
                groups[A_ID],
                status="done",
                data={
                    "email_type": "status_update",
                    "priority": "medium",
                    "action_items": [],
                    "people": [
                        {"name": "Colleen Koenig", "role": "Analyst"},
                        {"name": "Rob Saltiel", "role": ""},
                    ],
                    "organizations": ["Enron"],
                    "amounts": [{"value": 5000000.0, "currency": "USD"}],
                    "dates": [],
                },
            ),
        )
        st.submit(
            result_sql("group"),
            result_params(
                run.id, groups[B_ID], status="failed", error="BackendTimeout", reason="timed out"
            ),
        )
        st.flush()
    labels = _write(
        tmp_path / "labels.jsonl",
        [
            label(
                f"<{A_ID}>",
                email_type="report",
                priority="medium",
                has_action_item=False,
                people=["Jennifer Stewart Medcalf", "Colleen Koenig"],
                organizations=["Enron", "Global Strategic Sourcing"],
                amounts=["$5MM", "500K"],
                split="dev",
            ),
            label(
                f"<{B_ID}>",
                email_type="personal",
                priority="low",
                has_action_item=True,
                people=["Don", "Brandon Roach", "Jaime"],
                split="dev",
            ),
            label("<not.ingested@thyme>", email_type="deal", split="test"),
        ],
    )
    return db, labels


def _cells(out: str) -> dict[str, list[str]]:
    lines = out.strip().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("field"))
    return {line[:16].strip(): line[16:].split() for line in lines[start + 2 :]}


def test_score_cli_prints_the_run_beside_the_majority_baseline(scored_db, capsys):
    db, labels = scored_db
    assert main(["score", "--labels", str(labels), "--db", str(db), "--run", "r1"]) == 0
    captured = capsys.readouterr()
    assert "1 of 3 labeled emails are not in" in captured.err
    assert "emailwb ingest" in captured.err
    header = next(line for line in captured.out.splitlines() if line.startswith("field"))
    assert header.split() == ["field", "r1", "majority"]
    cells = _cells(captured.out)
    # A right on all three (status_update = report), B failed: 1 of 2, from [0, 1] resamples
    assert cells["email_type"] == ["0.50", "[0.00,", "1.00]", "0.50", "[0.00,", "1.00]"]
    # people: A tp 1 (Koenig), fp 1 (Saltiel), fn 1 (Medcalf); B fn 3: F1 = 2/(2+1+4);
    # resampling only A gives 0.5, only B gives 0
    assert cells["people F1"] == ["0.29", "[0.00,", "0.50]", "0.00", "[0.00,", "0.00]"]
    # organizations and amounts: A tp 1 fn 1, B has neither: 2/3 in every defined resample
    assert cells["organizations F1"][:3] == ["0.67", "[0.67,", "0.67]"]
    assert cells["amounts F1"][:3] == ["0.67", "[0.67,", "0.67]"]
    assert cells["dates F1"] == ["n/a", "n/a"]
    # grounding: Colleen Koenig and Enron are in A's text, Rob Saltiel is not ("Rob,")
    assert cells["grounding"] == ["0.67", "[0.67,", "0.67]", "n/a"]
    # two emails: the report says the intervals mean little, and how to get more labels
    assert "only 2 labeled emails scored: too few" in captured.out
    assert "label at least 20" in captured.out


def test_score_cli_json_for_one_split_and_the_latest_run(scored_db, capsys):
    db, labels = scored_db
    assert (
        main(["score", "--labels", str(labels), "--db", str(db), "--split", "dev", "--json"]) == 0
    )
    got = json.loads(capsys.readouterr().out)
    assert (got["scored"], got["missing"]) == (2, 0)
    assert set(got["columns"]) == {"r1", "majority"}
    r1 = got["columns"]["r1"]
    assert r1["email_type"]["correct"] == 1
    assert (r1["people"]["tp"], r1["people"]["fp"], r1["people"]["fn"]) == (1, 1, 4)
    assert (r1["grounding"]["grounded"], r1["grounding"]["checked"]) == (2, 3)


def test_score_cli_names_the_runs_when_one_does_not_exist(scored_db, capsys):
    db, labels = scored_db
    assert main(["score", "--labels", str(labels), "--db", str(db), "--run", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no run named 'nope'" in err and "r1" in err and "emailwb status" in err


def test_score_cli_fails_when_no_labeled_email_is_in_the_store(scored_db, capsys):
    db, labels = scored_db
    assert main(["score", "--labels", str(labels), "--db", str(db), "--split", "test"]) == 2
    err = capsys.readouterr().err
    assert "none of the 1 labeled emails" in err and "emailwb ingest" in err


def test_a_report_over_enough_emails_gives_no_too_few_warning():
    from emailwb.quality.gold import ScoreReport

    enough = ScoreReport(columns={}, scored=66, missing=0, split="test", audited={})
    assert enough.too_few() == "" and "too few" not in enough.text()
    few = ScoreReport(columns={}, scored=3, missing=0, split=None, audited={})
    assert "only 3 labeled emails" in few.text() and "too few" in few.html()
