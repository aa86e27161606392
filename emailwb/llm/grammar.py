"""A GBNF grammar for the output schema that allows no whitespace: compact JSON replies.

llama.cpp (llama-server, and Ollama, which uses its grammar engine) turns a JSON schema into a
grammar that lets the model put a newline and up to 20 spaces or tabs between any two tokens
of the JSON; SmolLM2 pretty-prints in most replies, and that whitespace is about a sixth of
every reply's tokens, each one a full decoding step. ``compact_gbnf()`` is the same schema
(``schema.output_json_schema()``: the same keys in the same order, the same enums, string
and list limits) as a grammar where no whitespace exists outside strings, for servers that
take a GBNF grammar (llama-server's ``grammar`` request field). The reply is ordinary JSON
and goes through the same fail-closed validation as any other. Runs use it only when asked
(``RunConfig.json_format = "compact"``): with SmolLM2 it cut completion tokens by 30% but
also changed what the model extracts (README, "Compact JSON", for the quality A/B).

Only the JSON-schema subset that ``output_json_schema`` uses is supported: objects with
properties (all required, in order), strings with ``maxLength``, enums of strings or numbers,
numbers, and arrays with ``maxItems``; anything else raises ``ValueError``.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from typing import Any

from emailwb.llm.schema import output_json_schema

# JSON's string characters and numbers, as llama.cpp's json-schema-to-grammar writes them
_CHAR = r'[^"\\\x7F\x00-\x1F] | [\\] (["\\bfnrt] | "u" [0-9a-fA-F]{4})'
_NUMBER = '"-"? ([0] | [1-9] [0-9]{0,15}) ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,16})?'


def _literal(text: str) -> str:
    """A GBNF string literal matching ``text`` exactly."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Builder:
    def __init__(self) -> None:
        self.rules: dict[str, str] = {"char": _CHAR}

    def rule(self, name: str, body: str) -> str:
        name = re.sub(r"[^a-zA-Z0-9-]+", "-", name).strip("-") or "r"
        base, n = name, 1
        while name in self.rules and self.rules[name] != body:
            n += 1
            name = f"{base}-{n}"
        self.rules[name] = body
        return name

    def node(self, node: dict[str, Any], name: str) -> str:
        if "enum" in node:
            return self.rule(name, " | ".join(_literal(json.dumps(v)) for v in node["enum"]))
        kind = node.get("type")
        if kind == "object":
            props = node.get("properties", {})
            if set(node.get("required", [])) != set(props):
                raise ValueError(f"{name}: every property must be required")
            parts = []
            for i, (key, sub) in enumerate(props.items()):
                sep = "," if i else ""
                parts.append(
                    _literal(f"{sep}{json.dumps(key)}:") + " " + self.node(sub, f"{name}-{key}")
                )
            return self.rule(name, '"{" ' + " ".join(parts) + ' "}"')
        if kind == "array":
            item = self.node(node["items"], f"{name}-item")
            most = node.get("maxItems")
            more = f'("," {item})*' if most is None else f'("," {item}){{0,{most - 1}}}'
            if most == 0:
                return self.rule(name, '"[]"')
            return self.rule(name, f'"[" ({item} {more})? "]"')
        if kind == "string":
            most = node.get("maxLength")
            reps = "*" if most is None else f"{{0,{most}}}"
            return self.rule(name, f'"\\"" char{reps} "\\""')
        if kind in ("number", "integer"):
            return self.rule("number", _NUMBER)
        raise ValueError(f"{name}: JSON schema {node!r} is not supported by compact_gbnf")


def gbnf_for(schema: dict[str, Any]) -> str:
    """A whitespace-free GBNF grammar for ``schema`` (the subset described above)."""
    builder = _Builder()
    root = builder.node(schema, "root")
    if root != "root":
        builder.rules["root"] = root
    lines = [f"root ::= {builder.rules.pop('root')}"]
    lines += [f"{name} ::= {body}" for name, body in builder.rules.items()]
    return "\n".join(lines) + "\n"


@lru_cache(maxsize=2)
def compact_gbnf(*, limits: bool = True) -> str:
    """The output schema as a whitespace-free GBNF grammar (cached)."""
    return gbnf_for(output_json_schema(limits=limits))


def grammar_hash() -> str:
    """A short hash of ``compact_gbnf()``, recorded with a run that sends it."""
    return hashlib.sha256(compact_gbnf().encode()).hexdigest()[:16]
