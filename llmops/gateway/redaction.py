"""PII redaction: what leaves the gateway carries placeholders, never the values.

The gateway core calls :meth:`Redactor.redact_messages` on every request, before the
request is logged or sent to a provider, and :meth:`Redaction.restore` (or, when
streaming, a :class:`StreamRestorer`) on the model's answer before it goes back to the
caller. The request log and the provider see only placeholders.

Entities, the keys of :attr:`RedactionPolicy.entities` (all ``mask`` by default):

======  ==========================================================================
EMAIL   e-mail addresses
PHONE   phone numbers: international, and national for ``phone_regions`` (libphonenumber)
CARD    payment card numbers: 13-19 digits, spaces or dashes, Luhn and issuer prefix
IBAN    IBANs, compact or in groups of four: mod-97 and the country's format
SSN     US social security numbers (AAA-GG-SSSS; the SSA's invalid ranges excluded)
IP      IPv4 and IPv6 addresses
SECRET  API keys and tokens: OpenAI, Anthropic, AWS (key ids; secret keys when labelled),
        GitHub, Stripe, Slack, Google API keys, JWTs, PEM private keys
        (``Finding.kind`` says which, see ``SECRET_KINDS``)
======  ==========================================================================

Modes: ``mask`` replaces a value with ``[EMAIL_1]`` (numbered per distinct value within a
request, restored in the answer); ``hash`` with ``[EMAIL:3f2a9c1d4b5e]`` (HMAC-SHA256 under
``hash_key``, stable across requests, for analytics; never restored); ``block`` refuses the
request with :class:`~llmops.errors.PolicyBlocked` naming the entity types, never the values;
``off`` does not look for the entity at all.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from phonenumbers import SUPPORTED_REGIONS
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llmops.errors import ConfigError, PolicyBlocked
from llmops.gateway.pii.detectors import Detector
from llmops.gateway.pii.findings import BUILTIN_ENTITIES, Finding, resolve
from llmops.gateway.pii.phones import DEFAULT_PHONE_REGIONS
from llmops.gateway.pii.secrets import SECRET_KINDS

__all__ = [
    "BUILTIN_ENTITIES",
    "SECRET_KINDS",
    "CustomPattern",
    "EntityMode",
    "Finding",
    "Redaction",
    "RedactionPolicy",
    "Redactor",
    "StreamRestorer",
]

#: Any mask placeholder: ``[LABEL_N]``. Hash tokens (``[LABEL:hex]``) never match it.
_PLACEHOLDER_RE = re.compile(r"\[[A-Z][A-Z0-9_]*_[0-9]+\]")
_NAME_RE = re.compile(r"[A-Z][A-Z0-9_]*")


class EntityMode(StrEnum):
    """What the redactor does with an entity it finds."""

    MASK = "mask"
    HASH = "hash"
    BLOCK = "block"
    OFF = "off"


class CustomPattern(BaseModel):
    """A tenant's own entity: a regex; a named group ``value`` limits what is replaced."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(max_length=40, description="UPPER_SNAKE label, e.g. EMPLOYEE_ID")
    pattern: str = Field(min_length=1)
    mode: EntityMode = EntityMode.MASK

    @field_validator("name")
    @classmethod
    def _upper_snake(cls, name: str) -> str:
        if not _NAME_RE.fullmatch(name):
            raise ValueError("must be UPPER_SNAKE_CASE, e.g. EMPLOYEE_ID")
        if name in BUILTIN_ENTITIES:
            raise ValueError(f"{name} is a built-in entity: set its mode in `entities`")
        return name

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from exc
        if compiled.fullmatch(""):
            raise ValueError("must not match the empty string")
        return pattern


def _all_masked() -> dict[str, EntityMode]:
    return dict.fromkeys(BUILTIN_ENTITIES, EntityMode.MASK)


class RedactionPolicy(BaseModel):
    """Which entities to look for and what to do with each; entities not listed are masked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    entities: dict[str, EntityMode] = Field(default_factory=_all_masked)
    custom: list[CustomPattern] = Field(default_factory=list)
    hash_key: str | None = Field(
        default=None,
        min_length=16,
        repr=False,
        description="HMAC key of hash mode: a secret, the same everywhere tokens are compared",
    )
    phone_regions: tuple[str, ...] = Field(
        default=DEFAULT_PHONE_REGIONS,
        description="Regions tried, in order, for phone numbers written without a country code",
    )

    @field_validator("entities", mode="before")
    @classmethod
    def _known_entities(cls, entities: Any) -> Any:
        if not isinstance(entities, dict):
            return entities
        upper = {str(name).upper(): mode for name, mode in entities.items()}
        unknown = sorted(set(upper) - set(BUILTIN_ENTITIES))
        if unknown:
            raise ValueError(f"unknown entities {unknown}; known: {list(BUILTIN_ENTITIES)}")
        return upper

    @field_validator("phone_regions")
    @classmethod
    def _known_regions(cls, regions: tuple[str, ...]) -> tuple[str, ...]:
        regions = tuple(r.upper() for r in regions)
        unknown = sorted(set(regions) - SUPPORTED_REGIONS)
        if unknown:
            raise ValueError(f"unknown phone regions {unknown} (ISO 3166 codes, e.g. GB)")
        return regions

    @model_validator(mode="after")
    def _unique_custom_names(self) -> RedactionPolicy:
        names = [c.name for c in self.custom]
        if len(names) != len(set(names)):
            raise ValueError("custom pattern names must be unique")
        return self

    def mode_for(self, entity: str) -> EntityMode:
        """The mode of a built-in entity or custom pattern (``off`` for unknown names)."""
        if entity in BUILTIN_ENTITIES:
            return self.entities.get(entity, EntityMode.MASK)
        return next((c.mode for c in self.custom if c.name == entity), EntityMode.OFF)

    def merged(self, override: RedactionPolicy | dict[str, Any] | None) -> RedactionPolicy:
        """This policy with ``override`` on top: only the fields the override sets count.

        ``entities`` merge key by key; ``custom`` patterns merge by name (set a pattern's
        mode to ``off`` to drop it); other fields are replaced.
        """
        if override is None:
            return self
        if not isinstance(override, RedactionPolicy):
            override = RedactionPolicy.model_validate(override)
        given = override.model_fields_set
        update: dict[str, Any] = {
            name: getattr(override, name)
            for name in ("enabled", "hash_key", "phone_regions")
            if name in given
        }
        if "entities" in given:
            update["entities"] = {**self.entities, **override.entities}
        if "custom" in given:
            by_name = {c.name: c for c in self.custom} | {c.name: c for c in override.custom}
            update["custom"] = list(by_name.values())
        return self.model_copy(update=update)


def _restore(text: str, mapping: dict[str, str]) -> str:
    if not mapping or "[" not in text:
        return text
    return _PLACEHOLDER_RE.sub(lambda m: mapping.get(m.group(), m.group()), text)


class StreamRestorer:
    """Restores placeholders in a streamed answer, whatever the chunk boundaries.

    ``feed`` returns what is safe to emit now and holds back a tail that could still grow
    into a placeholder; ``flush`` returns that tail at the end of the stream.
    """

    def __init__(self, mapping: dict[str, str]) -> None:
        self._mapping = mapping
        self._prefixes = {key[:i] for key in mapping for i in range(1, len(key))}
        self._pending = ""

    def feed(self, chunk: str) -> str:
        if not self._mapping:
            return chunk
        text = self._pending + chunk
        cut = text.rfind("[")
        if cut >= 0 and text[cut:] in self._prefixes:
            text, self._pending = text[:cut], text[cut:]
        else:
            self._pending = ""
        return _restore(text, self._mapping)

    def flush(self) -> str:
        rest, self._pending = self._pending, ""
        return rest


@dataclass
class Redaction:
    """One request after redaction; ``mapping`` holds the originals: never log it."""

    messages: list[dict[str, Any]]
    mapping: dict[str, str] = field(default_factory=dict, repr=False)  # placeholder -> value
    counts: dict[str, int] = field(default_factory=dict)  # entity -> occurrences replaced

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def restore(self, text: str) -> str:
        """``text`` with this request's placeholders replaced by the original values."""
        return _restore(text, self.mapping)

    def stream_restorer(self) -> StreamRestorer:
        return StreamRestorer(self.mapping)


class _Placeholders:
    """Numbering of masked values within one request, clear of placeholders in its text."""

    def __init__(self, texts: list[str]) -> None:
        self.taken = {p for t in texts if "[" in t for p in _PLACEHOLDER_RE.findall(t)}
        self.by_value: dict[tuple[str, str], str] = {}
        self.next: dict[str, int] = {}
        self.mapping: dict[str, str] = {}

    def mask(self, f: Finding) -> str:
        key = (f.entity, f.normalized)
        known = self.by_value.get(key)
        if known is not None:
            return known
        n = self.next.get(f.entity, 1)
        # The input may already hold "[EMAIL_1]" literally: never reuse such a token, or
        # restoring the answer would rewrite the caller's own text.
        while (placeholder := f"[{f.entity}_{n}]") in self.taken:
            n += 1
        self.next[f.entity] = n + 1
        self.by_value[key] = placeholder
        self.mapping[placeholder] = f.value
        return placeholder


# Where text lives in an OpenAI-format message: ("content",), ("content", i) for a text
# part, ("tool_calls", i) and ("function_call",) for function-call arguments.
_Slot = tuple[str, ...] | tuple[str, int]


def _texts(message: dict[str, Any]) -> Iterator[tuple[_Slot, str]]:
    content = message.get("content")
    if isinstance(content, str):
        yield ("content",), content
    elif isinstance(content, list):
        for i, part in enumerate(content):
            text = part.get("text") if isinstance(part, dict) else None
            if isinstance(text, str) and part.get("type") == "text":
                yield ("content", i), text
    for i, call in enumerate(message.get("tool_calls") or ()):
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
            yield ("tool_calls", i), fn["arguments"]
    fn = message.get("function_call")
    if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
        yield ("function_call",), fn["arguments"]


def _with_text(message: dict[str, Any], slot: _Slot, text: str) -> dict[str, Any]:
    """A copy of ``message`` (copying only what changes) with ``text`` at ``slot``."""
    out = dict(message)
    if slot == ("content",):
        out["content"] = text
    elif slot == ("function_call",):
        out["function_call"] = {**message["function_call"], "arguments": text}
    else:
        key, i = slot[0], int(slot[1])
        items = list(message[key])
        if key == "content":
            items[i] = {**items[i], "text": text}
        else:
            items[i] = {**items[i], "function": {**items[i]["function"], "arguments": text}}
        out[key] = items
    return out


class Redactor:
    """Applies one :class:`RedactionPolicy`; build it once per policy and reuse it."""

    def __init__(self, policy: RedactionPolicy) -> None:
        self.policy = policy
        self._modes = {e: policy.mode_for(e) for e in BUILTIN_ENTITIES}
        self._modes |= {c.name: c.mode for c in policy.custom}
        self._detector = Detector(
            [e for e in BUILTIN_ENTITIES if self._modes[e] is not EntityMode.OFF],
            policy.phone_regions,
        )
        self._custom = [
            (c.name, re.compile(c.pattern)) for c in policy.custom if c.mode is not EntityMode.OFF
        ]
        if EntityMode.HASH in self._modes.values() and not policy.hash_key:
            raise ConfigError("redaction policy", "hash_key", "required when a mode is hash")
        self._hmac = hmac.new((policy.hash_key or "").encode(), digestmod=hashlib.sha256)
        self._active = policy.enabled and bool(self._detector.entities or self._custom)

    def detect(self, text: str) -> list[Finding]:
        """Every entity the policy looks for in ``text``, without overlaps, by position."""
        if not self._active:
            return []
        found = self._detector.find(text)
        for name, pattern in self._custom:
            use_group = "value" in pattern.groupindex
            for m in pattern.finditer(text):
                start, end = m.span("value") if use_group else m.span()
                if end > start:
                    found.append(Finding(name, start, end, text[start:end], text[start:end]))
        return resolve(found)

    def redact_text(self, text: str) -> tuple[str, list[Finding]]:
        """``text`` redacted on its own (numbering starts at 1), and what was replaced."""
        findings = self.detect(text)
        self._refuse_blocked(findings)
        if not findings:
            return text, []
        return self._replace(text, findings, _Placeholders([text]))

    def redact_messages(self, messages: list[dict[str, Any]]) -> Redaction:
        """Redact OpenAI-format messages; raises :class:`PolicyBlocked` for ``block``."""
        if not self._active:
            return Redaction(list(messages))
        found = [
            (i, slot, text, findings)
            for i, message in enumerate(messages)
            for slot, text in _texts(message)
            if (findings := self.detect(text))
        ]
        if not found:
            return Redaction(list(messages))
        self._refuse_blocked([f for *_, findings in found for f in findings])
        placeholders = _Placeholders([t for m in messages for _, t in _texts(m)])
        out = list(messages)
        counts: dict[str, int] = {}
        for i, slot, text, findings in found:
            redacted, done = self._replace(text, findings, placeholders)
            out[i] = _with_text(out[i], slot, redacted)
            for f in done:
                counts[f.entity] = counts.get(f.entity, 0) + 1
        return Redaction(out, placeholders.mapping, counts)

    def _refuse_blocked(self, findings: list[Finding]) -> None:
        blocked = sorted({f.entity for f in findings if self._modes[f.entity] is EntityMode.BLOCK})
        if blocked:
            # Entity types only: the value must not reach logs through the error message.
            raise PolicyBlocked(f"request blocked by the redaction policy: {', '.join(blocked)}")

    def _hash_token(self, f: Finding) -> str:
        mac = self._hmac.copy()
        mac.update(f"{f.entity}\x00{f.normalized}".encode())
        return f"[{f.entity}:{mac.hexdigest()[:12]}]"

    def _replace(
        self, text: str, findings: list[Finding], placeholders: _Placeholders
    ) -> tuple[str, list[Finding]]:
        pieces: list[str] = []
        done: list[Finding] = []
        pos = 0
        for f in findings:
            if self._modes[f.entity] is EntityMode.HASH:
                token = self._hash_token(f)
            else:
                token = placeholders.mask(f)
            pieces += (text[pos : f.start], token)
            pos = f.end
            done.append(replace(f, replacement=token))
        pieces.append(text[pos:])
        return "".join(pieces), done
