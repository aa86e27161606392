"""Select the emails of the hand-labeled dev set from ``../shared/data/enron/``.

Deterministic: the same corpus gives the same selection. One message per content group
(the corpus repeats messages across folders), bodies between 200 and 6,000 characters of
decoded text (the labeling guide skips near-empty and very long ones), spread over the
seven users by a fixed quota and, within a user, round-robin over top-level folders in a
seeded random order. Every third selected email (by a hash of its Message-ID) is the test
split: tune on ``dev``, score the final plans on ``test`` once.

    python gold/choose.py [--enron ../shared/data/enron] > gold/selection.tsv
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import random
import sys
from collections import defaultdict
from email import policy
from email.parser import BytesParser
from pathlib import Path

QUOTAS = {
    "delainey-d": 36,
    "dean-c": 36,
    "beck-s": 14,
    "dasovich-j": 14,
    "blair-l": 12,
    "baughman-d": 12,
    "arnold-j": 12,
}
MIN_CHARS, MAX_CHARS = 200, 6_000
SEED = 20261206


def body_text(path: Path) -> str:
    msg = BytesParser(policy=policy.default).parse(path.open("rb"))
    part = msg.get_body(preferencelist=("plain",)) or msg
    return part.get_content() if not part.is_multipart() else ""


def split_of(message_id: str) -> str:
    return "test" if int(hashlib.sha256(message_id.encode()).hexdigest(), 16) % 3 == 0 else "dev"


def select(enron: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader((enron / "MANIFEST.tsv").open(), delimiter="\t"))
    seen_groups: set[str] = set()
    by_user: dict[str, dict[str, list[dict[str, str]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row["content_group"] in seen_groups:
            continue
        seen_groups.add(row["content_group"])
        user, folder = row["path"].split("/")[1:3]
        by_user[user][folder].append(row)
    rng = random.Random(SEED)
    chosen: list[dict[str, str]] = []
    for user, quota in QUOTAS.items():
        folders = {f: rng.sample(r, len(r)) for f, r in sorted(by_user[user].items())}
        order = rng.sample(sorted(folders), len(folders))
        picked = 0
        while picked < quota and any(folders.values()):
            for folder in order:
                while folders[folder] and picked < quota:
                    row = folders[folder].pop()
                    n = len(body_text(enron / row["path"]).strip())
                    if MIN_CHARS <= n <= MAX_CHARS:
                        chosen.append(
                            {
                                "path": row["path"],
                                "message_id": row["message_id"],
                                "user": user,
                                "folder": folder,
                                "chars": str(n),
                                "split": split_of(row["message_id"]),
                            }
                        )
                        picked += 1
                        break
    return chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--enron", default=str(Path(__file__).resolve().parents[2] / "shared/data/enron")
    )
    args = ap.parse_args()
    out = csv.DictWriter(
        sys.stdout,
        ["path", "message_id", "user", "folder", "chars", "split"],
        delimiter="\t",
        lineterminator="\n",
    )
    out.writeheader()
    out.writerows(select(Path(args.enron)))


if __name__ == "__main__":
    main()
