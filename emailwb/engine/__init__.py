"""Engine: running a batch: the processor, its queue, concurrency, retries and throughput.

``batch.run_batch`` is the entry point (sets up a backend, runs, tears down); ``processor``
owns concurrency, retries and progress and calls its listeners (the quality watch);
``workqueue`` holds pending units in priority order with prompts prepared ahead;
``autotune`` finds the concurrency knee; ``retry`` is the retry policy; ``throughput`` the
live metrics snapshots and ``status --json``; ``canary`` a configuration tried on a
sample of another run's emails; ``reference`` the original design's policies (email-first
prompts, a sleep between emails, a connection per write), kept in one place for A/B tests; ``requests`` builds one request of a plan (schema,
grammar, sampling); ``library`` the saved prompt versions (load, save immutably, list,
diff); ``lab`` tries a prompt version on a sample, cached per prompt hash, and compares
two versions field by field against hand labels.

May import: ``emailwb.errors``, ``emailwb.mail``, ``emailwb.store``, ``emailwb.llm``,
``emailwb.facts``, ``emailwb.settings`` and ``emailwb.quality`` (the processor calls the
quality watch as a listener and carries out its decisions).
"""
