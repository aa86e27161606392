"""MIME bodies for ``emailwb.mail.message``: walk the parts, pick the text, list the attachments.

Multipart bodies are split on their boundaries with ``bytes.find`` (no per-line Python
work, so a 50 MB message stays cheap); text/plain is preferred over text/html, HTML-only
mail is turned into readable text with the stdlib ``html.parser``, attachment parts are
named but never decoded, and the decoded text is capped at ``MAX_BODY_CHARS``.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from emailwb.mail.rfc822 import (
    ASCII_SAFE_CHARSETS,
    MAX_BODY_CHARS,
    MAX_HEADER_BYTES,
    MAX_MIME_DEPTH,
    MAX_MIME_PARTS,
    collapse,
    content_params,
    decode_header_bytes,
    decode_text,
    decode_words,
    find_body_start,
    parse_header_block,
    transfer_decode,
)

#: HTML-only bodies longer than this are cut before parsing (html.parser is slow per tag)
MAX_HTML_CHARS = 256_000
_STRAY_LT_RE = re.compile(
    r"<(?!/?[A-Za-z][^<>]*+>|\?[^<>]*+>|![Dd][Oo][Cc][Tt][Yy][Pp][Ee][^<>]*+>)"
)
_PLAIN_CT_RE = re.compile(r"\s*text/plain\s*(?:;|$)", re.IGNORECASE)
_CHARSET_RE = re.compile(r';\s*charset\s*=\s*"?([^";\s]*)', re.IGNORECASE)
_WS_RE = re.compile(r"[ \t\r\f\v]+")
_BLANKS_RE = re.compile(r"\n{3,}")


class _HTMLText(HTMLParser):
    _BLOCK = frozenset(
        (
            "br",
            "p",
            "div",
            "tr",
            "li",
            "ul",
            "ol",
            "table",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "blockquote",
            "pre",
            "hr",
            "section",
            "article",
            "header",
            "footer",
            "title",
            "dd",
            "dt",
        )
    )
    _SKIP = frozenset(("script", "style", "head", "noscript", "template"))

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self.skip += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")
        elif tag in ("td", "th"):
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def _sanitize_html(html: str) -> str:
    """Drop comments and escape every ``<`` that does not open a complete tag.

    ``html.parser`` rescans to the end of the input for each unclosed construct
    (``<?``, ``</``, ``<![``, ``<!--``), which is quadratic on hostile input; after this
    every remaining ``<`` has its ``>`` before the next ``<``, so parsing stays linear.
    """
    if "<!--" in html:
        parts: list[str] = []
        pos = 0
        while (start := html.find("<!--", pos)) >= 0:
            parts.append(html[pos:start])
            end = html.find("-->", start + 4)
            if end < 0:  # unclosed comment: the rest is comment
                pos = len(html)
                break
            pos = end + 3
        parts.append(html[pos:])
        html = "".join(parts)
    return _STRAY_LT_RE.sub("&lt;", html)


def html_to_text(html: str) -> str:
    """Readable text from HTML (stdlib ``html.parser``; script/style contents dropped)."""
    parser = _HTMLText()
    try:
        parser.feed(_sanitize_html(html))
        parser.close()
    except (AssertionError, ValueError):  # very broken markup: keep what was read
        pass
    text = "".join(parser.parts).replace("\xa0", " ")
    lines = [_WS_RE.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANKS_RE.sub("\n\n", "\n".join(lines)).strip()


# --- MIME structure ----------------------------------------------------------------------
def _trim_partial_utf8(data: bytes) -> bytes:
    """Drop an incomplete UTF-8 sequence left at the end of a cut buffer."""
    i, n = len(data) - 1, 0
    while i >= 0 and n < 4 and 0x80 <= data[i] < 0xC0:
        i, n = i - 1, n + 1
    if i >= 0 and data[i] >= 0xC0:
        need = 2 if data[i] < 0xE0 else 3 if data[i] < 0xF0 else 4
        if len(data) - i < need:
            return data[:i]
    return data


def split_multipart(data: bytes, boundary: bytes) -> tuple[list[bytes], bool] | None:
    """Bodies between ``--boundary`` lines (None when there is none) and whether it closed."""
    delim = b"--" + boundary
    nl_delim = b"\n" + delim
    if data.startswith(delim):
        found = 0
    else:
        j = data.find(nl_delim)
        found = j + 1 if j >= 0 else -1
    parts: list[bytes] = []
    content_start: int | None = None
    while found >= 0 and len(parts) <= MAX_MIME_PARTS:
        after = found + len(delim)
        closing = data.startswith(b"--", after)
        eol = data.find(b"\n", after)
        rest = data[after + (2 if closing else 0) : eol if eol >= 0 else len(data)]
        if rest.strip():  # "--boundaryXYZ": a longer string, not our delimiter
            j = data.find(nl_delim, after)
            found = j + 1 if j >= 0 else -1
            continue
        if content_start is not None:
            end = max(content_start, found - 1)
            if end > content_start and data[end - 1] == 0x0D:
                end -= 1
            parts.append(data[content_start:end])
        if closing:
            return parts, True
        if eol < 0:
            return parts, False
        content_start = eol + 1
        j = data.find(nl_delim, eol)
        found = j + 1 if j >= 0 else -1
    if content_start is None:
        return None
    if found < 0:
        parts.append(data[content_start:])
    return parts, False


def split_part(part: bytes, defects: list[str]) -> tuple[dict[str, str], bytes]:
    """A MIME part's own headers and body (no headers when it starts with a blank line)."""
    if part.startswith((b"\n", b"\r\n")):
        return {}, part[1 if part[:1] == b"\n" else 2 :]
    hend, bstart = find_body_start(part)
    block = part[:MAX_HEADER_BYTES] if hend < 0 else part[:hend]
    text, note = decode_header_bytes(block)
    h, count, rest = parse_header_block(text)
    if not count or rest.strip():
        defects.append("MIME part without headers; read as plain text")
        return {}, part
    if note:
        defects.append(note)
    return h, (b"" if hend < 0 else part[bstart:])


def plain_ascii_body(h: dict[str, str], data: bytes) -> tuple[str, str] | None:
    """(text, charset) for the common case: one 7bit/8bit text/plain ASCII part; else None.

    Skips all MIME machinery; ``BodyWalker`` handles everything else.
    """
    ct = h.get("content-type")
    charset = ""
    if ct is not None:
        if not _PLAIN_CT_RE.match(ct):
            return None
        m = _CHARSET_RE.search(ct)
        if m:
            charset = m.group(1).lower()
            if charset not in ASCII_SAFE_CHARSETS:
                return None
    cte = h.get("content-transfer-encoding")
    if cte is not None and cte.strip().lower() not in ("7bit", "8bit", "binary", ""):
        return None
    if "content-disposition" in h or len(data) > MAX_BODY_CHARS or not data.isascii():
        return None
    return data.decode("ascii"), charset or "us-ascii"


class BodyWalker:
    """Collects the readable text and the attachment names of a (MIME) message body."""

    def __init__(self, defects: list[str], budget: int = MAX_BODY_CHARS) -> None:
        self.defects = defects
        self.budget = budget
        self.plain: list[str] = []
        self.html: list[str] = []
        self.attachments: list[str] = []
        self.charset = ""
        self.parts = 0
        self.truncated = False

    def text(self) -> str:
        """The body text: text/plain parts, else the HTML parts turned into text."""
        if self.plain:
            return "\n\n".join(self.plain) if len(self.plain) > 1 else self.plain[0]
        if self.html:
            html = "\n".join(self.html)
            if len(html) > MAX_HTML_CHARS:  # html.parser costs microseconds per tag
                self.defects.append(
                    f"HTML body over {MAX_HTML_CHARS:,} characters: only its start turned into text"
                )
                html = html[:MAX_HTML_CHARS]
            return html_to_text(html)
        return ""

    def walk(self, h: dict[str, str], data: bytes, depth: int = 0) -> None:
        """Visit one entity (the message itself, or a part) with its headers ``h``."""
        self.parts += 1
        if self.parts > MAX_MIME_PARTS:
            if self.parts == MAX_MIME_PARTS + 1:
                self.defects.append(f"more than {MAX_MIME_PARTS} MIME parts; the rest skipped")
            return
        ctype, params = content_params(h.get("content-type"))
        main = ctype.partition("/")[0]
        if main == "multipart":
            self._multipart(data, params, depth)
            return
        disp, dparams = content_params(h.get("content-disposition"))
        filename = dparams.get("filename") or params.get("name") or ""
        if filename:
            filename = collapse(decode_words(filename))
        if ctype == "message/rfc822" and depth < MAX_MIME_DEPTH:
            self._embedded(data, depth)
            return
        is_text = ctype in ("", "text/plain", "text/html") or (depth == 0 and main == "text")
        if disp == "attachment" or filename or not is_text:
            self.attachments.append(filename or f"(unnamed {ctype})")
            return
        self._leaf(h, data, params, html=ctype == "text/html")

    def _multipart(self, data: bytes, params: dict[str, str], depth: int) -> None:
        boundary = params.get("boundary", "")
        split = split_multipart(data, boundary.encode("utf-8", "replace")) if boundary else None
        if depth >= MAX_MIME_DEPTH or split is None:
            why = "nested too deep" if depth >= MAX_MIME_DEPTH else "has no usable boundary"
            self.defects.append(f"multipart body {why}; read as plain text")
            self._leaf({}, data, {}, html=False)
            return
        parts, closed = split
        if not closed:
            self.defects.append("multipart body without its closing boundary")
        for part in parts:
            ph, pbody = split_part(part, self.defects)
            self.walk(ph, pbody, depth + 1)

    def _embedded(self, data: bytes, depth: int) -> None:
        hend, bstart = find_body_start(data)
        if hend < 0:
            self._leaf({}, data, {}, html=False)
            return
        text, _ = decode_header_bytes(data[:hend])
        ih = parse_header_block(text)[0]
        inner = BodyWalker(self.defects, self.budget)
        inner.parts = self.parts  # one part budget for the whole message
        inner.walk(ih, data[bstart:], depth + 1)
        self.parts = inner.parts
        self.truncated = self.truncated or inner.truncated
        self.attachments.extend(inner.attachments)
        head = ["---------- Forwarded message ----------"]
        for key in ("from", "date", "subject", "to"):
            if key in ih:
                head.append(f"{key.capitalize()}: {collapse(decode_words(ih[key]))}")
        body = "\n".join(head) + "\n\n" + inner.text()
        self.budget -= len(body)
        self.plain.append(body)

    def _leaf(self, h: dict[str, str], data: bytes, params: dict[str, str], *, html: bool) -> None:
        if self.budget <= 0:
            self.truncated = True
            return
        limit = self.budget
        raw = transfer_decode(data, h.get("content-transfer-encoding", ""), self.defects, limit)
        if len(raw) > limit:
            raw = _trim_partial_utf8(raw[:limit])
            self.truncated = True
        text, charset = decode_text(raw, params.get("charset", ""), self.defects)
        if len(text) > limit:
            text = text[:limit]
            self.truncated = True
        self.budget -= len(text)
        if not self.charset:
            self.charset = charset
        (self.html if html else self.plain).append(text)
