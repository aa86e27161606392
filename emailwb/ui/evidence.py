"""Evidence highlighted: each extracted value with a character span marked in the email text.

A result's ``evidence`` (``emailwb.facts.plans.compose``) holds, per field, the values with
their spans into the email's body (``{"text", "start", "end", "match", "source"}``).
``highlight_html`` marks every placed value in the text, coloured by field (overlapping
spans: the first one wins, the rest are listed), and lists the values with no span as
unsupported (so is an exact span whose text is not its value: evidence meant for another
text); ``evidence_page`` makes a self-contained HTML file of several emails for
sharing. Everything from the email or the model is escaped: the content is untrusted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from emailwb.ui.notebook import escape

#: one colour per field (colour-blind safe pastel set)
COLOURS: dict[str, str] = {
    "people": "#a6cee3",
    "organizations": "#b2df8a",
    "amounts": "#fdbf6f",
    "dates": "#cab2d6",
    "deal_refs": "#fb9a99",
    "action_items": "#ffff99",
}
_OTHER = "#e0e0e0"


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def _spans(
    evidence: Mapping[str, Any] | None, body: str
) -> tuple[list[tuple[int, int, str, str]], list[tuple[str, str]]]:
    placed: list[tuple[int, int, str, str]] = []
    unsupported: list[tuple[str, str]] = []
    for name, items in (evidence or {}).items():
        for item in items or []:
            if not isinstance(item, Mapping):
                continue
            start, end = item.get("start", -1), item.get("end", -1)
            text = str(item.get("text", ""))
            match = str(item.get("match", "exact"))
            if (
                isinstance(start, int)
                and isinstance(end, int)
                and 0 <= start < end <= len(body)
                and match != "unplaced"
                # an exact span holds its value in this text (not another email's)
                and (match != "exact" or _same(body[start:end], text))
            ):
                placed.append((start, end, name, match))
            else:
                unsupported.append((name, text))
    placed.sort(key=lambda s: (s[0], -s[1]))
    return placed, unsupported


def legend_html(fields: Iterable[str] = COLOURS) -> str:
    """The colour of each field."""
    chips = "".join(
        f"<span style='background:{COLOURS.get(f, _OTHER)};padding:0 6px;margin-right:6px;"
        f"border-radius:3px'>{escape(f)}</span>"
        for f in fields
    )
    return f"<div class='emailwb-legend' style='font-size:12px;margin:4px 0'>{chips}</div>"


def highlight_html(text: str, evidence: Mapping[str, Any] | None) -> str:
    """``text`` with each placed value marked (a ``<mark>`` per span, titled with its field
    and how it was placed), then the list of values that have no span."""
    placed, unsupported = _spans(evidence, text)
    parts: list[str] = []
    at = 0
    skipped: list[tuple[str, str]] = []
    for start, end, name, match in placed:
        if start < at:  # overlaps a span already marked
            skipped.append((name, text[start:end]))
            continue
        parts.append(escape(text[at:start]))
        colour = COLOURS.get(name, _OTHER)
        style = f"background:{colour};border-radius:2px;padding:0 1px"
        if match == "fuzzy":
            style += ";border-bottom:2px dotted #555"
        parts.append(
            f"<mark class='emailwb-ev emailwb-ev-{escape(name)}' data-field='{escape(name)}' "
            f"title='{escape(name)} ({escape(match)})' style='{style}'>"
            f"{escape(text[start:end])}</mark>"
        )
        at = end
    parts.append(escape(text[at:]))
    body = (
        "<pre class='emailwb-ev-text' style='white-space:pre-wrap;font-size:12px;"
        "max-height:420px;overflow:auto;border:1px solid #ddd;padding:6px;margin:0'>"
        f"{''.join(parts)}</pre>"
    )
    notes = ""
    if unsupported:
        items = "".join(
            f"<li><b>{escape(n)}</b>: {escape(v) or '(empty)'}</li>" for n, v in unsupported
        )
        notes += (
            "<div class='emailwb-unsupported' style='color:#b00020;font-size:12px'>"
            f"unsupported (no span in the email): <ul style='margin:2px 0'>{items}</ul></div>"
        )
    if skipped:
        items = ", ".join(f"{escape(n)}: {escape(v)}" for n, v in skipped)
        notes += f"<div style='font-size:12px;color:#555'>also found (overlapping): {items}</div>"
    return legend_html() + body + notes


def evidence_page(
    items: Iterable[Mapping[str, Any]], *, title: str = "emailwb: extractions and evidence"
) -> str:
    """A self-contained HTML page: per item (``subject``, ``text``, ``data`` and optional
    ``heading``) the email with its evidence highlighted and the extracted fields."""
    import json

    blocks = []
    for item in items:
        data = item.get("data") or {}
        shown = {k: v for k, v in data.items() if k not in ("evidence", "sources")}
        blocks.append(
            "<section style='margin:16px 0;border-top:1px solid #ccc;padding-top:8px'>"
            f"<h3 style='margin:4px 0'>{escape(item.get('heading') or item.get('subject'))}</h3>"
            f"{highlight_html(str(item.get('text') or ''), data.get('evidence'))}"
            "<details><summary>extracted fields</summary><pre style='font-size:12px'>"
            f"{escape(json.dumps(shown, indent=2, ensure_ascii=False, default=str))}</pre>"
            "</details></section>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title></head>"
        "<body style='font-family:sans-serif;max-width:1000px;margin:auto'>"
        f"<h1>{escape(title)}</h1>{''.join(blocks)}</body></html>"
    )


def write_evidence_page(path: str | Path, items: Iterable[Mapping[str, Any]], **kw: Any) -> Path:
    """Write ``evidence_page(items)`` to ``path``; returns the path."""
    out = Path(path)
    out.write_text(evidence_page(items, **kw), encoding="utf-8")
    return out
