"""Store: one SQLite file (WAL mode) holding mail, runs, results and quality rows.

``database`` is the ``Store`` (one writer thread with batched commits, readers from a pool,
checkpoints on a thread of their own); ``connections`` the connection pool and writer;
``migrations`` the ordered list of named migration functions (never edit a shipped one);
``runs`` the run records and the queries over runs, units and profiles; ``results`` the
writer of one result row per unit; ``ingest`` drives mail sources into the store (parse,
clean, deduplicate, thread), in worker processes for large mailboxes; ``prompts`` the saved prompt versions and the
prompt lab's cached replies.

May import: ``emailwb.errors`` and ``emailwb.mail`` (the ``Email`` record that
``runs.load_emails`` rebuilds, the parsers ``ingest`` runs). Nothing above it: no backends, no processor, no quality.
"""
