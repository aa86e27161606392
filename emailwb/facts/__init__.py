"""Facts: deterministic extraction of what an email states, each value with its evidence.

The room for everything that reads business facts out of an email without an LLM:

* ``counted``: which text counts (the labeling guide's rules: the sender's new text and
  signature, a forwarded message when it is the point), as segments with their offsets in
  the email body, header lines inside the body blanked out;
* ``extract``: people, organizations, amounts, dates and deal references, each a ``Fact``
  with its character span in the body and its source (spaCy's small English pipeline, the
  money detector, rules);
* ``asks``: action items, each with its span, who is asked and the due date;
* ``judgment``: deterministic baselines for email_type and priority (has_action_item is
  whether ``asks`` finds an action item);
* ``evidence``: placing any value (an LLM's included) in the email text: exact, fuzzy or
  unplaced;
* ``plans``: the extraction plan, which source each field of a result comes from;
* ``records``: the stored result record as polars frames (the export's typed columns, the
  mailbox's money rollup).

May import: ``emailwb.mail.message``, ``emailwb.mail.cleaning``, ``emailwb.facts.money``, ``emailwb.llm.schema``,
``emailwb.errors`` and third-party libraries (spaCy, rapidfuzz, polars); ``cache`` and
``records`` read the store (``emailwb.store``). Nothing here imports the processor or the
backends.
"""

from emailwb.facts.counted import Segment, counted_segments
from emailwb.facts.evidence import place
from emailwb.facts.extract import Fact, Facts, extract_facts, extract_many
from emailwb.facts.judgment import Judgment, judge
from emailwb.facts.plans import PLANS, Plan, get_plan

__all__ = [
    "PLANS",
    "Fact",
    "Facts",
    "Judgment",
    "Plan",
    "Segment",
    "counted_segments",
    "extract_facts",
    "extract_many",
    "get_plan",
    "judge",
    "place",
]
