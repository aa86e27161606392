"""Score the deterministic sources on the labeled emails, straight from the files (no store).

    python gold/tune.py [--split dev|test] [--show FIELD]

Parses each labeled email with emailwb's parser, runs the fact extractors and the judgment
rules, and prints the scorer's table next to the majority baseline. ``--show people``
lists, per email, what was predicted and what the labels hold (for tuning on ``dev`` only).
"""

from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path
from typing import Any

from emailwb.facts import extract_many, judge, nlp
from emailwb.facts.counted import counted_segments
from emailwb.mail.message import parse_email
from emailwb.quality.gold import (
    ask_counts,
    load_labels,
    majority_baseline,
    majority_prediction,
    match_counts,
    predicted_asks,
    score,
    score_table,
)

HERE = Path(__file__).resolve().parent


_SENTENCE_RE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)")


def cheap_baselines(labels: list[dict[str, Any]], emails: list[Any]) -> dict[str, Any]:
    """The cheapest predictions that do the same jobs (nothing tuned on the labels)."""
    segs = [[s for s in counted_segments(e) if s.part != "signature"] for e in emails]
    flat = [s.text for ss in segs for s in ss]
    ents = nlp.entities(flat) if flat else []
    majority = majority_prediction(labels)  # type and priority: no cheaper guess
    out: dict[str, Any] = {}
    i = 0
    for lab, ss in zip(labels, segs, strict=True):
        money, asks = [], []
        for seg in ss:
            money += [seg.text[a:b] for kind, a, b in ents[i] if kind == "MONEY"]
            i += 1
            for m in _SENTENCE_RE.finditer(seg.text):
                sentence = m.group(0).strip()
                if re.search(r"\bplease\b", sentence, re.I) or sentence.endswith("?"):
                    at = seg.offset + m.start() + (len(m.group(0)) - len(m.group(0).lstrip()))
                    asks.append(
                        {
                            "ask": sentence,
                            "start": at,
                            "end": at + len(sentence),
                            "who": ["recipients"],
                        }
                    )
        out[lab["message_id"]] = {
            "email_type": majority["email_type"],
            "priority": majority["priority"],
            "amounts": money,
            "action_items": asks,
            "has_action_item": bool(asks),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", default="dev")
    ap.add_argument("--show")
    ap.add_argument(
        "--enron",
        default=os.environ.get("EMAILWB_ENRON_DIR", str(HERE.parents[1] / "shared/data/enron")),
    )
    args = ap.parse_args()
    labels = load_labels(HERE / "enron-labels.jsonl", split=args.split)
    emails = [parse_email(Path(args.enron, lab["path"]).read_bytes()) for lab in labels]
    t0 = time.perf_counter()
    facts = extract_many(emails)
    preds = {}
    for lab, email, f in zip(labels, emails, facts, strict=True):
        j = judge(email, f.action_items)
        preds[lab["message_id"]] = {
            **f.result_fields(),
            "email_type": j.email_type,
            "priority": j.priority,
            "has_action_item": j.has_action_item,
        }
    took = time.perf_counter() - t0
    texts = {lab["message_id"]: e.body for lab, e in zip(labels, emails, strict=True)}
    print(
        score_table(
            {
                "facts+rules": score(labels, preds, texts),
                "cheap baselines": score(labels, cheap_baselines(labels, emails), texts),
                "majority": majority_baseline(labels),
            }
        )
    )
    print(
        "cheap baselines: amounts = spaCy's MONEY entities of the counted text (untuned); "
        'action items = every counted sentence with "please" or a question mark; '
        "has_action_item = whether there is one; type and priority = the majority"
    )
    print(f"({len(labels)} emails, {took:.1f} s)")
    if args.show:
        for lab in labels:
            p = preds[lab["message_id"]]
            if args.show in ("email_type", "priority", "has_action_item"):
                if p[args.show] != lab[args.show]:
                    print(
                        f"{lab['path']}: predicted {p[args.show]!r}, label {lab[args.show]!r}"
                        f"  ({lab['notes'][:90]})"
                    )
                continue
            if args.show == "action_items":
                if "action_items" not in lab:
                    continue
                tp, fp, fn, who, due = ask_counts(p, lab, texts[lab["message_id"]])
                if fp or fn or who < tp or due < tp:
                    print(f"{lab['path']}: tp {tp} fp {fp} fn {fn} who {who} due {due}")
                    for a in predicted_asks(p):
                        print(f"   predicted {a['ask'][:110]!r} who={a['who']} due={a['due']}")
                    for a in lab["action_items"]:
                        print(f"   label     {a['ask'][:110]!r} who={a['who']} due={a['due']}")
                continue
            tp, fp, fn = match_counts(args.show, p, lab)
            if fp or fn:
                vals = p[args.show]
                vals = [
                    v.get("name") or v.get("date") or v.get("context") if isinstance(v, dict) else v
                    for v in vals
                ]
                print(
                    f"{lab['path']}: tp {tp} fp {fp} fn {fn}\n   predicted {vals}\n"
                    f"   labels    {lab[args.show]}"
                )


if __name__ == "__main__":
    main()
