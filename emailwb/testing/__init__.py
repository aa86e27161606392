"""Testing: simulated Ollama and OpenAI-compatible servers and their fault plans.

For tests and benchmarks only: ``servers`` (``SimServer``, in-process or in a thread, and
the out-of-process runner) speak the real protocols over HTTP on loopback, with faults from
``faults`` (timeouts, 5xx, junk, cut replies at the token limit, slow streams). They may
import anything in emailwb; nothing in the library imports them.
"""
