"""split_body: new text vs quoted, forwarded, signature and disclaimer; nothing lost; linear."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from emailwb.mail.cleaning import BodyParts, split_body
from emailwb.mail.message import parse_email


def chars(*texts: str) -> Counter[str]:
    return Counter(c for t in texts for c in t if not c.isspace())


def assert_nothing_lost(text: str, parts: BodyParts) -> None:
    assert chars(text) == chars(
        parts.new_text, parts.quoted, parts.forwarded, parts.signature, parts.disclaimer
    )


OUTLOOK_REPLY = """\
Sounds good to me.  5 o'clock.

 -----Original Message-----
From: 	Scott Palmer [SMTP:Scott.Palmer@exodus.net]
Sent:	Monday, December 11, 2000 3:02 PM
To:	'Ebner, Daniel'
Subject:	RE: This weekend

So did we get a consensus on the time?
"""

NOTES_REPLY = """\
Yes, I'll be there.




Richard Donoghue <Rdonoghue@mphlegal.com> on 12/13/2000 10:37:08 AM
To: Clint.Dean@enron.com
cc: lgasparini@simpletel.com

Subject: Re: camping


Who is bringing the tent?
"""

ENRON_FORWARD = """\
FYI - see the schedule below.

---------------------- Forwarded by Jane Doe/HOU/ECT on 01/02/2001 09:15 AM -------------


Kim Melodick@ECT
01/02/2001 08:22 AM
To: Jane Doe/HOU/ECT@ECT
cc:
Subject: Schedule

The schedule is attached.
"""


def test_outlook_original_message_block_is_quoted() -> None:
    parts = split_body(OUTLOOK_REPLY)
    assert parts.new_text == "Sounds good to me.  5 o'clock."
    assert parts.quoted.startswith("-----Original Message-----")
    assert "consensus" in parts.quoted
    assert parts.forwarded == ""
    assert_nothing_lost(OUTLOOK_REPLY, parts)


def test_original_message_of_a_forward_subject_is_filed_as_forwarded() -> None:
    parts = split_body(OUTLOOK_REPLY, forward=True)
    assert parts.new_text == "Sounds good to me.  5 o'clock."
    assert parts.forwarded.startswith("-----Original Message-----") and parts.quoted == ""


def test_outlook_header_block_without_separator_line_is_quoted() -> None:
    text = (
        "Done.\n\nFrom: Jane Doe\nSent: Monday, May 7, 2001 9:00 AM\nTo: Bob\nSubject: task\n\n"
        "Please do it."
    )
    parts = split_body(text)
    assert parts.new_text == "Done."
    assert parts.quoted.startswith("From: Jane Doe")


def test_lotus_notes_from_line_with_its_own_date_is_quoted() -> None:
    text = (
        "I'll work paragraph 4.\n\n\tEnron Energy Services\n\t\n"
        "\tFrom:  Mary Sullivan                           02/06/2001 12:38 PM\n"
        "\tPhone No: 713-853-7074  Phone\n  888 397-1638  Pager\n  EB766\n\t\n\n\n\n"
        "To: Scott Gahn/HOU/EES@EES\ncc: Dave Roberts/HOU/EES@EES\nSubject: Re: CDWR Response\n\n"
        "George and I are editing Exhibit 4 now.\n"
    )
    parts = split_body(text)
    assert parts.new_text == "I'll work paragraph 4."
    assert "Exhibit 4" in parts.quoted


def test_lotus_notes_reply_header_is_quoted() -> None:
    parts = split_body(NOTES_REPLY)
    assert parts.new_text == "Yes, I'll be there."
    assert parts.quoted.startswith("Richard Donoghue <Rdonoghue@mphlegal.com> on 12/13/2000")
    assert "tent" in parts.quoted
    assert_nothing_lost(NOTES_REPLY, parts)


def test_lotus_notes_header_wrapped_over_two_lines_is_quoted() -> None:
    text = (
        "OK.  Thanks, John.\n\n\n\n"
        '"Lemacks John C" <John.Lemacks@edwards.af.mil> on 12/20/99 \n10:40:57 AM\n\n\t\n'
        "To:\tWilliam Gang/HOU/EES@EES\ncc:\t\nSubject:\tRE: Transaction\n\nBill, next week.\n"
    )
    parts = split_body(text)
    assert parts.new_text == "OK.  Thanks, John."
    assert parts.quoted.startswith('"Lemacks John C"')


def test_enron_forwarded_by_block_is_forwarded_with_the_note_as_new_text() -> None:
    parts = split_body(ENRON_FORWARD)
    assert parts.new_text == "FYI - see the schedule below."
    assert parts.forwarded.startswith("---------------------- Forwarded by Jane Doe/HOU/ECT")
    assert "The schedule is attached." in parts.forwarded
    assert_nothing_lost(ENRON_FORWARD, parts)


def test_forward_only_message_has_empty_new_text() -> None:
    text = ENRON_FORWARD.split("\n\n", 1)[1]
    parts = split_body(text)
    assert parts.new_text == ""
    assert "The schedule is attached." in parts.forwarded


def test_reply_block_with_nothing_above_is_treated_as_forwarded() -> None:
    parts = split_body(OUTLOOK_REPLY.split("\n\n", 1)[1])
    assert parts.new_text == ""
    assert parts.forwarded.startswith("-----Original Message-----")


@pytest.mark.parametrize(
    "marker",
    [
        "---------- Forwarded message ---------",
        "-----Forwarded Message-----",
        "Begin forwarded message:",
    ],
)
def test_other_forward_markers_are_recognised(marker: str) -> None:
    parts = split_body(f"see below\n\n{marker}\nFrom: x@y.com\n\nold news\n")
    assert parts.new_text == "see below"
    assert parts.forwarded.startswith(marker)


def test_angle_quoted_lines_and_attribution_are_quoted_and_bottom_reply_kept() -> None:
    text = (
        'On Mon, 11 Dec 2000, "Dean, Clint" <clint@x.com>\nwrote:\n'
        "> Are you coming?\n> Let me know.\n\nYes, see you there.\n"
    )
    parts = split_body(text)
    assert parts.new_text == "Yes, see you there."
    assert parts.quoted.splitlines() == [
        'On Mon, 11 Dec 2000, "Dean, Clint" <clint@x.com>',
        "wrote:",
        "> Are you coming?",
        "> Let me know.",
    ]


def test_wrote_line_without_angle_quotes_starts_a_quoted_block() -> None:
    parts = split_body('No, why??\n\n"Dean, Clint" wrote:\n\nHey, did you meet anyone?\n')
    assert parts.new_text == "No, why??"
    assert parts.quoted.startswith('"Dean, Clint" wrote:')


def test_dash_dash_space_signature_is_split_off() -> None:
    parts = split_body("See you at 5.\n\n-- \nJohn Smith\nAcme Corp\n+1 555 0100\n")
    assert parts.new_text == "See you at 5."
    assert parts.signature == "-- \nJohn Smith\nAcme Corp\n+1 555 0100"


def test_lines_after_a_closing_are_the_signature() -> None:
    parts = split_body("Please review the attached draft.\n\nRegards\nDelainey\n")
    assert parts.new_text == "Please review the attached draft.\n\nRegards"
    assert parts.signature == "Delainey"


def test_sentences_after_a_closing_are_not_a_signature() -> None:
    text = "We closed.\n\nThanks.\nI will send the file tomorrow.\nBob\n"
    parts = split_body(text)
    assert parts.signature == ""
    assert parts.new_text == text.strip()


def test_trailing_name_title_phone_block_is_the_signature() -> None:
    text = (
        "The filing is due Friday.\n\nJeff Dasovich\nDirector, Government Affairs\n(415) 782-7822\n"
    )
    parts = split_body(text)
    assert parts.new_text == "The filing is due Friday."
    assert parts.signature.startswith("Jeff Dasovich")


@pytest.mark.parametrize(
    "last_paragraph",
    [
        "Call me at 713-853-1234 before noon.",
        "Sounds good",
        "Happy Holidays",
        "What do you think?",
        "Volume:\n100 MW",
    ],
)
def test_short_last_paragraphs_that_are_content_are_kept(last_paragraph: str) -> None:
    text = f"We closed the deal at $25.\n\n{last_paragraph}\n"
    parts = split_body(text)
    assert parts.signature == ""
    assert parts.new_text == text.strip()


def test_message_that_is_only_a_name_keeps_it_as_new_text() -> None:
    assert split_body("Jeff\n").new_text == "Jeff"


ENRON_DISCLAIMER = (
    "**********************************************************************\n"
    "This e-mail is the property of Enron Corp. and/or its relevant affiliate and may\n"
    "contain confidential and privileged material for the sole use of the intended\n"
    "recipient (s). Any review, use, distribution or disclosure by others is strictly\n"
    "prohibited. If you are not the intended recipient (or authorized to receive for\n"
    "the recipient), please contact the sender or reply to Enron Corp. at\n"
    "enron.messaging.administration@enron.com and delete all copies of the message.\n"
    "Thank you.\n"
    "**********************************************************************\n"
)


def test_enron_property_disclaimer_is_split_off() -> None:
    text = "Numbers attached, see tab 2.\n\n" + ENRON_DISCLAIMER
    parts = split_body(text)
    assert parts.new_text == "Numbers attached, see tab 2."
    assert parts.disclaimer.startswith("****") and "property of Enron Corp." in parts.disclaimer
    assert_nothing_lost(text, parts)


def test_confidential_information_disclaimer_is_split_off_after_a_signature() -> None:
    text = (
        "Agreed, send the contract.\n\nMary\n\n"
        "The information contained in this e-mail message is confidential and may be legally\n"
        "privileged. It is intended only for the use of the individual named above. If you are\n"
        "not the intended recipient, do not read, copy or distribute it.\n"
    )
    parts = split_body(text)
    assert parts.new_text == "Agreed, send the contract."
    assert parts.signature == "Mary"
    assert parts.disclaimer.startswith("The information contained in this e-mail")


def test_disclaimer_at_the_end_of_a_quoted_thread_is_split_off() -> None:
    text = OUTLOOK_REPLY + "\n" + ENRON_DISCLAIMER
    parts = split_body(text)
    assert "property of Enron" in parts.disclaimer
    assert "property of Enron" not in parts.quoted


def test_a_short_mention_of_confidentiality_is_content() -> None:
    text = "Please keep the price confidential until Monday.\n\nThanks\n"
    parts = split_body(text)
    assert parts.disclaimer == ""
    assert "confidential" in parts.new_text


def test_plain_message_is_all_new_text() -> None:
    text = "Hi team,\n\nThe meeting moved to 3pm.\nRoom 30C1.\n"
    assert split_body(text) == BodyParts(new_text=text.strip())


def test_empty_and_crlf_bodies() -> None:
    assert split_body("") == BodyParts()
    parts = split_body("Hi\r\n\r\n-----Original Message-----\r\nFrom: a\r\nSent: b\r\n\r\nold")
    assert parts.new_text == "Hi" and parts.quoted.endswith("old")


# --- real Enron bodies ------------------------------------------------------------------------
def read(enron_dir: Path, rel: str):
    return parse_email((enron_dir / "maildir" / rel).read_bytes())


def test_enron_reply_with_nested_outlook_and_notes_thread(enron_dir: Path) -> None:
    e = read(enron_dir, "dean-c/_sent_mail/2.eml")
    assert e.new_text == "Yes, yes.  Sorry for not replying.  I'm good for two."
    assert "-----Original Message-----" in e.quoted and "firewood" in e.quoted
    assert_nothing_lost(e.body, split_body(e.body))


def test_enron_forward_with_a_note_and_a_closing(enron_dir: Path) -> None:
    e = read(enron_dir, "delainey-d/sent/770.eml")
    assert e.new_text.startswith("Guys, do we have enough VAR")
    assert e.new_text.endswith("Regards")
    assert e.signature == "Delainey"
    assert e.forwarded.startswith("---------------------- Forwarded by David W Delainey/HOU/ECT")


def test_enron_fw_subject_files_the_original_message_as_forwarded(enron_dir: Path) -> None:
    e = read(enron_dir, "dean-c/inbox/690.eml")
    assert e.new_text.startswith("REVISION:") and e.new_text.endswith("THANK YOU.")
    assert e.forwarded.startswith("-----Original Message-----")


def test_cleaning_keeps_every_character_of_the_enron_bodies(enron_dir: Path) -> None:
    for path in sorted((enron_dir / "maildir" / "dean-c" / "_sent_mail").glob("*.eml")):
        body = parse_email(path.read_bytes()).body
        assert_nothing_lost(body, split_body(body))


# --- linear time --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "--\n" * 700_000,
        "> quoted line\n" * 150_000,
        "x" * 2_000_000,
        "she wrote:\n" * 180_000,
        "To: someone\n" * 160_000,
        "Jane on 12/13/2000\nTo: x\n" * 80_000,
        ("-" * 100_000 + "Forwarded" + "\n") * 20,
        "confidential " * 150_000,
    ],
    ids=["dashes", "quotes", "one-line", "wrote", "to-lines", "notes", "long-rules", "hint"],
)
def test_pathological_two_megabyte_bodies_split_fast(text: str) -> None:
    start = time.perf_counter()
    parts = split_body(text)
    assert time.perf_counter() - start < 3
    kept = (parts.new_text, parts.quoted, parts.forwarded, parts.signature, parts.disclaimer)
    assert sum(len("".join(p.split())) for p in kept) == len("".join(text.split()))
