"""Engine: running a batch: the processor, its queue, concurrency, retries and throughput.

``batch.run_batch`` is the entry point (sets up a backend, runs, tears down); ``processor``
owns concurrency, retries and progress and calls its listeners (the quality watch);
``workqueue`` holds pending units in priority order with prompts prepared ahead;
``autotune`` finds the concurrency knee; ``retry`` is the retry policy; ``throughput`` the
live metrics snapshots and ``status --json``.

May import: ``emailwb.errors``, ``emailwb.mail``, ``emailwb.store``, ``emailwb.llm``,
``emailwb.facts`` and ``emailwb.quality``'s watch through its public methods.
"""
