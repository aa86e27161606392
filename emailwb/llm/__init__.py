"""LLM: talking to inference servers, one request at a time, and what is asked of them.

``contract`` is the backend contract (``Backend``, ``LLMRequest``, ``Completion``) and the
one place where a reply is checked against the schema; ``ollama`` and ``openai`` speak those
protocols and map their errors into ``emailwb.errors``; ``router`` spreads requests over
several endpoints with health and statistics and builds backends by kind; ``breaker`` rests
a failing endpoint; ``localserver`` and ``llamabin`` run the embedded llama-server; ``schema``
is the versioned output schema, ``grammar`` its whitespace-free GBNF, ``prompts`` the
prompt templates and ``PromptVersion``, the editable, hashed parts they are made of.

May import: ``emailwb.errors``, ``emailwb.mail`` (the ``Email`` a prompt is built from).
Policy (concurrency, retries, progress) is not here: it belongs to ``emailwb.engine``.
"""
