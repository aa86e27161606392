"""emailwb: push large mailboxes through local LLMs and get structured business intelligence out."""

__version__ = "0.1.0"
