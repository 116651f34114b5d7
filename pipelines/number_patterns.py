"""Regular expressions of the numbers in a range, written as people type them (``12``,
``0.5``, ``.5``): the trigger form sends a list as comma-separated text, so JSON schema
can only hold each item's range as a pattern (:mod:`pipelines.params`)."""

from __future__ import annotations

import decimal

DIGIT = "[0-9]"


def _same_length(low: str, high: str) -> str:
    """Digit strings of len(low) between ``low`` and ``high`` (same length, low <= high)."""
    if not low:
        return ""
    if low[0] == high[0]:
        return low[0] + _same_length(low[1:], high[1:])
    rest = len(low) - 1
    if low[1:] == "0" * rest and high[1:] == "9" * rest:
        return f"[{low[0]}-{high[0]}]" + (f"{DIGIT}{{{rest}}}" if rest else "")
    parts = [low[0] + _same_length(low[1:], "9" * rest)]
    if int(high[0]) - int(low[0]) > 1:
        parts.append(f"[{int(low[0]) + 1}-{int(high[0]) - 1}]" + (f"{DIGIT}{{{rest}}}" if rest else ""))
    parts.append(high[0] + _same_length("0" * rest, high[1:]))
    return "(?:" + "|".join(parts) + ")"


def int_range_regex(low: int, high: int | None) -> str:
    """A regex of the whole numbers ``low <= n <= high`` (``high`` None: no bound), in
    decimal without sign; leading zeros are allowed (``int()`` reads them)."""
    if low < 0:
        raise ValueError("negative bounds are not supported")
    parts = []
    top = high if high is not None else 10 ** len(str(low)) - 1
    for digits in range(len(str(low)), len(str(top)) + 1):
        start = max(low, 10 ** (digits - 1) if digits > 1 else 0)
        end = min(top, 10 ** digits - 1)
        if start <= end:
            parts.append(_same_length(str(start), str(end)))
    if high is None:
        parts.append(f"[1-9]{DIGIT}{{{len(str(low))},}}")  # more digits than low
    return "0*(?:" + "|".join(parts) + ")"


def _split_decimal(value: float) -> tuple[int, str]:
    """(integer part, fraction digits without trailing zeros) of a non-negative number."""
    text = format(decimal.Decimal(repr(float(value))), "f")
    whole, _, fraction = text.partition(".")
    return int(whole), fraction.rstrip("0")


def _fraction_at_most(digits: str) -> str:
    """Fraction digits F with 0.F <= 0.``digits`` (``digits`` non-empty)."""
    parts = [digits[:i] + f"[0-{int(d) - 1}]{DIGIT}*" for i, d in enumerate(digits) if d != "0"]
    parts.append(digits + "0*")
    parts += [digits[:j] for j in range(len(digits))]  # shorter: padded with zeros
    return "(?:" + "|".join(parts) + ")"


def _fraction_above(digits: str, strict: bool) -> str:
    """Fraction digits F with 0.F > 0.``digits`` (or >= when not ``strict``); F non-empty."""
    parts = [digits[:i] + f"[{int(d) + 1}-9]{DIGIT}*" for i, d in enumerate(digits) if d != "9"]
    parts.append(digits + (f"{DIGIT}*[1-9]{DIGIT}*" if strict else f"{DIGIT}*"))
    return "(?:" + "|".join(parts) + ")"


def _whole(value: int) -> str:
    return "0*" + (str(value) if value else "")  # 0 may be written ".5"


def decimal_range_regex(low: float, high: float | None, *, exclusive_low: bool = False) -> str:
    """A regex of the non-negative decimals (``12``, ``0.5``, ``.5``, ``3.``; no sign, no
    exponent) from ``low`` (inclusive, or exclusive) to ``high`` (inclusive; None: none)."""
    if low < 0 or (high is not None and high < low):
        raise ValueError(f"unsupported range {low}..{high}")
    any_fraction = rf"(?:\.{DIGIT}*)?"
    low_whole, low_fraction = _split_decimal(low)
    # The value's whole part is above low's, or equal with a large enough fraction.
    if exclusive_low:
        equal = rf"\.{_fraction_above(low_fraction, True)}" if low_fraction else rf"\.{DIGIT}*[1-9]{DIGIT}*"
    else:
        equal = rf"\.{_fraction_above(low_fraction, False)}" if low_fraction else any_fraction
    above = f"(?:{int_range_regex(low_whole + 1, None)}{any_fraction}|{_whole(low_whole)}{equal})"
    if high is None:
        at_most = ""
    else:
        high_whole, high_fraction = _split_decimal(high)
        parts = []
        if high_whole > 0:
            parts.append(f"{int_range_regex(0, high_whole - 1)}{any_fraction}|\\.{DIGIT}+")
        tail = rf"(?:\.{_fraction_at_most(high_fraction)})?" if high_fraction else r"(?:\.0*)?"
        parts.append(_whole(high_whole) + tail)
        at_most = "(?=(?:" + "|".join(parts) + r")(?![0-9.]))"
    return rf"(?=\.?[0-9]){at_most}{above}"
