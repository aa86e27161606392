"""Quality: how good the extractions are, measured, watched and compared.

``measures`` the per-result metrics, deep-check sampling and drift detection;
``grounding`` which extracted values the text supports; ``scoring`` stores each result's
metrics; ``watch`` is the quality watch the processor calls for every result (metrics,
deep checks, drift alarm, rollback decisions); ``judge`` the judge model's second opinion;
``stats`` confidence intervals and non-inferiority; ``audit`` human audits; ``compare`` A/B
verdicts between runs; ``gold`` hand labels and scoring runs against them.

May import: ``emailwb.errors``, ``emailwb.mail``, ``emailwb.store``, ``emailwb.llm``,
``emailwb.facts`` and ``emailwb.settings``. Not the engine: the processor drives the watch
(which returns decisions and holds no processor), never the other way; how quality is
shown lives in ``emailwb.ui``.
"""
