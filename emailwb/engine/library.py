"""Prompt versions kept in the store: save, load, list and diff (what a run selects).

A version (``emailwb.llm.prompts.PromptVersion``) is saved once under its name and never
changed: saving the same content under the same name again is a no-op, other content under
a taken name is refused. ``builtin`` is always there and is not stored. A version that
failed validation on a sample is saved with a warning, which ``list`` shows and a run that
selects it repeats.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from emailwb.errors import ConfigError
from emailwb.llm.prompts import BUILTIN, PromptVersion, check_name
from emailwb.store import prompts as rows

if TYPE_CHECKING:
    from emailwb.store.database import Store


def load_prompt(store: Store | None, name: str | None) -> PromptVersion:
    """The version called ``name`` (``builtin`` or None: the built-in texts)."""
    if name in (None, "", BUILTIN.name):
        return BUILTIN
    row = rows.prompt_row(store, name) if store is not None else None
    if row is None:
        known = ", ".join(v["name"] for v in list_prompts(store)) if store is not None else ""
        raise ConfigError(
            f"no prompt version named {name!r} in this store",
            hint=f"use one of: {known or 'builtin'} (`emailwb prompts list`), or save it "
            "from the prompt lab first",
        )
    return PromptVersion.from_content(name, row["content"])


def prompt_warning(store: Store | None, name: str | None) -> str | None:
    """The warning a version was saved with (it failed validation on a sample), if any."""
    if store is None or name in (None, "", BUILTIN.name):
        return None
    row = rows.prompt_row(store, name)
    return row["warning"] if row is not None else None


def save_prompt(
    store: Store,
    version: PromptVersion,
    *,
    based_on: str | None = None,
    warning: str | None = None,
) -> PromptVersion:
    """Store ``version`` under its name (immutable); the same content again is a no-op."""
    check_name(version.name)
    if version.name == BUILTIN.name:
        raise ConfigError(
            "the name 'builtin' is taken by the built-in prompt",
            hint="save the draft under a new name, e.g. builtin-v2",
        )
    old = rows.prompt_row(store, version.name)
    if old is not None:
        if old["hash"] == version.hash:
            return version
        raise ConfigError(
            f"prompt {version.name!r} already exists with other content (versions never change)",
            hint="save the draft under a new name, e.g. "
            f"{version.name}-2; `emailwb prompts diff {version.name} NEW` compares them",
        )
    rows.insert_prompt(
        store, version.name, version.hash, version.content(), based_on=based_on, warning=warning
    )
    return version


def list_prompts(store: Store | None) -> list[dict[str, Any]]:
    """``builtin`` first, then every stored version: name, hash, based_on, warning, created_at."""
    first = {
        "name": BUILTIN.name,
        "hash": BUILTIN.hash,
        "based_on": None,
        "warning": None,
        "created_at": None,
    }
    return [first, *(rows.prompt_rows(store) if store is not None else [])]


def diff_prompts(a: PromptVersion, b: PromptVersion, *, context: int = 1) -> str:
    """A unified diff of the two versions' texts ("" when they are the same)."""
    lines = difflib.unified_diff(
        a.text().splitlines(keepends=True),
        b.text().splitlines(keepends=True),
        fromfile=a.name,
        tofile=b.name,
        n=context,
    )
    return "".join(lines)
