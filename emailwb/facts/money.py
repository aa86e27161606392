"""Money mentions in business mail, and numbers that can ground an extracted amount.

``find_money`` finds $1,234.56, $5 million, $5MM, $300K, $.5 million, US$/USD/Cdn$/C$/EUR/
€/£/¥/Rs amounts, "1,000 dollars", "5 cents", ranges ("$5-7 million", "$5 to $7 million":
two mentions, the scale shared), negatives (-$5, ($2,000,000), $(17) million) and unit
prices ("$0.18/MMBtu", "$250 per MWh": ``unit``). Every mention needs a currency marker, so
phone numbers, dates, times, percentages and plain counts never match. A lone "M" is read as
million (Enron's usage: "$9.086 M"); ``Money.candidates`` also offers the thousand reading.
``plain_numbers`` and ``as_number`` serve grounding: numbers without a currency.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

_NUM = r"(?>\d{1,3}(?:\.\d{3})+,\d{1,2}(?!\d)|\d{1,3}(?:\.\d{3}){2,}(?![\d,])|\d+(?:,\d+)*(?:\.\d+)?|\.\d+)"
_SCALE = r"(?:(?i:thousand|millions?|mill|mln|mil|billions?|bn|trillions?|tn|crores?|lakhs?)|MMs?|mm|M|m|K|k|B|b)(?!\w)"
# a scale word may sit on the next line of hard-wrapped mail ("$5\nmillion")
_SCALE_AT = rf"(?:(?:[ \t]*\r?\n(?=[ \t]*(?i:thousand|millions?|billions?|trillions?)\b))?[ \t]*(?P<scale>{_SCALE}))?"
_SUFFIX = r"(?:US[ \t]?dollars|dollars?|bucks|USD|CAD|EUR|GBP|JPY|CHF|euros?|pounds[ \t]+sterling|sterling|yen|rupees|cents?|¢)(?![A-Za-z])"
_UNIT = r"(?:[ \t]*(?:/|\bper[ \t]+)[ \t]?(?P<unit>[A-Za-z][A-Za-z\-]{0,15}))?"
_RANGE = rf"(?:(?:[ \t]*[-–—][ \t]*|[ \t]+to[ \t]+)(?P<num2>{_NUM})(?![\d,]|-\d|[/.]\d))?"
_PREFIX_RE = re.compile(
    r"(?P<sign>(?<![\w.,)])[-−])?"
    r"(?P<cur>US[ \t]?\$|U\.S\.[ \t]?\$|C(?:dn|DN|AD)?[ \t]?\$|[AR]\$|NZ\$|HK\$|\$|€|£|¥"
    r"|\b(?:USD|CAD|EUR|GBP|JPY|CHF|AUD|INR|BRL|Rs\.?)(?=[ \t]?[\d.(-]))"
    rf"[ \t]*(?P<sign2>[-−])?(?P<open>\()?[ \t]*(?P<num>{_NUM})(?P<close>\))?(?!\d){_RANGE}"
    rf"{_SCALE_AT}(?:[ \t]+(?:dollars?|USD)(?![A-Za-z]))?{_UNIT}"
)
_SUFFIX_RE = re.compile(
    rf"(?<![\w.,$€£/\-])(?P<sign>[-−](?=\d))?(?P<num>{_NUM})(?!\d){_RANGE}"
    rf"{_SCALE_AT}(?:[ \t]*|-)(?P<cur>{_SUFFIX}){_UNIT}"
)
_PLAIN_RE = re.compile(
    rf"(?<![\w.,/:\-$])(?P<num>{_NUM})(?:[ \t]*(?P<scale>{_SCALE}))?(?![\w/:]|-\d|\.\d)"
)
_SCALES = {
    "thousand": 1e3,
    "k": 1e3,
    "m": 1e6,
    "mm": 1e6,
    "mil": 1e6,
    "mill": 1e6,
    "mln": 1e6,
    "million": 1e6,
    "millions": 1e6,
    "mms": 1e6,
    "b": 1e9,
    "bn": 1e9,
    "billion": 1e9,
    "billions": 1e9,
    "tn": 1e12,
    "trillion": 1e12,
    "trillions": 1e12,
    "crore": 1e7,
    "crores": 1e7,
    "lakh": 1e5,
    "lakhs": 1e5,
}
_CURRENCIES = {
    "$": "USD",
    "us$": "USD",
    "usd": "USD",
    "dollar": "USD",
    "dollars": "USD",
    "usdollars": "USD",
    "bucks": "USD",
    "cents": "USD",
    "cent": "USD",
    "¢": "USD",
    "c$": "CAD",
    "cdn$": "CAD",
    "cad$": "CAD",
    "cad": "CAD",
    "a$": "AUD",
    "aud": "AUD",
    "r$": "BRL",
    "brl": "BRL",
    "nz$": "NZD",
    "hk$": "HKD",
    "€": "EUR",
    "eur": "EUR",
    "euro": "EUR",
    "euros": "EUR",
    "£": "GBP",
    "gbp": "GBP",
    "poundssterling": "GBP",
    "sterling": "GBP",
    "¥": "JPY",
    "jpy": "JPY",
    "yen": "JPY",
    "chf": "CHF",
    "inr": "INR",
    "rs": "INR",
    "rupees": "INR",
}


@dataclass(frozen=True, slots=True)
class Money:
    """One money mention. ``value`` is signed and scaled ($5MM -> 5e6; "M" read as million)."""

    value: float
    currency: str  # ISO code; a bare "$" is USD
    span: tuple[int, int]  # character offsets in the text searched
    text: str  # the mention as written
    unit: str = ""  # "MWh" for "$20/MWh" (a unit price), "cents" for "50-cent", "" for a total
    scale: str = ""  # the scale word as written ("MM", "million", "K"), "" for none
    marked: str = "currency"  # how it is known to be money: currency | table | fraction

    @property
    def kind(self) -> str:
        """``unit_price`` for a price per unit (``$250/MWh``, ``50 cents``), else ``total``."""
        return "unit_price" if self.unit else "total"

    @property
    def negative(self) -> bool:
        return self.value < 0

    def candidates(self) -> set[float]:
        """Values this mention plausibly means: signed, absolute, unscaled, and M as thousand."""
        out = {self.value, abs(self.value)}
        factor = _SCALES.get(self.scale.lower(), 1.0)
        if factor != 1.0:
            out.add(abs(self.value) / factor)
        if self.scale in ("M", "m"):  # old finance usage: M = thousand, MM = million
            out.add(abs(self.value) / 1e3)
        return out


def parse_num(text: str) -> float:
    """'1,234.5' -> 1234.5; European '1.000.000,50' -> 1000000.5."""
    if re.fullmatch(r"\d{1,3}(?:\.\d{3})+(?:,\d+)?", text) and (text.count(".") > 1 or "," in text):
        return float(text.replace(".", "").replace(",", "."))  # 1.000.000,50 (European)
    return float(text.replace(",", ""))


def _scaled(num: str, scale: str) -> float:
    factor = _SCALES.get(scale.lower(), 1.0)
    return float(Decimal(repr(parse_num(num))) * Decimal(repr(factor)))


def _mention(m: re.Match[str], text: str, num_group: str) -> Money:
    cur_raw = re.sub(r"[\s.]", "", m.group("cur")).lower()
    currency = _CURRENCIES.get(cur_raw, "USD")
    scale = m.group("scale") or ""
    value = _scaled(m.group(num_group), scale)
    if cur_raw in ("cents", "cent", "¢"):
        value /= 100.0
    start, end = m.span()
    if num_group == "num2":
        start = m.start("num2")
    elif m.group("num2"):
        end = m.end("num")
    negative = bool(m.group("sign") or m.groupdict().get("sign2"))
    before, after = text[:start].rstrip(" \t"), text[end:].lstrip(" \t")
    opened, closed = bool(m.groupdict().get("open")), bool(m.groupdict().get("close"))
    if opened and closed:  # $(17) million
        negative = True
    elif (
        num_group == "num"
        and not m.group("unit")
        and before.endswith("(")
        and (closed or after.startswith(")"))
    ):  # ($2,000,000) / ($279K)
        negative = True
        start, end = len(before) - 1, end if closed else len(text) - len(after) + 1
    elif closed and not m.group("scale") and not m.group("unit"):  # "(at $40)": not ours
        end = m.end("num")
    return Money(
        -value if negative else value,
        currency,
        (start, end),
        text[start:end],
        m.group("unit") or ("cents" if cur_raw in ("cents", "cent", "¢") else ""),
        scale,
    )


#: substrings every match of each pattern contains (the patterns are case-sensitive): a text
#: with none of them cannot match, and is not scanned (most emails name no currency)
_PREFIX_TOKENS = (
    "$",
    "€",
    "£",
    "¥",
    "USD",
    "CAD",
    "EUR",
    "GBP",
    "JPY",
    "CHF",
    "AUD",
    "INR",
    "BRL",
    "Rs",
)
_SUFFIX_TOKENS = (
    "dollar",
    "bucks",
    "USD",
    "CAD",
    "EUR",
    "GBP",
    "JPY",
    "CHF",
    "euro",
    "sterling",
    "yen",
    "rupees",
    "cent",
    "¢",
)


def find_money(text: str) -> list[Money]:
    """Every money mention in ``text``, in order; a range "$5-7 million" gives two.

    Besides currency-marked mentions: share prices written as fractions ("84 3/8") where the
    sentence speaks of a price, and figures without a currency in a cost table that the text
    marks as money (a block of lines one of which holds a currency-marked total).
    """
    marked = _find_money(text)
    extra = [*_fractions(text), *_table_figures(text, marked)]
    if not extra:
        return list(marked)
    taken = [m.span for m in marked]
    out = list(marked)
    for money in sorted(extra, key=lambda m: m.span):
        if any(s < money.span[1] and money.span[0] < e for s, e in taken):
            continue
        taken.append(money.span)
        out.append(money)
    return sorted(out, key=lambda m: m.span)


#: "84 3/8": a whole number and a fraction in eighths, sixteenths... (stock quotes)
_MIXED_RE = re.compile(
    r"(?<![\w/.,$])(?P<whole>\d{1,4})[ \t]+(?P<num>\d{1,2})/(?P<den>2|4|8|16|32|64)(?![\w/])"
)
_PRICE_WORDS_RE = re.compile(
    r"\b(?:stock|shares?|price[ds]?|clos(?:e|ed|ing)|traded?|trading|quoted?|bid|offer|"
    r"up|down|high|low|at)\b",
    re.IGNORECASE,
)


def _fractions(text: str) -> list[Money]:
    if "/" not in text:
        return []
    out = []
    for m in _MIXED_RE.finditer(text):
        num, den = int(m.group("num")), int(m.group("den"))
        if not 0 < num < den:
            continue
        line_start = text.rfind("\n", 0, m.start()) + 1
        line_end = text.find("\n", m.end())
        line = text[line_start : line_end if line_end >= 0 else len(text)]
        if not _PRICE_WORDS_RE.search(line):
            continue
        value = int(m.group("whole")) + num / den
        out.append(Money(value, "USD", m.span(), m.group(0), "share", "", "fraction"))
    return out


#: a figure of a cost table: thousands separators or cents, or a scale ("2.9M")
_FIGURE_RE = re.compile(
    r"(?<![\w.,/:$\-])(?P<sign>\()?(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d{1,2})?|\d+\.\d{2}|\d+(?:\.\d+)?"
    r"(?=[ \t]?(?:MM|M|K)\b))(?P<scale>[ \t]?(?:MM|M|K)\b)?(?P<close>\))?(?![\w%/:]|\.\d|[ \t]*(?:%|percent))"
)
_NOT_MONEY_AFTER_RE = re.compile(
    r"[ \t]*(?:MW|MWh|mw|MMBtu|mmbtu|Dth|dth|MMcf|mmcf|Bcf|bcf|bbl|barrels?|shares?|units?|"
    r"hours?|hrs|days?|months?|years?|people|employees|customers|kw|KW|kWh|tons?|lbs?|miles?|"
    r"feet|ft|sq|acres?|MMBTU|cf|contracts?|lots?)\b"
)


def _table_figures(text: str, marked: tuple[Money, ...]) -> list[Money]:
    """Figures without a currency in a block of lines that the text marks as money."""
    if "\n" not in text or not any(ch.isdigit() for ch in text):
        return []
    out: list[Money] = []
    pos = 0
    for block in re.split(r"(\n[ \t]*\n)", text):
        start, pos = pos, pos + len(block)
        if block.startswith("\n") or block.count("\n") < 1:
            continue
        end = start + len(block)
        currency = [m for m in marked if start <= m.span[0] < end and not m.unit]
        if not currency:  # a heading alone ("Total Available") marks counts as often as money
            continue
        found = []
        for m in _FIGURE_RE.finditer(block):
            if _NOT_MONEY_AFTER_RE.match(block, m.end()):
                continue
            if re.fullmatch(r"(?:19|20)\d\d", m.group("num")):
                continue
            found.append(m)
        lines_with_figures = len({block.count("\n", 0, m.start()) for m in found})
        if lines_with_figures < 2:
            continue
        cur = currency[0].currency if currency else "USD"
        for m in found:
            scale = (m.group("scale") or "").strip()
            value = _scaled(m.group("num"), scale)
            negative = bool(m.group("sign") and m.group("close"))
            s, e = m.span() if negative else m.span("num")
            if scale and not negative:
                e = m.end("scale")
            out.append(
                Money(
                    -value if negative else value,
                    cur,
                    (start + s, start + e),
                    text[start + s : start + e],
                    "",
                    scale,
                    "table",
                )
            )
    return out


@lru_cache(maxsize=16)  # metrics_for asks several times about the same email
def _find_money(text: str) -> tuple[Money, ...]:
    found: list[Money] = []
    for rx, tokens in ((_PREFIX_RE, _PREFIX_TOKENS), (_SUFFIX_RE, _SUFFIX_TOKENS)):
        if not any(token in text for token in tokens):
            continue
        for m in rx.finditer(text):
            if (
                rx is _SUFFIX_RE
                and not m.group("scale")
                and re.fullmatch(r"(?:19|20)\d\d", m.group("num"))
                and text[max(0, m.start() - 3) : m.start()].lower() == "in "
            ):
                continue  # "in 2001 dollars"
            last = m.end("num2") if m.group("num2") else m.end("num")
            if text[last : last + 1].isalpha() and last not in (m.start("scale"), m.start("cur")):
                continue  # "$2A04" (an error code), "$10MMin"
            found.append(_mention(m, text, "num"))
            if m.group("num2"):
                found.append(_mention(m, text, "num2"))
    found.sort(key=lambda x: (x.span[0], -x.span[1]))
    out: list[Money] = []
    for money in found:
        if out and money.span[0] < out[-1].span[1]:
            continue  # overlaps a mention already kept ("$11 million dollars")
        out.append(money)
    for i in range(len(out) - 1):  # "$5 to $7 million" / "$5-$7/MWh": share scale and unit
        a, b = out[i], out[i + 1]
        if not re.fullmatch(r"[ \t]*(?:[-–—]|to)[ \t]*", text[a.span[1] : b.span[0]]):
            continue
        value, scale = a.value, a.scale
        factor = _SCALES.get(b.scale.lower(), 1.0)
        if not a.scale and b.scale and abs(a.value) <= abs(b.value) / factor:
            value, scale = a.value * factor, b.scale
        out[i] = Money(value, a.currency, a.span, a.text, a.unit or b.unit, scale)
    return tuple(out)


def plain_numbers(text: str) -> set[float]:
    """Numbers without a currency that can still ground an amount (1,000+ or decimal or scaled)."""
    out: set[float] = set()
    for m in _PLAIN_RE.finditer(text):
        num, scale = m.group("num"), m.group("scale") or ""
        value = parse_num(num)
        if scale:
            out.update({value, value * _SCALES[scale.lower()]})
        elif ("," in num or "." in num or value >= 1000) and not re.fullmatch(
            r"(?:19|20)\d\d", num
        ):
            out.add(value)
    return out


def as_number(value: Any) -> float | None:
    """An extracted amount's value as a float: numbers as they are, "$1.2 million" parsed."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        money = find_money(value)
        if money:
            return money[0].value
        nums = [
            parse_num(m.group("num")) * _SCALES.get((m.group("scale") or "").lower(), 1.0)
            for m in _PLAIN_RE.finditer(value)
        ]
        return nums[0] if nums else None
    return None


def close(a: float, b: float) -> bool:
    """Same amount up to sign and 0.1% rounding."""
    return math.isclose(abs(a), abs(b), rel_tol=1e-3, abs_tol=0.005)
