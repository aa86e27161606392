"""The request a plan sends for one unit: messages, the plan's JSON schema (choice fields
narrowed to the unit's candidates), the reply model, the compact grammar when asked for.

The processor and the prompt lab build their requests here, so what the lab tries is what
a run sends.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from emailwb.errors import ProcessingError
from emailwb.facts.cache import Analysed
from emailwb.facts.plans import Plan
from emailwb.llm.contract import LLMRequest
from emailwb.llm.grammar import gbnf_for
from emailwb.llm.schema import choice_schema, output_json_schema, plan_model, schema_hash
from emailwb.settings import RunConfig


def plan_schema_hash(plan: Plan) -> str:
    """The hash of the schema a plan's requests carry (recorded in a run's provenance)."""
    if plan.all_llm:
        return schema_hash()
    return schema_hash(plan.llm_fields, plan.choice_fields)


@functools.lru_cache(maxsize=32)
def _shared_schema(fields: tuple[str, ...] | None, choices: tuple[str, ...]) -> dict[str, Any]:
    """One JSON schema per plan, shared by its requests (read only: the backends put it in
    the request body as it is; ``choice_schema`` narrows a deep copy)."""
    return output_json_schema(fields=fields, choices=choices)


def request_for(
    plan: Plan,
    messages: list[dict[str, str]],
    analysed: Analysed | None,
    *,
    options: Mapping[str, Any],
    grammar: str | None,
    compact: bool,
    cfg: RunConfig,
    key: str,
) -> LLMRequest:
    """The request for one unit under ``plan``. ``grammar`` is the all-LLM plans' compact
    grammar (None: the JSON schema); ``compact`` asks for a grammar of a plan's own schema."""
    if plan.all_llm:
        return LLMRequest(
            messages=messages,
            schema=_shared_schema(None, ()),
            grammar=grammar,
            options=dict(options),
            key=key,
            stream=cfg.stream,
            timeout=cfg.timeout,
        )
    schema = _shared_schema(plan.llm_fields, plan.choice_fields)
    if plan.choice_fields:  # narrowed per unit, on a copy
        if analysed is None:
            raise ProcessingError(
                f"unit {key} has no facts for plan {plan.name!r}",
                hint="report this: the work queue prepares facts for plans that use them",
            )
        schema = choice_schema(
            schema, {f: analysed.facts.candidates(f) for f in plan.choice_fields}
        )
    return LLMRequest(
        messages=messages,
        schema=schema,
        grammar=gbnf_for(schema) if compact else None,
        options=dict(options),
        key=key,
        stream=cfg.stream,
        timeout=cfg.timeout,
        reply_model=plan_model(plan.llm_fields, plan.choice_fields),
    )
