"""Phone numbers: candidates found by regex, decided by libphonenumber.

International numbers ("+44 20 7946 0958") parse in any region. National ones ("020 7946
0958", "(415) 555-0132") are tried in the policy's regions, in order, with leniency
``STRICT_GROUPING``: valid for the region *and* grouped the way people write numbers there,
which rejects the dates, ISBNs, ZIP+4 codes and order numbers that ``VALID`` lets through.
Two fallbacks recover realistic formats the metadata does not list (``_match``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence

from phonenumbers import (
    Leniency,
    NumberParseException,
    PhoneMetadata,
    PhoneNumber,
    PhoneNumberFormat,
    PhoneNumberMatcher,
    PhoneNumberType,
    format_number,
    is_valid_number,
    length_of_national_destination_code,
    number_type,
    parse,
)

from llmops.gateway.pii.findings import PHONE, Finding, finding, isolated

#: Regions tried, in order, for phone numbers written without a country code.
DEFAULT_PHONE_REGIONS: tuple[str, ...] = ("US", "GB", "DE", "FR")

# A run of at least 7 digits with phone punctuation between them; libphonenumber decides.
# (Patterns start with the character class they need: re then skips ahead quickly.)
_PHONE_CANDIDATE_RE = re.compile(r"\d(?:[ \t\u00a0().\-/]{0,3}\d){6,}\)?")
_NON_DIGIT_RE = re.compile(r"\D")
_LONE_ZERO_RE = re.compile(r"\(?0[^\d]")
_TRUNK_GROUPED_RE = re.compile(r"\(?0\d{2,5}\)?(?:[ /.-]{1,3}\d{2,8}){1,3}")
_DATE_RE = re.compile(r"\d{1,4}([./-])\d{1,2}\1\d{1,4}")
_SEPARATORS_RE = re.compile(r"[ /.-]+")
_ANY_REGION = "ZZ"  # libphonenumber's "unknown region": parses "+..." numbers only


def _region_accepts(region: str) -> Callable[[str], bool]:
    """Whether a number written without "+" could be national in ``region`` (digits only).

    People write national numbers with the trunk prefix ("020 7946 0958", "030 123456");
    NANP numbers have 10 digits, or 11 after a "1". Candidates that cannot be national
    here skip the matcher, which costs ~50 us a call: dates and amounts stay cheap.
    """
    meta = PhoneMetadata.metadata_for_region(region)
    if meta is None:
        raise ValueError(f"unknown phone region {region!r}")
    if meta.country_code == 1:
        return lambda d: (
            (len(d) == 10 and d[0] > "1") or (len(d) == 11 and d[0] == "1") or (d.startswith("011"))
        )
    prefix = meta.national_prefix
    if not prefix:
        return lambda d: True
    return lambda d: d.startswith(prefix)


def _valid_in(candidate: str, region: str) -> bool:
    try:
        return is_valid_number(parse(candidate, region))
    except NumberParseException:
        return False


def _area_code_first(candidate: str, number: PhoneNumber) -> bool:
    """Whether the first group is trunk prefix + area code ("030 12 34 56").

    For mobiles one digit short counts too: libphonenumber's German mobile codes are
    "01512", people write "0151 2345 6789".
    """
    first = _SEPARATORS_RE.split(candidate.replace("(", "").replace(")", " "), maxsplit=1)[0]
    code = "0" + str(number.national_number)[: length_of_national_destination_code(number)]
    if first == code:
        return len(code) > 1
    mobile = number_type(number) == PhoneNumberType.MOBILE
    return mobile and len(code) - len(first) == 1 and code.startswith(first)


class PhoneFinder:
    """Finds phone numbers; national ones are tried in ``regions``, in order."""

    def __init__(self, regions: Sequence[str] = DEFAULT_PHONE_REGIONS) -> None:
        self._regions = [(region, _region_accepts(region)) for region in regions]

    def __call__(self, text: str) -> Iterator[Finding]:
        for m in _PHONE_CANDIDATE_RE.finditer(text):
            start = m.start()
            if start > 0 and text[start - 1] in "+(":
                start -= 1
            if isolated(text, start, m.end()):
                yield from self._match(text, start, text[start : m.end()])

    def _match(self, text: str, start: int, candidate: str) -> Iterator[Finding]:
        if candidate[0] == "+":  # carries its own country code: no region needed
            tried = [_ANY_REGION]
        elif _LONE_ZERO_RE.match(candidate):  # "0.30.53552" is a version, not 030 53552
            return
        else:
            digits = _NON_DIGIT_RE.sub("", candidate)
            tried = [region for region, accepts in self._regions if accepts(digits)]
            # The matcher costs 40-75 us a region, a parse 15: when the whole candidate is
            # a valid number somewhere, match only there.
            tried = [region for region in tried if _valid_in(candidate, region)] or tried
        taken: list[tuple[int, int]] = []
        for region in tried:
            for pm in PhoneNumberMatcher(candidate, region, Leniency.STRICT_GROUPING, 50):
                s, e = start + pm.start, start + pm.end
                if any(s < te and ts < e for ts, te in taken) or not isolated(text, s, e):
                    continue
                taken.append((s, e))
                yield finding(PHONE, text, s, e, format_number(pm.number, PhoneNumberFormat.E164))
            if sum(e - s for s, e in taken) >= len(candidate) - 2:
                return
        if taken:
            return
        if candidate[0] == "+":
            # "+44 7911 654321": a country code is evidence enough. Accept a number of a
            # possible length even where the metadata knows no allocation (yet).
            leniency = Leniency.POSSIBLE
        elif _TRUNK_GROUPED_RE.fullmatch(candidate) and not _DATE_RE.fullmatch(candidate):
            # "0151 2345 6789", "030 12 34 56": trunk prefix and area code as the first
            # group, grouped in a way libphonenumber's formats do not list.
            leniency = Leniency.VALID
        else:
            return
        for region in tried:
            first = next(iter(PhoneNumberMatcher(candidate, region, leniency, 5)), None)
            if first is None or first.start != 0 or first.end < len(candidate) - 1:
                continue
            if leniency is Leniency.VALID and not _area_code_first(candidate, first.number):
                continue
            e164 = format_number(first.number, PhoneNumberFormat.E164)
            yield finding(PHONE, text, start, start + first.end, e164)
            return
