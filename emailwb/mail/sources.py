"""Reading mail: walking folders, splitting mbox files, CSV/Parquet rows, and parsing one
message into a compact row in a worker process.

``process_chunk`` is the worker entry point of ``emailwb.store.ingest``: for each task (a file path
or raw bytes) it reads the bytes once, hashes them, parses them with
``emailwb.mail.message.parse_email`` and returns either an ``ok`` row ready for ``executemany``
or an ``err`` record (path, actionable reason, first 64 KiB). It never raises. Containers
are streamed: ``iter_mbox`` reads an mbox line by line and ``iter_table`` reads CSV and
Parquet files in batches through polars, so no container is ever loaded whole.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tracemalloc
from collections.abc import Iterator, Sequence
from datetime import UTC
from typing import Any, BinaryIO

from emailwb.errors import EmailParseError, InputError, NotAMessage
from emailwb.mail.dedupe import content_key
from emailwb.mail.message import normalize_subject, parse_email

#: messages larger than this go to ingest_errors instead of the store
MAX_MESSAGE_BYTES = 25 * 1024 * 1024
#: bytes of a bad input kept in ingest_errors.raw_head
HEAD_BYTES = 64 * 1024
#: message files per work chunk handed to a worker process
CHUNK_MESSAGES = 64
#: a chunk of container messages is cut at this many bytes
CHUNK_BYTES = 8 * 1024 * 1024
#: column names recognised as holding the raw message in CSV / Parquet files
RAW_COLUMNS = ("message", "raw", "email", "raw_message", "rfc822", "mime", "eml")
#: columns naming the original file of a CSV row (used for mailbox/folder hints)
FILE_COLUMNS = ("file", "path", "filename", "source")

_IGNORED_SUFFIXES = frozenset(
    ".md .tsv .json .jsonl .py .ipynb .log .sqlite .sqlite3 .db .sqlite-wal .sqlite-shm"
    " .db-wal .db-shm .sqlite-journal .db-journal .lock .pid".split()
)
_IGNORED_NAMES = frozenset(
    "readme readme.txt license manifest dovecot-uidlist dovecot-keywords dovecot.index"
    " dovecot.index.log dovecot.index.cache subscriptions maildirfolder thumbs.db".split()
)
_MBOX_SUFFIXES = frozenset((".mbox", ".mbx"))
_FROM_LINE = re.compile(rb"From \S+\s+\w{3} \w{3}\s+\d{1,2} \d{1,2}:\d\d")
_NUM = re.compile(r"(\d+)")
_JSON_PLAIN = re.compile(r"[ !#-\[\]-~]*\Z")  # printable ASCII without " and \
# A work task: (source label, file path or raw bytes, mailbox hint, folder hint).
Task = tuple[str, "str | bytes", str, str]
#: defects that only flag a field (kept on the email, not reported in ingest_errors)
_FLAGGED_ONLY = ("unparseable Date", "From header has no address")
# Results: ("ok", sha256, raw, source, email row, content key, warning or None)
#          ("err", source, reason, detail, size, sha256, head, file_level): file_level is
#          True when a whole file failed (unreadable, not a readable container)
#          ("mbox", path): a file too large for one message that looks like an mbox
Result = tuple[Any, ...]


def error_record(
    source: str,
    reason: str,
    head: bytes,
    size: int | None,
    detail: str = "",
    file_level: bool = False,
) -> Result:
    sha = hashlib.sha256(head).hexdigest()
    return ("err", source, reason, detail, size, sha, head[:HEAD_BYTES], file_level)


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB"


def _jl(items: list[str]) -> str:
    """``json.dumps(items)``, with a fast path for plain ASCII strings (addresses, ids)."""
    if not items:
        return "[]"
    joined = '", "'.join(items)
    if _JSON_PLAIN.match(joined):
        return f'["{joined}"]'
    return json.dumps(items)


def parse_message(
    raw: bytes,
    source: str,
    mailbox: str = "",
    folder: str = "",
    max_bytes: int = MAX_MESSAGE_BYTES,
    *,
    whole_file: bool = False,
) -> Result:
    """Hash and parse one raw message into an ``ok`` row or an ``err`` record (never raises).

    ``whole_file``: ``raw`` is a whole file (not a message taken out of a container); input
    that is not mail at all is then a file-level error, not a message read.
    """
    size = len(raw)
    if size > max_bytes:
        return too_big(source, size, max_bytes, raw[:HEAD_BYTES])
    if not raw or raw.isspace():
        return error_record(
            source,
            "empty file or empty message: nothing to ingest; delete it",
            raw,
            size,
            file_level=whole_file,
        )
    sha = hashlib.sha256(raw).hexdigest()
    try:
        em = parse_email(raw, source=source, mailbox=mailbox, folder=folder)
    except NotAMessage as exc:  # not mail at all (binary, no headers)
        return error_record(source, str(exc), raw[:HEAD_BYTES], size, file_level=whole_file)
    except EmailParseError as exc:
        return error_record(source, str(exc), raw[:HEAD_BYTES], size)
    except Exception as exc:  # a parser bug must not stop the ingest
        return error_record(
            source,
            f"the parser failed on this message ({type(exc).__name__}: {exc});"
            " it is kept here, please report it",
            raw[:HEAD_BYTES],
            size,
            detail=repr(exc),
        )
    date = em.date.astimezone(UTC).isoformat() if em.date is not None else None
    row = (
        em.message_id,
        date,
        em.date_flag,
        em.sender,
        em.sender_name,
        _jl(em.to),
        _jl(em.cc),
        _jl(em.bcc),
        em.subject,
        normalize_subject(em.subject),
        em.in_reply_to,
        _jl(em.references),
        em.mailbox,
        em.folder,
        source,
        em.body,
        em.new_text,
        em.quoted,
        em.forwarded,
        em.signature,
        em.disclaimer,
        em.charset,
        _jl(em.defects),
        len(em.body),
        len(em.new_text),
    )
    key = content_key(em.sender, em.date, em.subject, em.body)
    notes = [d for d in em.defects if not d.startswith(_FLAGGED_ONLY)]
    warning = None
    if notes:
        warning = (
            f"stored with defects: {'; '.join(notes)}. The message is in the store but its"
            " text may be incomplete or mis-decoded: check it, and export it again from"
            " the mail client if it matters"
        )
    return ("ok", sha, raw, source, row, key, warning)


def too_big(source: str, size: int, max_bytes: int, head: bytes) -> Result:
    return error_record(
        source,
        f"message is {_mb(size)}, over the {_mb(max_bytes)} limit: it was not"
        " stored; raise max_message_bytes to ingest it, or remove the attachment",
        head,
        size,
    )


def read_file(
    path: str, mailbox: str = "", folder: str = "", max_bytes: int = MAX_MESSAGE_BYTES
) -> tuple[list[Result], int | None, float | None]:
    """Read and parse one message file: ``(results, size, mtime)`` (never raises).

    A file that starts with an mbox envelope line is split (its messages are ``path#N``); a
    file too large for one message that looks like an mbox comes back as ``("mbox", path)``
    so the caller can stream it.
    """
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            size = st.st_size
            if size > max_bytes:
                head = f.read(HEAD_BYTES)
                if head.startswith(b"From "):
                    return [("mbox", path)], size, st.st_mtime
                return [too_big(path, size, max_bytes, head)], size, st.st_mtime
            raw = f.read()
    except OSError as exc:
        return (
            [
                error_record(
                    path,
                    f"cannot read the file ({exc.strerror or exc}): check that it"
                    " exists and is readable, then ingest again",
                    b"",
                    None,
                    detail=repr(exc),
                    file_level=True,
                )
            ],
            None,
            None,
        )
    if raw.startswith(b"From ") and _FROM_LINE.match(raw):
        msgs = list(iter_mbox(io.BytesIO(raw), max_bytes))
        if len(msgs) > 1:
            return (
                [
                    _mbox_result(path, n, data, n_bytes, mailbox, folder, max_bytes)
                    for n, data, n_bytes in msgs
                ],
                size,
                st.st_mtime,
            )
        if msgs:
            raw = msgs[0][1]
    return (
        [parse_message(raw, path, mailbox, folder, max_bytes, whole_file=True)],
        size,
        st.st_mtime,
    )


def _mbox_result(
    path: str, n: int, data: bytes, size: int, mailbox: str, folder: str, max_bytes: int
) -> Result:
    source = f"{path}#{n}"
    if size > max_bytes:
        return too_big(source, size, max_bytes, data)
    return parse_message(data, source, mailbox, folder, max_bytes)


def process_chunk(
    tasks: list[Task], max_bytes: int = MAX_MESSAGE_BYTES
) -> list[tuple[list[Result], int | None, float | None]]:
    """Worker entry point: ``(results, size, mtime)`` per task, in task order.

    A task's payload is a file path (read here; size and mtime come from the open file) or
    the raw bytes of a message taken out of a container (size and mtime are None).
    """
    out: list[tuple[list[Result], int | None, float | None]] = []
    for source, payload, mailbox, folder in tasks:
        if isinstance(payload, str):
            out.append(read_file(payload, mailbox, folder, max_bytes))
        else:
            out.append(([parse_message(payload, source, mailbox, folder, max_bytes)], None, None))
    return out


def worker_init() -> None:
    """Pool initializer: a worker forked from a process that traces memory stops tracing."""
    if tracemalloc.is_tracing():
        tracemalloc.stop()


# --- streaming containers -------------------------------------------------------------------
def iter_mbox(f: BinaryIO, max_bytes: int = MAX_MESSAGE_BYTES) -> Iterator[tuple[int, bytes, int]]:
    """Split an mbox stream into ``(n, raw, size)`` without loading the file, n from 1.

    A message starts at a ``From `` line at the top of the file or after a blank line (or one
    that looks like a real envelope line). The envelope line is dropped and ``>From `` lines
    are unescaped. A message over ``max_bytes`` yields only its first 64 KiB (``size`` tells).
    """
    parts: list[bytes] = []
    n, size, prev_blank, at_start, in_message = 0, 0, True, True, False
    keep = True

    def done() -> tuple[int, bytes, int]:
        data = b"".join(parts)
        if keep:  # the blank line before the next envelope belongs to the mbox format
            if data.endswith(b"\r\n\r\n"):
                data = data[:-2]
            elif data.endswith(b"\n\n"):
                data = data[:-1]
        return n, data, size

    while True:
        line = f.readline(1 << 20)
        if not line:
            break
        if at_start and line.startswith(b"From ") and (prev_blank or _FROM_LINE.match(line)):
            if in_message:
                yield done()
            n, parts, size, keep, in_message = n + 1, [], 0, True, True
            prev_blank, at_start = False, line.endswith(b"\n")
            continue
        if not in_message:  # text before the first envelope line: keep it as a message
            n, parts, size, keep, in_message = n + 1, [], 0, True, True
        if at_start and line.startswith(b">") and line.lstrip(b">").startswith(b"From "):
            line = line[1:]
        size += len(line)
        if keep:
            if size > max_bytes:
                keep = False
                head = b"".join(parts)[:HEAD_BYTES]
                parts = [head]
            else:
                parts.append(line)
        prev_blank = at_start and line.strip() == b""
        at_start = line.endswith(b"\n")
    if in_message:
        yield done()


def _pick_column(names: list[str], column: str | None, choices: Sequence[str]) -> str | None:
    if column is not None:
        return column if column in names else None
    lower = {name.lower().strip(): name for name in names}
    return next((lower[c] for c in choices if c in lower), None)


def iter_table(
    path: str, kind: str, column: str | None = None
) -> Iterator[tuple[int, bytes | str | None, str | None]]:
    """Rows ``(n, raw, file)`` of a CSV or Parquet file, read in batches with polars.

    Raises ``InputError`` when no column holds the raw message (naming the columns found).
    """
    import polars as pl

    if kind == "csv":
        lf = pl.scan_csv(path, infer_schema=False, encoding="utf8-lossy", quote_char='"')
    else:
        lf = pl.scan_parquet(path)
    names = lf.collect_schema().names()
    col = _pick_column(names, column, RAW_COLUMNS)
    if col is None:
        wanted = (
            f"no column {column!r}"
            if column
            else "no raw message column (looked for " + ", ".join(RAW_COLUMNS[:3]) + ")"
        )
        raise InputError(
            f"{path} has {wanted}; its columns are: {', '.join(names) or 'none'}",
            hint="pass column=NAME (the column holding the raw RFC 822 message)",
        )
    file_col = _pick_column(names, None, [c for c in FILE_COLUMNS if c != col.lower()])
    cols = [col] + ([file_col] if file_col else [])
    n = 0
    for df in lf.select(cols).collect_batches(chunk_size=256):
        raws = df.get_column(col).to_list()
        files = df.get_column(file_col).to_list() if file_col else [None] * len(raws)
        for raw, name in zip(raws, files, strict=True):
            n += 1
            yield n, raw, name


def natural_key(name: str) -> list[Any]:
    """Sort key putting ``2.eml`` before ``10.eml``."""
    return [int(t) if t.isdigit() else t for t in _NUM.split(name)]


def dir_hints(dirpath: str, root: str) -> tuple[str, str]:
    """Mailbox and folder hints for files in ``dirpath`` (parse_email may prefer headers)."""
    parts = [p for p in dirpath.split(os.sep) if p]
    lower = [p.lower() for p in parts]
    if "maildir" in lower:
        at = len(lower) - 1 - lower[::-1].index("maildir")
        rest = parts[at + 1 :]
        while rest and rest[-1] in ("cur", "new"):
            rest.pop()
        if rest and not rest[0].startswith("."):  # maildir/<user>/<folder> (Enron, CMU)
            return rest[0], "/".join(rest[1:])
        # ~/Maildir with Maildir++ dot-folders: the mailbox is the folder holding it
        return (parts[at - 1] if at else parts[at]), "/".join(p.lstrip(".") for p in rest)
    rel = os.path.relpath(dirpath, root)
    rparts = [] if rel == "." else [p.lstrip(".") or p for p in rel.split(os.sep) if p]
    while rparts and rparts[-1] in ("cur", "new"):
        rparts.pop()
    if len(rparts) >= 2:
        return rparts[0], "/".join(rparts[1:])
    return os.path.basename(root.rstrip(os.sep)), (rparts[0] if rparts else "")


def row_hints(name: str | None, default_mailbox: str) -> tuple[str, str]:
    """Mailbox and folder hints from a CSV row's file column (``allen-p/_sent_mail/1.``)."""
    if not name:
        return default_mailbox, ""
    parts = name.replace("\\", "/").strip("/").split("/")
    if len(parts) >= 3:
        return parts[0], "/".join(parts[1:-1])
    return default_mailbox, (parts[0] if len(parts) == 2 else "")


def file_kind(name: str) -> str:
    """``csv``, ``parquet``, ``mbox``, ``eml`` or ``maildir-file``, by the file name."""
    low = name.lower()
    suffix = os.path.splitext(low)[1]
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in _MBOX_SUFFIXES or low == "mbox":
        return "mbox"
    return "eml" if suffix == ".eml" else "maildir-file"


def is_ignored(name: str) -> bool:
    """Files that sit next to mail but are not mail (README, MANIFEST, databases, hidden)."""
    if name.startswith("."):
        return True
    low = name.lower()
    dot = low.rfind(".")
    return (
        (dot > 0 and low[dot:] in _IGNORED_SUFFIXES)
        or low in _IGNORED_NAMES
        or low.startswith(("readme.", "manifest."))
    )


def read_head(path: str) -> bytes:
    """The first 64 KiB of a file (empty if it cannot be read), kept with its error."""
    try:
        with open(path, "rb") as f:
            return f.read(HEAD_BYTES)
    except OSError:
        return b""
