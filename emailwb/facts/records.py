"""The stored result record as frames: the export's columns and the mailbox's money.

``results_frame(store, run)`` is every email of the store with its run's result
(``emailwb.store.runs.results_df``) plus typed columns read from the result JSON:

* one column per routed field, ``null`` where the run's plan does not produce the field
  (never a schema default such as ``"low"`` or ``0.5``), and ``not_produced`` listing them;
* ``action_items`` and ``amounts`` as list columns of structs (not JSON strings);
* ``result_version``: 2 for records of the honest shape; 1 for records stored before it,
  whose unproduced fields may hold schema defaults (marked, not rewritten).

``money_rollup(frame)`` adds up what the emails say about money: one row per organization
named with the amount (in the same sentence, else anywhere in the email, else none), month
and kind, totals apart from unit prices (a price per MWh never adds to a total), each row
with the emails and spans it comes from. This is the seed's "business value", computed from
the emails, not written by a model.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import polars as pl

from emailwb.facts.plans import FIELDS
from emailwb.store import runs

if TYPE_CHECKING:
    from emailwb.store.database import Store

#: results stored before the honest record carry no ``result_version``
LEGACY_VERSION = 1

ASK_STRUCT = pl.Struct(
    {
        "ask": pl.String,
        "who": pl.List(pl.String),
        "due": pl.String,
        "start": pl.Int64,
        "end": pl.Int64,
    }
)
AMOUNT_STRUCT = pl.Struct(
    {
        "value": pl.Float64,
        "currency": pl.String,
        "kind": pl.String,
        "unit": pl.String,
        "negative": pl.Boolean,
        "text": pl.String,
        "mentions": pl.Int64,
    }
)
_SCALARS = {
    "email_type": pl.String,
    "priority": pl.String,
    "has_action_item": pl.Boolean,
    "summary": pl.String,
    "workflow": pl.String,
    "priority_reason": pl.String,
    "sentiment": pl.String,
    "confidence": pl.Float64,
}


def _dicts(items: Any, read: Any) -> list[dict[str, Any]] | None:
    """``read`` of each dict in a result's list field; None when the field is null."""
    if items is None:
        return None
    return [read(i) for i in (items if isinstance(items, list) else []) if isinstance(i, dict)]


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_ask(item: dict[str, Any]) -> dict[str, Any]:
    """One stored action item as {ask, who, due, start, end}: the extractor's items, or a
    model's ``task``/``owner``/``due`` (no owner: ``recipients``)."""
    who = item.get("who")
    if who is None:
        who = [item["owner"]] if item.get("owner") else ["recipients"]
    return {
        "ask": str(item.get("ask") or item.get("task") or ""),
        "who": [str(w) for w in who if w] if isinstance(who, list) else [str(who)],
        "due": item.get("due") or None,
        "start": _int(item.get("start")),
        "end": _int(item.get("end")),
    }


def _amount(item: dict[str, Any]) -> dict[str, Any]:
    value = item.get("value")
    return {
        "value": float(value) if isinstance(value, (int, float)) else None,
        "currency": item.get("currency") or None,
        "kind": item.get("kind") or None,
        "unit": item.get("unit") or None,
        "negative": item.get("negative"),
        "text": item.get("context") or None,
        "mentions": _int(item.get("mentions")),
    }


def record_columns(data: dict[str, Any] | None) -> dict[str, Any]:
    """The typed export values of one stored result (all null when there is none)."""
    if not data:
        return {
            **dict.fromkeys(_SCALARS),
            "business_value": None,
            "action_items": None,
            "amounts": None,
            "not_produced": None,
            "result_version": None,
        }
    version = int(data.get("result_version") or LEGACY_VERSION)
    sources = data.get("sources") or {}
    missing = [f for f in FIELDS if sources.get(f) == "none"]
    out: dict[str, Any] = {}
    for name, dtype in _SCALARS.items():
        value = None if name in missing else data.get(name)
        if dtype == pl.Float64 and not isinstance(value, (int, float)):
            value = None
        out[name] = value
    bv = None if "business_value" in missing else data.get("business_value")
    out["business_value"] = bv.get("level") if isinstance(bv, dict) else None
    out["action_items"] = (
        None if "action_items" in missing else _dicts(data.get("action_items"), read_ask)
    )
    out["amounts"] = None if "amounts" in missing else _dicts(data.get("amounts"), _amount)
    out["not_produced"] = missing
    out["result_version"] = version
    return out


def results_frame(store: Store, run: str | int | None = None) -> pl.DataFrame:
    """Every email with its run's result and the record's typed columns (the export)."""
    df: pl.DataFrame = runs.results_df(store, run)
    rows = [record_columns(json.loads(raw) if raw else None) for raw in df["data"].to_list()]
    schema: dict[str, Any] = {
        **_SCALARS,
        "business_value": pl.String,
        "action_items": pl.List(ASK_STRUCT),
        "amounts": pl.List(AMOUNT_STRUCT),
        "not_produced": pl.List(pl.String),
        "result_version": pl.Int64,
    }
    extra = pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)
    return pl.concat([df, extra], how="horizontal")


def money_rows(data: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per distinct amount of one result: value, kind, unit and the organization
    named with it (same sentence, else the email's first, else null) with its span."""
    if not data or not isinstance(data.get("amounts"), list):
        return []
    evidence = (data.get("evidence") or {}).get("amounts") or []
    orgs = (data.get("evidence") or {}).get("organizations") or []
    out = []
    for i, item in enumerate(data["amounts"]):
        if not isinstance(item, dict) or not isinstance(item.get("value"), (int, float)):
            continue
        ev = evidence[i] if i < len(evidence) and isinstance(evidence[i], dict) else {}
        start = ev.get("start", -1)
        org = _nearest_org(orgs, start)
        out.append(
            {
                "value": float(item["value"]),
                "currency": item.get("currency") or "USD",
                "kind": item.get("kind") or "total",
                "unit": item.get("unit") or None,
                "text": item.get("context") or ev.get("text"),
                "start": start if isinstance(start, int) else -1,
                "end": ev.get("end", -1) if isinstance(ev.get("end"), int) else -1,
                "organization": org,
            }
        )
    return out


def _nearest_org(orgs: list[Any], start: Any) -> str | None:
    """The organization closest to an amount within 300 characters, else the first named."""
    placed = [o for o in orgs if isinstance(o, dict) and isinstance(o.get("start"), int)]
    if not placed:
        return None
    if isinstance(start, int) and start >= 0:
        near = [o for o in placed if o["start"] >= 0 and abs(o["start"] - start) <= 300]
        if near:
            return str(min(near, key=lambda o: abs(o["start"] - start))["text"])
    return str(placed[0].get("text"))


def money_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """Every distinct amount of every done result in ``frame`` (``results_frame``), one row
    each: email, date, month, organization, value, currency, kind, unit, text and span."""
    rows = []
    for email_id, message_id, date, raw in frame.select(
        "email_id", "message_id", "date", "data"
    ).iter_rows():
        for r in money_rows(json.loads(raw) if raw else None):
            month = str(date)[:7] if date else None
            rows.append({"email_id": email_id, "message_id": message_id, "month": month, **r})
    schema = {
        "email_id": pl.Int64,
        "message_id": pl.String,
        "month": pl.String,
        "value": pl.Float64,
        "currency": pl.String,
        "kind": pl.String,
        "unit": pl.String,
        "text": pl.String,
        "start": pl.Int64,
        "end": pl.Int64,
        "organization": pl.String,
    }
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def money_rollup(frame: pl.DataFrame) -> pl.DataFrame:
    """Money by organization, month, currency and kind (totals apart from unit prices): the
    sum (totals) or the range (unit prices), how many amounts and emails, and where each
    figure comes from (``sources``: message_id, text and span of every amount)."""
    money = money_frame(frame)
    return (
        money.group_by(["organization", "month", "currency", "kind", "unit"], maintain_order=True)
        .agg(
            pl.when(pl.first("kind") == "total")
            .then(pl.col("value").sum())
            .otherwise(None)
            .alias("total"),
            pl.col("value").min().alias("low"),
            pl.col("value").max().alias("high"),
            pl.len().alias("amounts"),
            pl.col("email_id").n_unique().alias("emails"),
            pl.struct("message_id", "text", "start", "end").alias("sources"),
        )
        .sort(["kind", "total"], descending=[False, True], nulls_last=True)
    )


__all__ = [
    "money_frame",
    "money_rollup",
    "money_rows",
    "read_ask",
    "record_columns",
    "results_frame",
]
