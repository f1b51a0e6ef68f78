"""Units of scenario files: durations in integer nanoseconds, sizes and bandwidths in bytes.

The simulator counts time in integer nanoseconds so that a run is exact and reproducible; a
scenario file is easier to read in ``"10ms"`` or ``"1.5s"``. Decimal strings are converted
exactly (``Decimal``) and a value that is not a whole number of nanoseconds is refused rather
than rounded, so the file means exactly one run. Sizes reuse
:func:`swiotlb.core.sizing.parse_size` (``4096``, ``0x1000``, ``4K``, ``64M``, ``16GiB``:
binary multiples), plus exact decimals such as ``"1.5M"``.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from swiotlb.core.sizing import parse_size

NS_PER_US = 1_000
NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
NS_PER_MIN = 60 * NS_PER_S
NS_PER_H = 60 * NS_PER_MIN

DURATION_UNITS: dict[str, int] = {
    "ns": 1,
    "us": NS_PER_US,
    "µs": NS_PER_US,  # U+00B5 MICRO SIGN
    "μs": NS_PER_US,  # U+03BC GREEK SMALL LETTER MU
    "ms": NS_PER_MS,
    "s": NS_PER_S,
    "min": NS_PER_MIN,
    "h": NS_PER_H,
}
"""Suffix -> nanoseconds. No bare ``m``: it would be ambiguous between milli and minute."""

_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|µs|μs|ms|s|min|h)\s*")
_DEC_SIZE = re.compile(r"\s*(\d+\.\d+)\s*([kmgt])(i?b)?\s*", re.IGNORECASE)
_SIZE_SHIFT = {"k": 10, "m": 20, "g": 30, "t": 40}
_DURATION_HELP = 'a duration such as "500ns", "2us", "10ms", "1.5s", "10min", "1h", or an integer of nanoseconds'
_SIZE_HELP = 'a size in bytes such as 4096, "0x1000", "4K", "1.5M", "64M", "16GiB"'


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_duration(value: object) -> int:
    """Nanoseconds from an int (already ns) or a string with a unit; exact or ValueError.

    ``"1.5s"`` is 1_500_000_000; ``"1.5ns"`` is refused (not a whole nanosecond); negative
    values and bare numbers in strings are refused, since a unit-less string is more likely a
    mistake than a count of nanoseconds.
    """
    if _is_int(value):
        assert isinstance(value, int)
        if value < 0:
            raise ValueError(f"expected {_DURATION_HELP} (>= 0), got {value}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected {_DURATION_HELP}, got {value!r}")
    m = _DURATION.fullmatch(value)
    if m is None:
        raise ValueError(f"expected {_DURATION_HELP}, got {value!r}")
    try:
        ns = Decimal(m.group(1)) * DURATION_UNITS[m.group(2)]
    except InvalidOperation:  # pragma: no cover - the regex admits only plain decimals
        raise ValueError(f"expected {_DURATION_HELP}, got {value!r}") from None
    if ns != ns.to_integral_value():
        raise ValueError(f"{value!r} is not a whole number of nanoseconds (use a smaller unit)")
    return int(ns)


def format_duration(ns: int) -> str:
    """The shortest exact string for ``ns`` (``parse_duration`` reads it back to ``ns``).

    Picks the largest unit that divides ``ns`` into a value >= 1 with at most three decimals,
    so tables show ``"1.5s"`` and ``"10min"`` rather than long digit runs.
    """
    if not _is_int(ns) or ns < 0:
        raise ValueError(f"format_duration needs an int >= 0, got {ns!r}")
    if ns == 0:
        return "0s"
    for unit, scale in (("h", NS_PER_H), ("min", NS_PER_MIN), ("s", NS_PER_S), ("ms", NS_PER_MS), ("us", NS_PER_US)):
        if ns < scale:
            continue
        if (ns * 1000) % scale == 0:
            return _decimal_text(Decimal(ns) / scale) + unit
    return f"{ns}ns"


def _decimal_text(d: Decimal) -> str:
    text = format(d.normalize(), "f")
    return text


def parse_bytes(value: object) -> int:
    """Bytes from an int or a size string (``parse_size`` forms, plus exact ``"1.5M"``); >= 0."""
    if _is_int(value):
        assert isinstance(value, int)
        if value < 0:
            raise ValueError(f"expected {_SIZE_HELP} (>= 0), got {value}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected {_SIZE_HELP}, got {value!r}")
    m = _DEC_SIZE.fullmatch(value)
    if m is not None:
        exact = Decimal(m.group(1)) * (1 << _SIZE_SHIFT[m.group(2).lower()])
        if exact != exact.to_integral_value():
            raise ValueError(f"{value!r} is not a whole number of bytes")
        return int(exact)
    try:
        return parse_size(value)
    except ValueError:
        raise ValueError(f"expected {_SIZE_HELP}, got {value!r}") from None


def parse_bandwidth(value: object) -> int:
    """Bytes per second: a size (``"4G"``: 4 GiB/s), optionally written with ``"/s"``."""
    if isinstance(value, str) and value.rstrip().endswith("/s"):
        value = value.rstrip()[:-2]
    return parse_bytes(value)


def format_size(nbytes: int) -> str:
    """``"4K"``, ``"64M"``, ``"1G"`` when exact binary multiples, else the plain byte count."""
    if not _is_int(nbytes) or nbytes < 0:
        raise ValueError(f"format_size needs an int >= 0, got {nbytes!r}")
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if nbytes and nbytes % (1 << shift) == 0:
            return f"{nbytes >> shift}{unit}"
    return str(nbytes)


__all__ = [
    "DURATION_UNITS",
    "NS_PER_H",
    "NS_PER_MIN",
    "NS_PER_MS",
    "NS_PER_S",
    "NS_PER_US",
    "format_duration",
    "format_size",
    "parse_bandwidth",
    "parse_bytes",
    "parse_duration",
]
