"""emailwb: push large mailboxes through local LLMs and get structured business intelligence out.

The public face: what a notebook or a script needs, imported lazily (``import emailwb`` loads
nothing heavy until a name is used)::

    import asyncio, emailwb
    with emailwb.Store("emailwb.sqlite") as store:
        print(emailwb.ingest(store, ["../shared/data/enron"]))
        summary = asyncio.run(emailwb.run_batch(store, emailwb.RunConfig.default(plan="facts")))
        emailwb.results_df(store, summary.name).write_parquet("results.parquet")

Where things live (each subpackage's docstring says what it is for and what it may import):

* ``emailwb.mail``: parsing, cleaning, deduplication, threads, type detection, mail sources;
* ``emailwb.store``: the SQLite store, migrations, ingest, runs and results;
* ``emailwb.llm``: backends (Ollama, OpenAI-compatible, the embedded llama-server), router,
  breaker, schema, grammar, prompts and prompt versions;
* ``emailwb.facts``: extractors with evidence spans, judgment rules, extraction plans;
* ``emailwb.settings``: ``Settings`` and the ``RunConfig`` they produce;
* ``emailwb.quality``: measures, grounding, the quality watch, judge, audits, A/B, hand labels;
* ``emailwb.engine``: the processor, work queue, concurrency, retries, throughput, canary, the
  prompt library and the prompt lab's trials;
* ``emailwb.ui``: notebook panels, charts, explore views, the HTML report, the prompt lab;
* ``emailwb.scale``: OpenAI batch files out and back (vLLM run-batch, the Batch API);
* ``emailwb.cli``: the ``emailwb`` command;
* ``emailwb.testing``: simulated servers for tests and benchmarks (nothing imports it).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "Store": "emailwb.store.database",
    "ingest": "emailwb.store.ingest",
    "ingest_errors": "emailwb.store.ingest",
    "results_df": "emailwb.store.runs",
    "retry_failed": "emailwb.store.runs",
    "list_runs": "emailwb.store.runs",
    "Settings": "emailwb.settings",
    "load_settings": "emailwb.settings",
    "RunConfig": "emailwb.settings",
    "run_batch": "emailwb.engine.batch",
    "Processor": "emailwb.engine.processor",
    "RunSummary": "emailwb.engine.processor",
    "canary": "emailwb.engine.canary",
    "status_json": "emailwb.engine.throughput",
    "QualityConfig": "emailwb.quality.watch",
    "QualityWatch": "emailwb.quality.watch",
    "compare_runs": "emailwb.quality.compare",
    "load_labels": "emailwb.quality.gold",
    "score_runs": "emailwb.quality.gold",
    "get_plan": "emailwb.facts.plans",
    "results_frame": "emailwb.facts.records",
    "money_rollup": "emailwb.facts.records",
    "PLANS": "emailwb.facts.plans",
    "PromptVersion": "emailwb.llm.prompts",
    "load_prompt": "emailwb.engine.library",
    "save_prompt": "emailwb.engine.library",
    "list_prompts": "emailwb.engine.library",
    "try_prompt": "emailwb.engine.lab",
    "compare_trials": "emailwb.engine.lab",
    "PromptLab": "emailwb.ui.prompt_lab",
    "LaunchPanel": "emailwb.ui.panels",
    "PrioritiesPanel": "emailwb.ui.panels",
    "AuditPanel": "emailwb.ui.audit_panel",
    "ComparePanel": "emailwb.ui.compare_panel",
    "write_report": "emailwb.ui.report",
    "EmailwbError": "emailwb.errors",
}

__all__ = [
    "PLANS",
    "AuditPanel",
    "ComparePanel",
    "EmailwbError",
    "LaunchPanel",
    "PrioritiesPanel",
    "Processor",
    "PromptLab",
    "PromptVersion",
    "QualityConfig",
    "QualityWatch",
    "RunConfig",
    "RunSummary",
    "Settings",
    "Store",
    "canary",
    "compare_runs",
    "compare_trials",
    "get_plan",
    "ingest",
    "ingest_errors",
    "list_prompts",
    "list_runs",
    "load_labels",
    "load_prompt",
    "load_settings",
    "money_rollup",
    "results_df",
    "results_frame",
    "retry_failed",
    "run_batch",
    "save_prompt",
    "score_runs",
    "status_json",
    "try_prompt",
    "write_report",
]

if TYPE_CHECKING:
    from emailwb.engine.batch import run_batch
    from emailwb.engine.canary import canary
    from emailwb.engine.lab import compare_trials, try_prompt
    from emailwb.engine.library import list_prompts, load_prompt, save_prompt
    from emailwb.engine.processor import Processor, RunSummary
    from emailwb.engine.throughput import status_json
    from emailwb.errors import EmailwbError
    from emailwb.facts.plans import PLANS, get_plan
    from emailwb.facts.records import money_rollup, results_frame
    from emailwb.llm.prompts import PromptVersion
    from emailwb.quality.compare import compare_runs
    from emailwb.quality.gold import load_labels, score_runs
    from emailwb.quality.watch import QualityConfig, QualityWatch
    from emailwb.settings import RunConfig, Settings, load_settings
    from emailwb.store.database import Store
    from emailwb.store.ingest import ingest, ingest_errors
    from emailwb.store.runs import list_runs, results_df, retry_failed
    from emailwb.ui.audit_panel import AuditPanel
    from emailwb.ui.compare_panel import ComparePanel
    from emailwb.ui.panels import LaunchPanel, PrioritiesPanel
    from emailwb.ui.prompt_lab import PromptLab
    from emailwb.ui.report import write_report


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(
            f"module 'emailwb' has no attribute {name!r}; the public names "
            f"are listed in emailwb.__all__"
        )
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return [*globals(), *__all__]
