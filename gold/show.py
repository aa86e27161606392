"""Print one email of ``../shared/data/enron/`` for labeling by reading: the address headers
(From, To, Cc, Bcc and the corpus's X-From/X-To/X-cc display names), Subject, Date, then the
decoded body exactly as Python's ``email`` package gives it (the text that ask spans are cut
from). Nothing here extracts or suggests a label.

    python gold/show.py maildir/dasovich-j/inbox/12.eml [...]
    python gold/show.py --check maildir/... "please send me the draft"   # is it verbatim?
"""

from __future__ import annotations

import argparse
import sys
from email import policy
from email.parser import BytesParser
from pathlib import Path

ENRON = Path(__file__).resolve().parents[2] / "shared/data/enron"
HEADERS = ("From", "To", "Cc", "Bcc", "X-From", "X-To", "X-cc", "Subject", "Date")


def body_text(path: Path) -> str:
    msg = BytesParser(policy=policy.default).parse(path.open("rb"))
    part = msg.get_body(preferencelist=("plain",)) or msg
    return part.get_content() if not part.is_multipart() else ""


def show(rel: str) -> str:
    path = ENRON / rel
    msg = BytesParser(policy=policy.default).parse(path.open("rb"))
    lines = [f"=== {rel}", f"Message-ID: {msg['Message-ID']}"]
    lines += [f"{h}: {msg[h]}" for h in HEADERS if msg[h] is not None]
    lines += ["--- body", body_text(path)]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--check", action="store_true", help="PATH SPAN...: is each span in the body?")
    args = ap.parse_args()
    if args.check:
        body = body_text(ENRON / args.paths[0])
        bad = [s for s in args.paths[1:] if s not in body]
        for s in args.paths[1:]:
            print(("ok   " if s in body else "MISSING ") + repr(s))
        sys.exit(1 if bad else 0)
    for rel in args.paths:
        print(show(rel))


if __name__ == "__main__":
    main()
