"""Scale: handing a run's work to engines beyond one machine and taking the results back.

``batchfiles`` writes a run's pending units as OpenAI batch request files (the format
vLLM's ``run-batch``, the OpenAI Batch API and many servers accept), sharded and with a
manifest, and imports their output files through the same schema guard, composition,
result writer and provenance as a local run (``BatchReplies`` is a backend whose replies
come from those files, so the processor stores them as it stores any reply).
``ray_runner`` sends request files through a Ray Data actor pool to running
OpenAI-compatible servers; ``ray_llm`` hands them to vLLM engines that Ray Data starts
itself (the Ray Data LLM path). Both append to an output file that is their checkpoint.

May import: ``emailwb.engine`` and everything it may import (``emailwb.quality``,
``emailwb.settings``, ``emailwb.facts``, ``emailwb.llm``, ``emailwb.store``,
``emailwb.mail``, ``emailwb.errors``). Nothing but the CLI imports it.
"""
