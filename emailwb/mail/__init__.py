"""Mail: from bytes on disk to clean, deduplicated, threaded ``Email`` records in the store.

``rfc822`` (headers, addresses, dates) and ``mimebody`` (the text of a MIME tree) parse one
message; ``message`` is the ``Email`` record and ``parse_email``; ``cleaning`` splits the
sender's new text from quotes, forwards, signatures and disclaimers; ``dedupe`` and
``threads`` group copies and conversations; ``detect`` is the rule-based type and priority
hint used for queue ordering; ``sources`` reads maildirs, mbox, ``.eml`` folders and
CSV/Parquet exports (writing them into a store is ``emailwb.store.ingest``).

May import: ``emailwb.errors`` only. The bottom of the house: nothing here knows about
stores, LLMs, runs or quality.
"""
