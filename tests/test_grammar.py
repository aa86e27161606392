"""Compact JSON: the output schema as a whitespace-free GBNF grammar, and who sends it.

The grammar must describe exactly the schema the servers get (keys, order, enums, limits);
runs send it only when asked (``json_format="compact"``), the reference never, Ollama cannot;
the OpenAI backend puts it in llama-server's ``grammar`` field. A real llama-server test
(``tests/test_local_backend.py``) checks that replies under it are compact and valid.
"""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError
from test_processor import cfg, make_units, run

from emailwb.errors import ConfigError
from emailwb.llm.contract import LLMRequest
from emailwb.llm.grammar import compact_gbnf, gbnf_for, grammar_hash
from emailwb.llm.router import make_backend
from emailwb.llm.schema import CONFIDENCE_STEPS, EMAIL_TYPES, EmailAnalysis, output_json_schema
from emailwb.settings import RunConfig, load_settings
from emailwb.store.runs import get_run
from emailwb.testing.servers import SimServer


def rules(text: str) -> dict[str, str]:
    return dict(line.split(" ::= ", 1) for line in text.strip().splitlines())


def test_grammar_writes_every_schema_key_once_in_schema_order():
    root = rules(compact_gbnf())["root"]
    keys = re.findall(r'\\"(\w+)\\":', root)
    assert keys == list(EmailAnalysis.model_fields)
    assert list(output_json_schema()["properties"]) == keys


def test_grammar_allows_no_whitespace_outside_strings():
    g = rules(compact_gbnf())
    assert "space" not in g and "ws" not in g
    for name, body in g.items():
        if name == "char":
            continue  # the inside of strings: any character but quote, backslash, control
        literals = re.findall(r'"((?:[^"\\]|\\.)*)"', body)
        assert not any(re.search(r"\s", lit) for lit in literals), (name, body)
        assert "[ \\t" not in body and "\\n" not in body, (name, body)


def test_grammar_keeps_the_schemas_enums_and_limits():
    g = rules(compact_gbnf())
    assert all(f'"\\"{t}\\""' in g["root-email-type"] for t in EMAIL_TYPES)
    assert g["root-confidence"].count("|") == len(CONFIDENCE_STEPS) - 1
    assert "char{0,280}" in g["root-summary"]  # schema.SUMMARY
    assert "{0,2}" in g["root-people"]  # at most 3 people
    # without limits: no repetition bounds anywhere
    assert "{0," not in compact_gbnf(limits=False).replace("[0-9]{0,15}", "")


def test_grammar_refuses_schema_parts_it_cannot_express():
    with pytest.raises(ValueError, match="not supported"):
        gbnf_for({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]})
    with pytest.raises(ValueError, match="required"):
        gbnf_for({"type": "object", "properties": {"a": {"type": "string"}}, "required": []})


def test_compact_json_is_opt_in_and_never_the_reference():
    # opt-in: SmolLM2 agreed less with the type rules under it (README, "Compact JSON")
    assert not RunConfig.default().compact_json
    assert RunConfig.default(json_format="compact").compact_json  # the embedded llama-server
    assert RunConfig.default(backend="openai", json_format="compact").compact_json
    assert not RunConfig.reference().compact_json  # the original design: the server's schema


def test_compact_json_with_ollama_is_refused_with_the_fix(monkeypatch):
    with pytest.raises(ValidationError, match="use 'schema' with the ollama backend"):
        RunConfig.default(backend="ollama", json_format="compact")
    monkeypatch.setenv("EMAILWB_JSON_FORMAT", "compact")
    settings = load_settings()
    assert settings.json_format == "compact"
    assert RunConfig.from_settings(settings).compact_json
    assert not RunConfig.from_settings(load_settings(json_format="schema")).compact_json
    # the reference keeps its own choice whatever the settings say
    assert not RunConfig.from_settings(load_settings(), "reference").compact_json


async def test_ollama_backend_refuses_a_grammar_request():
    async with SimServer(kind="ollama") as srv:
        backend = make_backend("ollama", srv.url, srv.model)
        try:
            with pytest.raises(ConfigError, match="not a GBNF grammar"):
                await backend.complete(
                    LLMRequest([{"role": "user", "content": "hi"}], grammar=compact_gbnf())
                )
        finally:
            await backend.aclose()
        assert srv.chat_requests == []


async def test_compact_run_sends_the_grammar_instead_of_the_schema_and_records_it(store):
    make_units(store, 6)
    async with SimServer(kind="openai", slots=2) as srv:
        for fmt in ("compact", "schema"):
            _, summary = await run(store, srv, cfg(srv, concurrency=2, json_format=fmt), fmt)
            assert summary.done == 6
        compact, schema = srv.chat_requests[:6], srv.chat_requests[6:]
    assert all(
        r.body["grammar"] == compact_gbnf() and "response_format" not in r.body for r in compact
    )
    assert all(
        "grammar" not in r.body and r.body["response_format"]["type"] == "json_schema"
        for r in schema
    )
    assert get_run(store, "compact").config["grammar_hash"] == grammar_hash()
    assert get_run(store, "schema").config["grammar_hash"] is None
