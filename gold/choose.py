"""Select the emails of the hand-labeled dev set from ``../shared/data/enron/``.

Deterministic: the same corpus gives the same selection. One message per content group
(the corpus repeats messages across folders), bodies between 200 and 6,000 characters of
decoded text (the labeling guide skips near-empty and very long ones), spread over the
seven users by a fixed quota and, within a user, round-robin over top-level folders in a
seeded random order. Every third selected email (by a hash of its Message-ID) is the test
split: tune on ``dev``, score the final plans on ``test`` once.

    python gold/choose.py [--enron ../shared/data/enron] > gold/selection.tsv

Round 2 (``--round 2``) draws a fresh held-out set by the same rules from the content
groups round 1 did not use, with its own seed and quotas; every email of it is ``test``.
Round 1's test split was scored once and then seen, so its labels moved to ``dev``
(see ``gold/README.md``).

    python gold/choose.py --round 2 > gold/selection-2.tsv

Round 3 (``--round 3``) does the same with rounds 1 and 2 off limits and a third seed: the
held-out split of the action-item and identity labels (round 2 was scored and then seen).

    python gold/choose.py --round 3 > gold/selection-3.tsv

Round 4 (``--round 4``): rounds 1-3 off limits, a fourth seed; the held-out split once round
3 had been scored and moved to ``dev``.

    python gold/choose.py --round 4 > gold/selection-4.tsv
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
QUOTAS_2 = {
    "delainey-d": 16,
    "dean-c": 16,
    "beck-s": 8,
    "dasovich-j": 8,
    "blair-l": 6,
    "baughman-d": 6,
    "arnold-j": 6,
}
QUOTAS_3 = QUOTAS_2
MIN_CHARS, MAX_CHARS = 200, 6_000
SEED = 20261206
SEED_2 = 20261207
SEED_3 = 20261208
SEED_4 = 20261209


def body_text(path: Path) -> str:
    msg = BytesParser(policy=policy.default).parse(path.open("rb"))
    part = msg.get_body(preferencelist=("plain",)) or msg
    return part.get_content() if not part.is_multipart() else ""


def split_of(message_id: str) -> str:
    return "test" if int(hashlib.sha256(message_id.encode()).hexdigest(), 16) % 3 == 0 else "dev"


def select(
    enron: Path,
    quotas: dict[str, int] = QUOTAS,
    seed: int = SEED,
    exclude: frozenset[str] = frozenset(),
    split: str | None = None,
) -> list[dict[str, str]]:
    """Pick one message per content group by the quotas; ``exclude`` holds Message-IDs whose
    content groups are off limits; ``split`` forces every pick into one split."""
    rows = list(csv.DictReader((enron / "MANIFEST.tsv").open(), delimiter="\t"))
    seen_groups: set[str] = {r["content_group"] for r in rows if r["message_id"] in exclude}
    by_user: dict[str, dict[str, list[dict[str, str]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row["content_group"] in seen_groups:
            continue
        seen_groups.add(row["content_group"])
        user, folder = row["path"].split("/")[1:3]
        by_user[user][folder].append(row)
    rng = random.Random(seed)
    chosen: list[dict[str, str]] = []
    for user, quota in quotas.items():
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
                                "split": split or split_of(row["message_id"]),
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
    ap.add_argument("--round", type=int, choices=(1, 2, 3, 4), default=1)
    args = ap.parse_args()
    here = Path(__file__).parent
    if args.round > 1:
        used: set[str] = set()
        for name in ("selection.tsv", "selection-2.tsv", "selection-3.tsv")[: args.round - 1]:
            with (here / name).open() as f:
                used |= {r["message_id"] for r in csv.DictReader(f, delimiter="\t")}
        quotas, seed = {2: (QUOTAS_2, SEED_2), 3: (QUOTAS_3, SEED_3), 4: (QUOTAS_2, SEED_4)}[
            args.round
        ]
        picks = select(Path(args.enron), quotas, seed, frozenset(used), split="test")
    else:
        picks = select(Path(args.enron))
    out = csv.DictWriter(
        sys.stdout,
        ["path", "message_id", "user", "folder", "chars", "split"],
        delimiter="\t",
        lineterminator="\n",
    )
    out.writeheader()
    out.writerows(picks)


if __name__ == "__main__":
    main()
