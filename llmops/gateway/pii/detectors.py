"""Built-in detectors: each finds one entity type in text and validates what it finds.

A detector is a precompiled regex for candidates plus a validator that rejects what only
looks like the entity: Luhn and issuer prefixes for cards, mod-97 for IBANs, the SSA's
invalid ranges for SSNs, :mod:`ipaddress` for IPs; phones (libphonenumber) and secrets
have their own modules. :class:`Detector` runs the ones a policy turned on; overlaps are
resolved afterwards (:func:`~llmops.gateway.pii.findings.resolve`).

Regexes compile once at import; the gateway runs every active detector on every request.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Sequence

from stdnum import iban as stdnum_iban
from stdnum import luhn
from stdnum.us import ssn as stdnum_ssn

from llmops.gateway.pii.findings import (
    BUILTIN_ENTITIES,
    CARD,
    EMAIL,
    IBAN,
    IP,
    PHONE,
    SECRET,
    SSN,
    Finding,
    finding,
    isolated,
)
from llmops.gateway.pii.phones import DEFAULT_PHONE_REGIONS, PhoneFinder
from llmops.gateway.pii.secrets import find_secrets

# Every detector but e-mail and secrets needs a digit.
_DIGIT_RE = re.compile(r"\d")


# -- e-mail ------------------------------------------------------------------------------

_EMAIL_RE = re.compile(
    r"(?<![\w.%+-])\w[\w.%+'-]*@(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W\d_]{2,24}(?![\w-]|\.[^\W_])"
)


_RETINA_ASSET_RE = re.compile(r"[^@]+@\d+x\.")  # icon@2x.png


def _emails(text: str) -> Iterator[Finding]:
    if "@" not in text:
        return
    for m in _EMAIL_RE.finditer(text):
        end = m.end()
        # "git@github.com:org/repo.git" is an SSH remote, not a mailbox.
        if text[end : end + 1] == ":" and end + 1 < len(text) and not text[end + 1].isspace():
            continue
        if _RETINA_ASSET_RE.match(m.group()):
            continue
        yield finding(EMAIL, text, m.start(), m.end(), m.group().lower())


# -- payment card ------------------------------------------------------------------------

_CARD_RE = re.compile(r"\d(?<!\d\d)(?:[ -]?\d){12,22}(?!\d)")
_GROUP_RE = re.compile(r"\d+|[ -]")


def _issuer_ok(digits: str) -> bool:
    """Issuer prefix and length plausible (Visa, Mastercard, Amex, Discover, JCB, ...)."""
    n, d1, d2 = len(digits), digits[0], digits[:2]
    if d1 == "4":
        return n in (13, 16, 19)
    if d2 in ("34", "37"):
        return n == 15
    if d2 in ("51", "52", "53", "54", "55") or "2221" <= digits[:4] <= "2720":
        return n == 16
    if d2 in ("30", "36", "38", "39"):
        return 14 <= n <= 19
    if d2 == "35":  # JCB
        return 16 <= n <= 19
    if d1 == "6" or d2 in ("50", "56", "57", "58"):  # Discover, UnionPay, Maestro
        return 13 <= n <= 19
    return False


def _grouping_ok(sizes: list[int]) -> bool:
    if len(sizes) == 1:
        return True
    if sizes in ([4, 6, 5], [4, 6, 4]):  # Amex, Diners
        return True
    return sizes[0] == 4 and all(s == 4 for s in sizes[1:-1]) and 1 <= sizes[-1] <= 4


def _cards(text: str) -> Iterator[Finding]:
    for m in _CARD_RE.finditer(text):
        parts = _GROUP_RE.findall(m.group())
        groups = parts[::2]
        seps = parts[1::2]
        found = False
        # The run may hold more than the card ("order 12 4111 1111 1111 1111 2025"):
        # try the longest windows of whole groups first.
        for width in range(len(groups), 0, -1):
            for i in range(len(groups) - width + 1):
                window = groups[i : i + width]
                digits = "".join(window)
                if not 13 <= len(digits) <= 19 or len(set(seps[i : i + width - 1])) > 1:
                    continue
                if not (_grouping_ok([len(g) for g in window]) and _issuer_ok(digits)):
                    continue
                if not luhn.is_valid(digits):
                    continue
                start = m.start() + sum(len(p) for p in parts[: 2 * i])
                end = start + sum(len(p) for p in parts[2 * i : 2 * (i + width) - 1])
                if isolated(text, start, end):
                    yield finding(CARD, text, start, end, digits)
                    found = True
                    break
            if found:
                break


# -- IBAN --------------------------------------------------------------------------------

# Anchored on the check digits and looking back for the country code: scanning for digits
# is several times faster than trying every letter of the prose.
_IBAN_RE = re.compile(
    r"\d\d(?<=(?<!\w)[A-Za-z]{2}\d\d)(?: ?[A-Za-z0-9]{4}){2,7}(?: ?[A-Za-z0-9]{1,3})?\b"
)


def _ibans(text: str) -> Iterator[Finding]:
    for m in _IBAN_RE.finditer(text):
        start = m.start() - 2
        value = text[start : m.end()]
        # Greedy matching may take a trailing word ("... 3000 EUR"): shorten until valid.
        for end in range(len(value), 14, -1):
            if value[end - 1] == " " or (end < len(value) and value[end] != " "):
                continue
            compact = value[:end].replace(" ", "").upper()
            if stdnum_iban.is_valid(compact):
                yield finding(IBAN, text, start, start + end, compact)
                break


# -- US SSN ------------------------------------------------------------------------------

# From the first dash, then three digits looked up by hand: literal-first patterns let re
# skip ahead to each "-" instead of trying every digit (~1 us instead of ~25 us per 2 KB).
_SSN_RE = re.compile(r"-\d\d-\d{4}(?![\w-])")
_SSN_LABELLED_RE = re.compile(
    r"(?i)\b(?:ssn|social security (?:number|no\.?|#))\s*(?:is|:|#|=)?\s*(\d{3} ?\d{2} ?\d{4})\b"
)


def _ssns(text: str) -> Iterator[Finding]:
    for m in _SSN_RE.finditer(text):
        start = m.start() - 3
        if start < 0 or not text[start : m.start()].isdigit():
            continue
        if start > 0 and (text[start - 1].isalnum() or text[start - 1] in "_-"):
            continue
        value = text[start : m.end()]
        # stdnum excludes area 000, 666 and 9xx, group 00, serial 0000 and known misuses.
        if stdnum_ssn.is_valid(value):
            yield finding(SSN, text, start, m.end(), value)
    lower = text.lower()
    if "ssn" in lower or "social security" in lower:
        for m in _SSN_LABELLED_RE.finditer(text):
            digits = m.group(1).replace(" ", "")
            if stdnum_ssn.is_valid(digits):
                normalized = f"{digits[:3]}-{digits[3:5]}-{digits[5:]}"
                yield finding(SSN, text, m.start(1), m.end(1), normalized)


# -- IP addresses ------------------------------------------------------------------------

# The last three octets, from their dot (literal-first, see _SSN_RE); the first by hand.
_IPV4_TAIL_RE = re.compile(r"\.\d{1,3}\.\d{1,3}\.\d{1,3}(?!\w|\.\d)")
# IPv6: from any ":hex:" (literal-first), widened by hand over hex digits and colons.
_IPV6_SEED_RE = re.compile(r":[0-9A-Fa-f]{0,4}:")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:")
# "version 1.2.3.4" and "section 4.2.1.3" are dotted quads, not addresses.
_NOT_IP_CONTEXT_RE = re.compile(
    r"(?i)(?:\b(?:v|ver|version|build|release|rev|revision|section|clause|chapter)\.?|§)\s*$"
)


def _ips(text: str) -> Iterator[Finding]:
    if "." in text:
        for m in _IPV4_TAIL_RE.finditer(text):
            start = m.start()
            while start > 0 and text[start - 1].isdigit() and m.start() - start < 4:
                start -= 1
            if start == m.start() or (
                start > 0 and (text[start - 1].isalnum() or text[start - 1] in "_.")
            ):
                continue
            if _NOT_IP_CONTEXT_RE.search(text, max(0, start - 12), start):
                continue
            try:  # rejects octets over 255 and leading zeros
                addr = ipaddress.IPv4Address(text[start : m.end()])
            except ValueError:
                continue
            yield finding(IP, text, start, m.end(), str(addr))
    yield from _ipv6s(text)


def _ipv6(value: str) -> ipaddress.IPv6Address | None:
    if "::" not in value and value.count(":") != 7:  # 12:30:45, MAC addresses
        return None
    try:
        return ipaddress.IPv6Address(value)
    except ValueError:
        return None


def _ipv6s(text: str) -> Iterator[Finding]:
    n, pos = len(text), 0
    while (m := _IPV6_SEED_RE.search(text, pos)) is not None:
        start, end = m.start(), m.end()
        while start > 0 and text[start - 1] in _IPV6_CHARS:
            start -= 1
        while end < n and (
            text[end] in _IPV6_CHARS or (text[end] == "." and text[end + 1 : end + 2].isdigit())
        ):
            end += 1  # dots only inside an IPv4-mapped tail (::ffff:192.0.2.1)
        pos = end
        if start > 0 and (text[start - 1].isalnum() or text[start - 1] in "_."):
            continue
        if end < n and (text[end].isalnum() or text[end] == "_"):
            continue
        value = text[start:end]
        addr = _ipv6(value)
        if addr is None and value.count(":") == 8:  # "2001:db8:...:8329:5432", a port
            value = value.rsplit(":", 1)[0]
            end = start + len(value)
            addr = _ipv6(value)
        if addr is None:
            continue
        # "::1", "a::b" (C++, Rust paths): too little to be an address worth hiding.
        groups = [g for g in value.split(":") if g]
        if len(groups) < 2 or max(len(g) for g in groups) < 3:
            continue
        yield finding(IP, text, start, end, addr.compressed)


class Detector:
    """The built-in detectors a policy turned on, bound to its phone regions."""

    def __init__(
        self, entities: Iterable[str], phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS
    ) -> None:
        active = set(entities)
        phones = PhoneFinder(phone_regions)
        self.entities = tuple(e for e in BUILTIN_ENTITIES if e in active)
        self._secrets = SECRET in active
        self._scanners = [
            scan
            for entity, scan in (
                (EMAIL, _emails),
                (CARD, _cards),
                (IBAN, _ibans),
                (SSN, _ssns),
                (IP, _ips),
                (PHONE, phones),
            )
            if entity in active
        ]

    def find(self, text: str) -> list[Finding]:
        """Every finding of the active detectors, overlaps not yet resolved."""
        found: list[Finding] = []
        if self._secrets:
            found.extend(
                finding(SECRET, text, s, e, text[s:e], kind) for s, e, kind in find_secrets(text)
            )
        if _DIGIT_RE.search(text) is not None or "@" in text:
            for scan in self._scanners:
                found.extend(scan(text))
        return found
