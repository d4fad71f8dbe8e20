"""The prompt store on SQLite and Postgres: immutable versions, resolution by label or
version, labels, history, diff, the cached runtime resolver, and golden-set candidates
sampled from real traffic."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from llmops.db.models import PromptLabel
from llmops.errors import ConfigError, ValidationError
from llmops.evals.sample import sample_candidates
from llmops.gateway.config import GatewayConfig
from llmops.gateway.core import ChatRequest, Gateway
from llmops.prompts.files import PromptFile
from llmops.prompts.labels import label_events, move_label, rollback
from llmops.prompts.refs import resolve_ref
from llmops.prompts.store import (
    PromptResolver,
    diff,
    list_prompts,
    push,
    register_version,
    resolve_prompt,
    versions,
)
from llmops.sim import SimConfig, SimServer


def _prompt(text: str) -> PromptFile:
    return PromptFile(
        name="greet",
        model_group="chat-small",
        messages=[{"role": "user", "content": text}],
    )


def test_resolve_by_label_and_version(db_engine: Engine) -> None:
    with Session(db_engine) as session:
        v1 = register_version(session, _prompt("Hello {{ who }}"))
        v2 = register_version(session, _prompt("Hi {{ who }}!"))
        assert (v1.version, v2.version) == (1, 2)
        assert register_version(session, _prompt("Hello {{ who }}")).version == 1
        session.add(PromptLabel(name="greet", label="production", version=1))
        session.commit()

        prod = resolve_prompt(session, "greet")
        assert prod.version == 1
        assert prod.prompt.render({"who": "Ada"}) == [{"role": "user", "content": "Hello Ada"}]
        assert resolve_prompt(session, "greet", version=2).prompt.render({"who": "Ada"}) == [
            {"role": "user", "content": "Hi Ada!"}
        ]
        with pytest.raises(ValidationError, match="missing variables: who"):
            prod.prompt.render({})


def test_resolve_unknowns_say_what_exists(db_engine: Engine) -> None:
    with Session(db_engine) as session:
        register_version(session, _prompt("Hello"))
        session.add(PromptLabel(name="greet", label="staging", version=1))
        session.commit()
        with pytest.raises(ValidationError, match="unknown prompt 'nope'"):
            resolve_prompt(session, "nope")
        with pytest.raises(ValidationError, match=r"no label 'production' \(labels: staging\)"):
            resolve_prompt(session, "greet")
        with pytest.raises(ValidationError, match=r"no version 7 \(latest: 1\)"):
            resolve_prompt(session, "greet", version=7)


def _summarize(system: str, name: str = "summarize") -> PromptFile:
    return PromptFile.model_validate(
        {
            "name": name,
            "model_group": "fast",
            "params": {"max_tokens": 40},
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": "From {{ customer }}:\n{{ ticket }}"},
            ],
        }
    )


def test_push_is_idempotent_and_versions_are_immutable(db_engine: Engine) -> None:
    with Session(db_engine) as session:
        first = push(session, {"summarize": _summarize("Be brief.")}, author="dana", message="m1")
        again = push(session, {"summarize": _summarize("Be brief.")}, author="lee")
        second = push(session, {"summarize": _summarize("Be very brief.")}, author="lee")
        back = push(session, {"summarize": _summarize("Be brief.")}, author="lee")
        session.commit()
        assert [(p.version, p.created) for p in first + again + second + back] == [
            (1, True),
            (1, False),
            (2, True),
            (1, False),
        ]
        rows = versions(session, "summarize")
        assert [(v.version, v.author, v.message) for v in rows] == [
            (2, "lee", ""),
            (1, "dana", "m1"),
        ]
        with pytest.raises(ValidationError, match="unknown prompt 'nope'"):
            versions(session, "nope")


def test_labels_history_diff_and_rollback(db_engine: Engine) -> None:
    with Session(db_engine) as session:
        push(session, {"summarize": _summarize("Be brief.")}, author="a")
        push(session, {"summarize": _summarize("Be very brief.")}, author="a")
        move_label(session, "summarize", "staging", 2, actor="dana", reason="try")
        move_label(session, "summarize", "production", 1, actor="dana")
        move_label(session, "summarize", "production", 2, actor="lee")
        session.commit()
        (summary,) = list_prompts(session)
        assert (summary.latest, summary.labels) == (2, {"production": 2, "staging": 2})
        event = rollback(session, "summarize", actor="lee")
        assert (event.from_version, event.to_version, event.reason) == (2, 1, "rollback from v2")
        with pytest.raises(ValidationError, match="no earlier version"):
            rollback(session, "summarize", label="staging", actor="lee")
        with pytest.raises(ValidationError, match="no label 'canary'"):
            rollback(session, "summarize", label="canary", actor="lee")
        with pytest.raises(ValidationError, match="invalid label"):
            move_label(session, "summarize", "Prod!", 1, actor="x")
        with pytest.raises(ValidationError, match="has no version 9"):
            move_label(session, "summarize", "staging", 9, actor="x")
        session.commit()
        trail = [
            (e.label, e.from_version, e.to_version, e.actor)
            for e in label_events(session, "summarize")
        ]
        assert trail == [
            ("production", 2, 1, "lee"),
            ("production", 1, 2, "lee"),
            ("production", None, 1, "dana"),
            ("staging", None, 2, "dana"),
        ]
        old = resolve_ref(session, "summarize", "v2")
        new = resolve_ref(session, "summarize", "production")
        text = diff(old.prompt, new.prompt, old_label=old.label, new_label=new.label)
        assert "-  content: Be very brief.\n+  content: Be brief.\n" in text
        assert diff(old.prompt, old.prompt, old_label="a", new_label="b") == ""


def test_refs_name_versions_labels_and_files(db_engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "summarize.yaml"
    path.write_text(
        "name: summarize\nmodel_group: fast\nmessages:\n  - {role: user, content: hi}\n"
    )
    wrong = tmp_path / "other.yaml"
    wrong.write_text("name: other\nmodel_group: fast\nmessages:\n  - {role: user, content: hi}\n")
    with Session(db_engine) as session:
        push(session, {"summarize": _summarize("Be brief.")}, author="a")
        assert resolve_ref(session, "summarize", "1").version == 1
        unpushed = resolve_ref(session, "summarize", str(path))
        assert unpushed.version is None and unpushed.label.endswith("(not pushed)")
        with pytest.raises(ConfigError, match="expected prompt 'summarize'"):
            resolve_ref(session, "summarize", str(wrong))
        with pytest.raises(ValidationError, match="no label 'production'"):
            resolve_ref(session, "summarize", "production")


def test_the_resolver_caches_briefly(db_engine: Engine) -> None:
    now = [0.0]
    resolver = PromptResolver(db_engine, ttl_s=5.0, clock=lambda: now[0])
    with Session(db_engine) as session:
        push(session, {"summarize": _summarize("Be brief.")}, author="a")
        push(session, {"summarize": _summarize("Be very brief.")}, author="a")
        move_label(session, "summarize", "production", 1, actor="a")
        session.commit()
    assert resolver.resolve("summarize").version == 1
    with Session(db_engine) as session:
        move_label(session, "summarize", "production", 2, actor="a")
        session.commit()
    now[0] = 4.0
    assert resolver.resolve("summarize").version == 1  # still cached
    now[0] = 5.5
    assert resolver.resolve("summarize").version == 2
    assert resolver.resolve("summarize", version=1).prompt.messages[0].content == "Be brief."


async def test_sampled_candidates_come_from_logged_traffic_as_variables(
    db_engine: Engine,
) -> None:
    prompt = _summarize("Be brief.")
    with SimServer(SimConfig()) as sim:
        dep = {"id": "d", "model": "openai/gpt-4o-mini", "api_base": sim.base_url, "api_key": "k"}
        config = GatewayConfig.model_validate(
            {
                "settings": {"num_retries": 0},
                "model_groups": {"fast": {"deployments": [dep]}},
                "prices": [
                    {"model": "openai/gpt-4o-mini", "input_per_mtok": "1", "output_per_mtok": "1"}
                ],
            }
        )
        gateway = Gateway(config, db_engine)
        try:
            for i in range(6):
                variables = {"customer": "Dana", "ticket": f"Ticket {i % 4}, mail dana@example.com"}
                await gateway.chat(
                    ChatRequest("acme", "ticket-summary", prompt.render(variables), "fast")
                )
            await gateway.chat(
                ChatRequest("acme", "ticket-summary", [{"role": "user", "content": "x"}], "fast")
            )
            await gateway.chat(ChatRequest("acme", "other", prompt.render(variables), "fast"))
        finally:
            await gateway.aclose()
    lines = sample_candidates(db_engine, "ticket-summary", 10, prompt=prompt)
    assert len(lines) == 5  # 4 distinct tickets + 1 request from another template
    inverted = [line for line in lines if "needs-variables" not in line["tags"]]
    assert len(inverted) == 4
    for line in inverted:
        assert line["input"]["customer"] == "Dana"
        # The log holds redacted text, so candidates never carry the raw PII.
        assert "dana@example.com" not in line["input"]["ticket"]
        assert line["reference"] and "needs-review" in line["tags"]
    assert sample_candidates(db_engine, "ticket-summary", 2, prompt=prompt, seed=1) == (
        sample_candidates(db_engine, "ticket-summary", 2, prompt=prompt, seed=1)
    )
    assert len(sample_candidates(db_engine, "ticket-summary", 2, prompt=prompt)) == 2


def test_promotion_needs_every_suite_that_gated_the_version_to_have_passed(
    db_engine: Engine,
) -> None:
    from datetime import timedelta

    from llmops.db.models import EvalGate
    from llmops.ids import utcnow
    from llmops.prompts.labels import passing_gate, promote

    start = utcnow()

    def gate(gate_id: str, suite: str, passed: bool, minutes: int, content: str) -> EvalGate:
        return EvalGate(
            id=gate_id,
            suite=suite,
            prompt_name="summarize",
            candidate_hash=content,
            candidate_run_id="r",
            passed=passed,
            created_at=start + timedelta(minutes=minutes),
        )

    with Session(db_engine) as session:
        (pushed,) = push(session, {"summarize": _summarize("Be brief.")}, author="a")
        h = pushed.content_hash
        session.add_all([gate("g1", "accuracy", True, 1, h), gate("g2", "tone", False, 2, h)])
        session.add(gate("g0", "tone", True, 3, "another-content"))
        session.commit()
        assert passing_gate(session, "summarize", 1) is None
        with pytest.raises(ValidationError, match="every suite that gated it must pass"):
            promote(session, "summarize", 1, actor="dana")
        session.add(gate("g3", "tone", True, 4, h))
        session.commit()
        chosen = passing_gate(session, "summarize", 1)
        assert chosen is not None and chosen.id == "g3"
        assert promote(session, "summarize", 1, actor="dana").eval_run_id == "g3"
