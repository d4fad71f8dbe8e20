"""Label moves: promotion behind a passing eval gate, rollback, and their audit trail.

Every move writes a :class:`~llmops.db.models.PromptLabelEvent`: who, when, from which
version to which, the gate that justified it (``eval_run_id`` holds the gate id), and
whether it was forced past a missing gate. The history is plain rows in the ops DB,
readable by ``llmops prompts history`` or any SQL client.
"""

from __future__ import annotations

from sqlmodel import Session, col, select

from llmops.db.models import EvalGate, PromptLabel, PromptLabelEvent
from llmops.errors import ValidationError
from llmops.ids import utcnow
from llmops.prompts.store import get_version

__all__ = ["label_events", "move_label", "passing_gate", "promote", "rollback"]

_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


def _check_label(label: str) -> str:
    if not label or len(label) > 64 or not set(label) <= _LABEL_CHARS:
        raise ValidationError(
            f"invalid label {label!r}: use 1-64 lowercase letters, digits, '-' or '_'"
        )
    return label


def move_label(
    session: Session,
    name: str,
    label: str,
    version: int,
    *,
    actor: str,
    reason: str = "",
    gate_id: str | None = None,
    forced: bool = False,
) -> PromptLabelEvent:
    """Point ``label`` of ``name`` at ``version`` and audit the move (no gate check)."""
    _check_label(label)
    get_version(session, name, version)  # raises for an unknown prompt or version
    row = session.get(PromptLabel, (name, label))
    before = row.version if row is not None else None
    if row is None:
        row = PromptLabel(name=name, label=label, version=version)
    row.version, row.updated_by, row.updated_at = version, actor, utcnow()
    session.add(row)
    event = PromptLabelEvent(
        name=name,
        label=label,
        from_version=before,
        to_version=version,
        actor=actor,
        eval_run_id=gate_id,
        reason=reason[:1000],
        forced=forced,
    )
    session.add(event)
    session.flush()
    return event


def passing_gate(session: Session, name: str, version: int) -> EvalGate | None:
    """The gate that justifies promoting this version's exact content, or None.

    Every suite that gated this content must have passed on its latest gate: a version
    that passed one suite and failed another is not promotable (without ``--force``).
    """
    stored = get_version(session, name, version)
    gates = session.exec(
        select(EvalGate)
        .where(EvalGate.prompt_name == name, EvalGate.candidate_hash == stored.content_hash)
        .order_by(col(EvalGate.created_at).desc(), col(EvalGate.id).desc())
    ).all()
    latest: dict[str, EvalGate] = {}
    for gate in gates:
        latest.setdefault(gate.suite, gate)
    if not latest or not all(g.passed for g in latest.values()):
        return None
    return max(latest.values(), key=lambda g: (g.created_at, g.id))


def promote(
    session: Session,
    name: str,
    version: int,
    *,
    label: str = "production",
    actor: str,
    force: bool = False,
    reason: str = "",
) -> PromptLabelEvent:
    """Move ``label`` to ``version`` if a gate passed for it; ``force`` skips that, audited."""
    gate = passing_gate(session, name, version)
    if gate is None and not force:
        raise ValidationError(
            f"prompt {name!r} version {version} has no passing eval gate (every suite that "
            f"gated it must pass): run `llmops eval gate --suite <suite> --candidate "
            f"{version}` first, or pass --force (recorded in the label history)"
        )
    if gate is None:
        reason = reason or "forced without a passing gate"
    return move_label(
        session,
        name,
        label,
        version,
        actor=actor,
        reason=reason
        or f"gate {gate.id if gate else ''} passed on suite {gate.suite if gate else ''}",
        gate_id=gate.id if gate else None,
        forced=gate is None,
    )


def label_events(session: Session, name: str, label: str | None = None) -> list[PromptLabelEvent]:
    """The audit trail of ``name`` (one label or all), newest first."""
    stmt = select(PromptLabelEvent).where(PromptLabelEvent.name == name)
    if label is not None:
        stmt = stmt.where(PromptLabelEvent.label == label)
    stmt = stmt.order_by(col(PromptLabelEvent.created_at).desc(), col(PromptLabelEvent.id).desc())
    return list(session.exec(stmt).all())


def rollback(
    session: Session,
    name: str,
    *,
    label: str = "production",
    to_version: int | None = None,
    actor: str,
    reason: str = "",
) -> PromptLabelEvent:
    """Move ``label`` back: to ``to_version``, else to where it pointed before its last move."""
    current = session.get(PromptLabel, (name, label))
    if current is None:
        raise ValidationError(f"prompt {name!r} has no label {label!r} to roll back")
    if to_version is None:
        for event in label_events(session, name, label):
            if event.to_version == current.version and event.from_version is not None:
                to_version = event.from_version
                break
        if to_version is None:
            raise ValidationError(
                f"label {label!r} of {name!r} has no earlier version to roll back to; "
                "name one with --to"
            )
    if to_version == current.version:
        raise ValidationError(f"label {label!r} of {name!r} already points at v{to_version}")
    return move_label(
        session,
        name,
        label,
        to_version,
        actor=actor,
        reason=reason or f"rollback from v{current.version}",
    )
