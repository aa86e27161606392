"""Low-level RFC 822 / MIME helpers for ``emailwb.mail.message``: fast, tolerant and bounded.

The job here is speed on the common case (one ``text/plain`` part, as in the whole Enron
corpus) without giving up on real-world mail: header splitting and unfolding, address
lists, dates, MIME parameters (RFC 2231 included), transfer encodings and charsets are
handled with precompiled regexes and C-level ``str``/``bytes``/``binascii`` calls, and
every decode reads only as much input as the body cap needs. Every function is total:
bad input gives a defect note, never an exception (``parse_email`` decides what is fatal).
The MIME tree itself is walked in ``emailwb.mail.mimebody``.
"""

from __future__ import annotations

import binascii
import re
from datetime import UTC, datetime, timedelta, timezone
from email.header import decode_header, make_header
from email.utils import parsedate_to_datetime
from urllib.parse import unquote

#: most characters of decoded body text kept per message (the rest is noted as truncated)
MAX_BODY_CHARS = 2_000_000
#: headers longer than this are not headers: the scan for the header block stops here
MAX_HEADER_BYTES = 1 << 20
#: nesting and part-count bounds for multipart bodies (zip-bomb style inputs)
MAX_MIME_DEPTH = 12
MAX_MIME_PARTS = 2_000
#: dates before this are the corpus's 1979/1980 epoch placeholders
PLACEHOLDER_BEFORE = datetime(1980, 1, 2, tzinfo=UTC)

_JOINED = frozenset(("to", "cc", "bcc", "references"))
_SEPARATOR_RE = re.compile(rb"\n\r?\n")
_ANGLE_ID_RE = re.compile(r"<([^<>]*)>")
_PARAM_RE = re.compile(r';\s*([^\s=;"]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)')
_ADDR_TOKEN_RE = re.compile(r'"(?:[^"\\]|\\.)*"?|<[^<>]*>?|\((?:[^()\\]|\\.)*\)?|[,;:]|[^",;:<(]+')
_DATE_RE = re.compile(
    r"\s*(?:[A-Za-z]{3,9},?\s*)?(\d{1,2})\s+([A-Za-z]{3})[A-Za-z]*\.?\s+(\d{4})\s+"
    r"(\d{1,2}):(\d{2})(?::(\d{2}))?\s*([+-])(\d{2})(\d{2})"
)
_MONTHS = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_TZ_CACHE: dict[int, timezone] = {}
_DATE_CACHE: dict[str, tuple[datetime | None, str | None]] = {}
_DATE_CACHE_SIZE = 8192
_B64_JUNK_RE = re.compile(rb"[^A-Za-z0-9+/]")

# Charsets that are supersets of ASCII: pure-ASCII bytes decode the same in all of them.
ASCII_SAFE_CHARSETS = frozenset(
    (
        "",
        "us-ascii",
        "ascii",
        "ansi_x3.4-1968",
        "utf-8",
        "utf8",
        "iso-8859-1",
        "latin-1",
        "latin1",
        "iso-8859-15",
        "iso-8859-2",
        "windows-1252",
        "cp1252",
        "windows-1250",
        "windows-1251",
        "koi8-r",
        "iso-2022-jp",
        "gb2312",
        "gbk",
        "big5",
        "shift_jis",
        "euc-jp",
        "euc-kr",
    )
)
_UNKNOWN_CHARSETS = frozenset(("unknown", "unknown-8bit", "x-unknown", "default", "x-user-defined"))


# --- headers ---------------------------------------------------------------------------
def find_body_start(raw: bytes) -> tuple[int, int]:
    """(end of the header block, start of the body) in ``raw``; (-1, -1) with no blank line."""
    m = _SEPARATOR_RE.search(raw, 0, MAX_HEADER_BYTES + 3)
    if m is None:
        return -1, -1
    return m.start() + 1, m.end()


def decode_header_bytes(block: bytes) -> tuple[str, str | None]:
    """Header bytes to text and a defect note when they were not ASCII (line ends kept)."""
    if block.isascii():
        return block.decode("ascii"), None
    try:
        return block.decode("utf-8"), None
    except UnicodeDecodeError:
        return block.decode("cp1252", errors="replace"), "non-ASCII header bytes decoded as cp1252"


def parse_header_block(text: str) -> tuple[dict[str, str], int, str]:
    """Parse a header block into lower-cased name -> unfolded value.

    Returns the dict, the number of header fields, and the text from the first line that
    is neither a field nor a continuation on ("" when there is none). The first occurrence
    of a name wins, except that repeated To/Cc/Bcc/References are joined with commas.
    """
    if text[:1] in " \t":
        return _parse_header_lines(text)
    h: dict[str, str] = {}
    last = ""  # key whose value continuation lines extend ("" after an ignored repeat)
    lines = text.splitlines()
    for line in lines:
        c = line[:1]
        if c == " " or c == "\t":
            if last:
                h[last] += line
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or " " in name or "\t" in name:
            return _parse_header_lines(text)
        key = name.lower()
        if key in h:
            if key in _JOINED:
                h[key] += "," + value
                last = key
            else:
                last = ""
            continue
        h[key] = value
        last = key
    return h, len(lines), ""


def _parse_header_lines(text: str) -> tuple[dict[str, str], int, str]:
    """``parse_header_block`` for blocks with stray lines or "Name :" fields."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    h: dict[str, str] = {}
    count = 0
    last = ""  # key whose value continuation lines extend ("" after an ignored repeat)
    pos = 0
    for line in text.split("\n"):
        if not line:
            pos += 1
            continue
        c = line[0]
        if c == " " or c == "\t":
            if not count:
                return h, count, text[pos:]
            if last:
                h[last] += line
        else:
            colon = line.find(":")
            name = line[:colon]
            if colon <= 0 or " " in name or "\t" in name:
                name = name.rstrip(" \t")
                if colon <= 0 or not name or " " in name or "\t" in name:
                    return h, count, text[pos:]
            count += 1
            key = name.lower()
            if key in h:
                if key in _JOINED:
                    h[key] += "," + line[colon + 1 :]
                    last = key
                else:
                    last = ""
            else:
                h[key] = line[colon + 1 :]
                last = key
        pos += len(line) + 1
    return h, count, ""


def decode_words(value: str) -> str:
    """Decode RFC 2047 encoded words (only looked at when ``=?`` is present)."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError, binascii.Error, AssertionError):
        return value


def collapse(value: str) -> str:
    """Collapse all runs of whitespace to single spaces and strip."""
    return " ".join(value.split())


def message_id(value: str | None) -> str:
    """The id inside ``<...>`` (or the bare value), whitespace removed; "" when none."""
    if not value:
        return ""
    v = value.strip()
    if v[:1] == "<" and v[-1:] == ">" and " " not in v and "<" not in v[1:]:
        return v[1:-1]  # the common "<id@host>"
    m = _ANGLE_ID_RE.search(value)
    found = m.group(1) if m else value
    return "".join(found.split())


def id_list(value: str | None) -> list[str]:
    """All message ids of a References header, in order, without <>."""
    if not value:
        return []
    ids = ["".join(x.split()) for x in _ANGLE_ID_RE.findall(value)]
    if not ids:
        ids = value.replace(",", " ").split()
    return [x for x in ids if x]


# --- addresses -------------------------------------------------------------------------
def _clean_addr(addr: str) -> str:
    addr = addr.strip().strip("'\"").strip()
    if addr[:7].lower() == "mailto:":
        addr = addr[7:]
    return addr.lower()


def parse_addresses(value: str | None) -> list[tuple[str, str]]:
    """(display name, lower-cased address) pairs; entries without an address give ""."""
    if not value:
        return []
    if not ('"' in value or "<" in value or "(" in value or ":" in value or ";" in value):
        out = []
        for part in value.split(","):
            part = part.strip()
            if part:
                out.append(("", _clean_addr(part)) if "@" in part else (part, ""))
        return out
    out = []
    name_parts: list[str] = []
    comment = ""
    angle: str | None = None

    def flush() -> None:
        nonlocal angle, comment
        name = collapse(" ".join(name_parts))
        if angle is not None:
            out.append((name or comment, _clean_addr(angle)))
        elif "@" in name and " " not in name:
            out.append((comment, _clean_addr(name)))
        elif name or comment:
            out.append((name or comment, ""))
        name_parts.clear()
        angle, comment = None, ""

    for tok in _ADDR_TOKEN_RE.findall(value):
        c = tok[0]
        if c == "," or c == ";":
            flush()
        elif c == ":":
            if angle is None:  # "group name:" -> drop the group name
                name_parts.clear()
        elif c == '"':
            inner = tok[1:-1] if tok.endswith('"') and len(tok) > 1 else tok[1:]
            name_parts.append(inner.replace('\\"', '"').replace("\\\\", "\\"))
        elif c == "<":
            angle = tok[1:-1] if tok.endswith(">") else tok[1:]
        elif c == "(":
            comment = collapse(tok[1:-1] if tok.endswith(")") else tok[1:])
        else:
            name_parts.append(tok)
    flush()
    return out


def addresses(value: str | None) -> list[str]:
    """Lower-cased addresses of an address-list header (entries without '@' dropped)."""
    if not value:
        return []
    if '"' in value or "<" in value or "(" in value or ":" in value or ";" in value:
        return [addr for _, addr in parse_addresses(value) if "@" in addr]
    if "'" in value:  # Outlook's 'addr@x.com': strip the quotes, keep o'brien@x.com
        return [a for a in (x.strip().strip("'") for x in value.lower().split(",")) if "@" in a]
    return [a for a in (x.strip() for x in value.lower().split(",")) if "@" in a]


def display_name(value: str | None) -> str:
    """A name from an X-From style header: ``Davis, Pete </O=ENRON/...>`` -> ``Davis, Pete``."""
    if not value:
        return ""
    i = value.find("<")
    name = value[:i] if i > 0 else value
    return collapse(name.strip().strip("'\"").strip())


# --- dates -----------------------------------------------------------------------------
def parse_date(value: str | None) -> tuple[datetime | None, str | None]:
    """(UTC datetime, flag): flag is None, "missing", "unparseable" or "placeholder".

    Results are memoised per exact header text (copies of a message share it).
    """
    if value is None or not value.strip():
        return None, "missing"
    hit = _DATE_CACHE.get(value)
    if hit is None:
        if len(_DATE_CACHE) >= _DATE_CACHE_SIZE:
            _DATE_CACHE.clear()
        hit = _DATE_CACHE[value] = _parse_date(value)
    return hit


def _parse_date(value: str) -> tuple[datetime | None, str | None]:
    dt: datetime | None = None
    m = _DATE_RE.match(value)
    if m:
        day, mon, year, hour, minute, sec, sign, oh, om = m.groups()
        month = _MONTHS.get(mon.lower())
        if month:
            offset = (int(oh) * 60 + int(om)) * (-1 if sign == "-" else 1)
            tz = _TZ_CACHE.get(offset)
            if tz is None:
                try:
                    tz = _TZ_CACHE.setdefault(offset, timezone(timedelta(minutes=offset)))
                except ValueError:
                    tz = None
            if tz is not None:
                try:
                    dt = datetime(
                        int(year), month, int(day), int(hour), int(minute), int(sec or 0), tzinfo=tz
                    )
                except ValueError:
                    dt = None
    if dt is None:
        try:
            dt = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError, AttributeError):
            return None, "unparseable"
        if dt is None:
            return None, "unparseable"
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
    try:
        dt = dt.astimezone(UTC)
    except (OverflowError, ValueError):
        return None, "unparseable"
    if dt < PLACEHOLDER_BEFORE:
        return dt, "placeholder"
    return dt, None


# --- MIME parameters and bodies ----------------------------------------------------------
def content_params(value: str | None) -> tuple[str, dict[str, str]]:
    """``text/plain; charset="x"`` -> ("text/plain", {"charset": "x"}); RFC 2231 decoded."""
    if not value:
        return "", {}
    semi = value.find(";")
    ctype = (value if semi < 0 else value[:semi]).strip().lower()
    params: dict[str, str] = {}
    if semi < 0:
        return ctype, params
    extended: dict[str, list[tuple[int, bool, str]]] = {}
    for key, val in _PARAM_RE.findall(value, semi):
        key = key.lower()
        val = val.strip()
        if val.startswith('"'):
            val = val[1:-1] if val.endswith('"') and len(val) > 1 else val[1:]
            val = val.replace('\\"', '"')
        if "*" in key:
            base, _, rest = key.partition("*")
            encoded = rest.endswith("*") or rest == ""
            num = rest.rstrip("*")
            extended.setdefault(base, []).append((int(num) if num.isdigit() else 0, encoded, val))
        else:
            params.setdefault(key, val)
    for base, pieces in extended.items():
        pieces.sort(key=lambda p: p[0])
        charset = "utf-8"
        text = []
        for i, (_, encoded, val) in enumerate(pieces):
            if encoded:
                if i == 0 and val.count("'") >= 2:
                    charset, _, val = val.split("'", 2)
                try:
                    val = unquote(val, encoding=charset or "utf-8", errors="replace")
                except (LookupError, ValueError):
                    val = unquote(val, encoding="latin-1")
            text.append(val)
        params[base] = "".join(text)
    return ctype, params


def transfer_decode(data: bytes, cte: str, defects: list[str], limit: int) -> bytes:
    """Undo the Content-Transfer-Encoding, reading at most what ``limit`` bytes need."""
    cte = cte.strip().lower()
    if cte == "base64":
        enc = data[: limit * 2 + 1024]
        try:
            out = binascii.a2b_base64(enc)
        except binascii.Error:
            cleaned = _B64_JUNK_RE.sub(b"", enc)
            cleaned = cleaned[: len(cleaned) // 4 * 4]
            try:
                out = binascii.a2b_base64(cleaned)
            except binascii.Error:
                defects.append("base64 body could not be decoded; kept as text")
                out = enc
            else:
                if len(enc) == len(data):
                    defects.append("damaged base64 body (decoded what was readable)")
    elif cte == "quoted-printable":
        out = binascii.a2b_qp(data[: limit * 3 + 1024])
    else:
        if cte and cte not in ("7bit", "8bit", "binary"):
            defects.append(f"unknown Content-Transfer-Encoding {cte!r}; body kept as is")
        out = data[: limit + 1]
    return out


def decode_text(data: bytes, charset: str, defects: list[str]) -> tuple[str, str]:
    """Bytes to text with the declared charset; on a lie falls back to utf-8, then cp1252."""
    cs = charset.strip().strip("'\"").lower()
    if data.isascii() and cs in ASCII_SAFE_CHARSETS:
        return data.decode("ascii"), cs or "us-ascii"
    tried = ""
    if cs and cs not in _UNKNOWN_CHARSETS:
        try:
            return data.decode(cs), cs
        except UnicodeDecodeError:
            tried = cs
            defects.append(f"body is not valid {charset[:40]!r}")
        except (LookupError, ValueError):  # unknown, or not a text codec ("base64", "zlib")
            defects.append(f"unknown charset {charset[:40]!r}")
    if tried not in ("utf-8", "utf8"):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            if cs:
                defects.append("body decoded as utf-8")
            return text, "utf-8"
    text = data.decode("cp1252", errors="replace")
    lost = " with replacement characters" if "\ufffd" in text else ""
    defects.append(f"body decoded as cp1252{lost}")
    return text, "cp1252"


def normalise_newlines(text: str) -> str:
    """CRLF and lone CR to LF."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text
