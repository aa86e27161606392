"""How far email_type gets from the words: the attempts behind the README's measured ceiling.

    pip install -e '.[gold]'   # scikit-learn, only for this script
    python gold/type_ceiling.py

Prints, for the labeled emails, the accuracy (95% bootstrap interval, the scorer's) of:

- the majority class and emailwb's type rules (``emailwb.facts.judge``, tuned on ``dev``);
- TF-IDF over the subject and the counted text with logistic regression, leave-one-out on
  ``dev`` (nothing of an email is seen when it is classified), then trained on all of
  ``dev`` and scored on ``test``; the same with the rules' answer added as a feature, and
  with the mailbox folder's name added (a signal a run has for Enron, not for a mailbox
  exported without folders);
- the rules' confusion on ``dev`` (label by row, rules by column): where the words fail.

Nothing here is tuned on ``test``: the classifiers' settings are scikit-learn's defaults
(balanced class weights, C=1) and fixed before any run of this script.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emailwb.facts import judge
from emailwb.facts.judgment import counted_text
from emailwb.mail.message import parse_email
from emailwb.quality.gold import load_labels, score

HERE = Path(__file__).resolve().parent
TYPES = ("announcement", "deal", "meeting", "other", "personal", "report", "request")

try:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import LeaveOneOut, cross_val_predict
    from sklearn.pipeline import make_pipeline
except ImportError:  # pragma: no cover - depends on the extra
    sys.exit("gold/type_ceiling.py needs scikit-learn: pip install -e '.[gold]', then run it again")


def accuracy(labels: Sequence[dict[str, Any]], guesses: Sequence[str]) -> str:
    preds = {lab["message_id"]: {"email_type": g} for lab, g in zip(labels, guesses, strict=True)}
    return str(score(labels, preds).email_type.accuracy)


def documents(rows: Sequence[dict[str, Any]], with_rules: bool, with_folder: bool) -> list[str]:
    docs = []
    for row in rows:
        doc = f"{row['subject']}\n{row['text']}"
        if with_rules:
            doc += f"\nzzrule{row['rules']} zzrule{row['rules']}"
        if with_folder:
            doc += f"\nzzfolder{row['folder']}"
        docs.append(doc)
    return docs


def classifier() -> Any:
    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        LogisticRegression(max_iter=2000, class_weight="balanced"),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--enron",
        default=os.environ.get("EMAILWB_ENRON_DIR", str(HERE.parents[1] / "shared/data/enron")),
    )
    args = ap.parse_args()
    splits: dict[str, list[dict[str, Any]]] = {}
    rows: dict[str, list[dict[str, Any]]] = {}
    for split in ("dev", "test"):
        labels = load_labels(HERE / "enron-labels.jsonl", split=split)
        splits[split] = labels
        rows[split] = []
        for lab in labels:
            email = parse_email(Path(args.enron, lab["path"]).read_bytes())
            rows[split].append(
                {
                    "subject": email.subject or "",
                    "text": counted_text(email),
                    "rules": judge(email).email_type,
                    "folder": lab["path"].split("/")[2].replace("_", ""),
                    "label": lab["email_type"],
                }
            )
    dev, test = rows["dev"], rows["test"]
    majority = Counter(r["label"] for r in dev).most_common(1)[0][0]
    print(f"{len(dev)} dev and {len(test)} test emails (gold/enron-labels.jsonl)\n")
    print(f"{'email_type from':<58} {'dev':>19} {'test':>19}")
    print(f"{'-' * 58} {'-' * 19} {'-' * 19}")

    def line(name: str, on_dev: Sequence[str], on_test: Sequence[str]) -> None:
        print(
            f"{name:<58} {accuracy(splits['dev'], on_dev):>19} "
            f"{accuracy(splits['test'], on_test):>19}"
        )

    line(f"majority class of dev ({majority!r})", [majority] * len(dev), [majority] * len(test))
    line("emailwb's rules (tuned on dev)", [r["rules"] for r in dev], [r["rules"] for r in test])
    y_dev = [r["label"] for r in dev]
    for name, rules, folder in (
        ("TF-IDF + logistic regression (dev: leave-one-out)", False, False),
        ("  + the rules' answer as a feature", True, False),
        ("  + the mailbox folder's name", False, True),
        ("  + both", True, True),
    ):
        x_dev = documents(dev, rules, folder)
        loo = cross_val_predict(classifier(), x_dev, y_dev, cv=LeaveOneOut())
        fitted = classifier().fit(x_dev, y_dev)
        line(name, list(loo), list(fitted.predict(documents(test, rules, folder))))

    print("\nthe rules on dev: label by row, rules by column")
    print(f"{'':<13}" + "".join(f"{t[:8]:>9}" for t in TYPES) + f"{'right':>9}")
    for t in TYPES:
        got = Counter(r["rules"] for r in dev if r["label"] == t)
        n = sum(got.values())
        right = f"{got[t]}/{n}"
        print(f"{t:<13}" + "".join(f"{got[u]:>9}" for u in TYPES) + f"{right:>9}")


if __name__ == "__main__":
    main()
