"""Demo data: tenants, features, prompts, and a deterministic batch of support-desk requests."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from llmops.db.models import Feature, PromptLabel, Tenant
from llmops.gateway.batch import BatchItem
from llmops.prompts.files import PromptFile
from llmops.prompts.labels import promote
from llmops.prompts.store import register_version

TENANTS = [
    ("acme", "Acme Corp", "pro"),
    ("globex", "Globex Corporation", "starter"),
    ("initech", "Initech", "pro"),
]
#: feature id -> prompt name
FEATURES = {
    "ticket-summary": "summarize",
    "ticket-triage": "classify",
    "reply-draft": "draft_reply",
}
_CUSTOMERS = ["Dana", "Lee", "Priya", "Marco", "Aiko", "Sam", "Noor", "Jonas"]
_TICKETS = [
    "I was charged twice for my subscription this month and need one charge refunded.",
    "The export button does nothing in Firefox; the console shows a 500 error.",
    "How do I add a second admin to our workspace?",
    "I can't log in since I changed my email address. Password reset never arrives.",
    "Our invoice shows the wrong VAT number. Can you reissue it?",
    "The mobile app crashes when I open a shared document with comments.",
    "Is there a way to schedule reports to be emailed every Monday?",
    "Please delete my account and all associated data.",
]


def seed(engine: Engine, prompts: dict[str, PromptFile]) -> dict[str, int]:
    """Create the demo tenants, features, prompt versions and first production labels;
    safe to run again."""
    with Session(engine) as session:
        for tenant_id, name, plan in TENANTS:
            if session.get(Tenant, tenant_id) is None:
                session.add(Tenant(id=tenant_id, name=name, plan=plan))
        for feature_id, prompt_name in FEATURES.items():
            if session.get(Feature, feature_id) is None:
                session.add(
                    Feature(
                        id=feature_id,
                        description=prompts[prompt_name].description,
                        default_model_group=prompts[prompt_name].model_group,
                    )
                )
        versions = {
            name: register_version(session, prompt, author="demo", message="seeded by llmops demo")
            for name, prompt in prompts.items()
        }
        result = {name: v.version for name, v in versions.items()}
        for name, version in result.items():
            if session.get(PromptLabel, (name, "production")) is None:
                # No gate has run on a fresh install: the first production label is forced,
                # and the label history says so.
                promote(session, name, version, actor="demo", force=True, reason="demo seed")
        session.commit()
    return result


def build_items(
    prompts: dict[str, PromptFile], versions: dict[str, int], n: int, *, seed: int = 7
) -> list[BatchItem]:
    """``n`` deterministic requests spread over the demo tenants and features."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        tenant_id = TENANTS[rng.randrange(len(TENANTS))][0]
        feature_id = rng.choice(list(FEATURES))
        prompt = prompts[FEATURES[feature_id]]
        variables: dict[str, Any] = {
            "customer": rng.choice(_CUSTOMERS),
            "ticket": rng.choice(_TICKETS) + f" (ref #{1000 + i})",
        }
        params = prompt.params
        items.append(
            BatchItem(
                item_id=f"demo-{i:04d}",
                tenant_id=tenant_id,
                feature_id=feature_id,
                model_group=prompt.model_group,
                messages=prompt.render(variables),
                max_tokens=params.get("max_tokens"),
                temperature=params.get("temperature"),
                prompt_name=prompt.name,
                prompt_version=versions[prompt.name],
            )
        )
    return items


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of ``rows`` (all with the same keys)."""
    if not rows:
        return "(no rows)"
    cols = list(rows[0])

    def cell(value: Any) -> str:
        if isinstance(value, Decimal):
            return f"{value:.6f}"
        return "" if value is None else str(value)

    cells = [[cell(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    numeric = [all(_is_number(r[c]) for r in rows) for c in cols]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(cols), line(["-" * w for w in widths]), *(line(row) for row in cells)])


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)
