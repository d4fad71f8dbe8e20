"""The eval runner's throughput and cache, on the issue's shape: 100 examples x 2 prompt
versions through the gateway core at 200 ms simulated latency.

First run: a gate (candidate and baseline share one concurrency limit) on an empty ops DB
and cache; its wall time is compared with the ideal in the same run,
``examples x versions x latency / concurrency`` (a runner that keeps every slot busy and
costs nothing itself). promptfoo 0.123 reaches 0.22 of that ideal on this kind of machine
and shape. Then the cached rerun: wall time, and provider calls counted by the simulator
(target: zero calls, under 5% of the first run's time). A direct asyncio loop of the same
calls through the gateway core (same tenant, under a spend cap as eval calls are), without
the eval runner, is measured too, so the runner's own overhead shows as a ratio. SQLite
ops DB in a temporary folder; LiteLLM and SciPy are imported before timing. Timings on a
shared machine are noisy: read the ratios. The last line is one JSON object with every
figure.

    uv run python bench/eval_run.py [--examples 100] [--latency-ms 200] [--concurrency 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from llmops.settings import apply_offline_env

apply_offline_env()

from sqlmodel import Session  # noqa: E402

from llmops.db.engine import make_engine  # noqa: E402
from llmops.db.migrate import upgrade  # noqa: E402
from llmops.evals.gate import run_gate  # noqa: E402
from llmops.evals.suites import load_suite  # noqa: E402
from llmops.gateway.config import GatewayConfig  # noqa: E402
from llmops.gateway.core import ChatRequest, Gateway  # noqa: E402
from llmops.prompts.files import PromptFile  # noqa: E402
from llmops.prompts.refs import PromptRef  # noqa: E402
from llmops.prompts.store import register_version  # noqa: E402
from llmops.sim import SimConfig, SimServer  # noqa: E402

LABELS = ["billing", "bug", "howto", "account"]


def _prompt(system: str) -> PromptFile:
    return PromptFile.model_validate(
        {
            "name": "classify",
            "model_group": "fast",
            "params": {"temperature": 0, "max_tokens": 8},
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": "{{ ticket }}"},
            ],
        }
    )


def _setup(root: Path, examples: int, concurrency: int) -> Path:
    for sub in ("datasets", "suites"):
        (root / "evals" / sub).mkdir(parents=True)
    lines = [
        {"id": f"t{i:03d}", "input": {"ticket": f"[T{i:03d}] issue"}, "expected": LABELS[i % 4]}
        for i in range(examples)
    ]
    (root / "evals" / "datasets" / "bench.jsonl").write_text(
        "".join(json.dumps(x) + "\n" for x in lines)
    )
    suite = root / "evals" / "suites" / "bench.yaml"
    suite.write_text(
        f"name: bench\nprompt: classify\ndataset: bench\nconcurrency: {concurrency}\n"
        'spend_cap_usd: "100"\nscorers:\n  - {name: exact}\n'
    )
    return suite


def _gateway_config(base_url: str) -> GatewayConfig:
    dep = {"id": "d", "model": "openai/gpt-4o-mini", "api_base": base_url, "api_key": "k"}
    return GatewayConfig.model_validate(
        {
            "settings": {"timeout_s": 30, "num_retries": 0},
            "model_groups": {"fast": {"deployments": [dep]}},
            "prices": [
                {"model": "openai/gpt-4o-mini", "input_per_mtok": "0.15", "output_per_mtok": "0.6"}
            ],
        }
    )


async def _direct(gateway: Gateway, prompts: list[PromptFile], examples: int, c: int) -> float:
    """The same calls in a bare asyncio loop through the gateway core (no eval runner)."""
    gate = asyncio.Semaphore(c)

    async def one(prompt: PromptFile, i: int) -> None:
        async with gate:
            await gateway.chat(
                ChatRequest(
                    tenant_id="eval",
                    feature_id="eval-direct",
                    messages=prompt.render({"ticket": f"[T{i:03d}] issue (direct)"}),
                    model_group="fast",
                    max_tokens=8,
                )
            )

    started = time.perf_counter()
    await asyncio.gather(*(one(p, i) for p in prompts for i in range(examples)))
    return time.perf_counter() - started


async def main(examples: int, latency_ms: float, concurrency: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        suite_path = _setup(root, examples, concurrency)
        url = f"sqlite:///{root / 'ops.db'}"
        upgrade(url)
        engine = make_engine(url)
        sim_config = {
            "seed": 1,
            "datasets": [str(root / "evals" / "datasets" / "*.jsonl")],
            "default": {"ttft_ms": latency_ms, "tokens_per_s": 0, "error_rate": 0.1},
        }
        prompts = [_prompt("Answer with one word."), _prompt("Reply with a single word.")]
        with SimServer(SimConfig.model_validate(sim_config)) as sim:
            gateway = Gateway(_gateway_config(sim.base_url), engine)
            try:
                with Session(engine) as session:
                    base_v = register_version(session, prompts[0]).version
                    session.commit()
                base = PromptRef(prompts[0], base_v, f"v{base_v}")
                cand = PromptRef(prompts[1], None, "file")
                suite = load_suite(suite_path)
                # The bare loop runs under a spend cap too, as every eval call does.
                gateway.budgets.set_cap(
                    tenant_id="eval", feature_id="eval-direct", limit_usd=Decimal(100), period="day"
                )
                await _direct(gateway, prompts[:1], 5, 5)  # warm up LiteLLM and the pool
                import scipy.stats  # noqa: F401 - warm: its first import takes seconds here

                sim.reset()
                direct_s = await _direct(gateway, prompts, examples, concurrency)
                direct_calls = sim.stats()["total"]
                sim.reset()
                started = time.perf_counter()
                first = await run_gate(engine, gateway, suite, cand, base)
                first_s = time.perf_counter() - started
                first_calls = sim.stats()["total"]
                started = time.perf_counter()
                second = await run_gate(engine, gateway, suite, cand, base)
                second_s = time.perf_counter() - started
                second_calls = sim.stats()["total"] - first_calls
            finally:
                await gateway.aclose()
                engine.dispose()
    ideal = examples * len(prompts) * latency_ms / 1000 / concurrency
    return {
        "examples": examples,
        "versions": len(prompts),
        "latency_ms": latency_ms,
        "concurrency": concurrency,
        "cpu_count": os.cpu_count(),
        "ideal_s": round(ideal, 3),
        "direct_gateway_s": round(direct_s, 3),
        "direct_gateway_calls": direct_calls,
        "first_run_s": round(first_s, 3),
        "first_run_provider_calls": first_calls,
        "first_run_gate_passed": first.passed,
        "ideal_over_first_run": round(ideal / first_s, 3),
        "ideal_over_direct_gateway": round(ideal / direct_s, 3),
        "direct_over_first_run": round(direct_s / first_s, 3),
        "cached_rerun_s": round(second_s, 3),
        "cached_rerun_provider_calls": second_calls,
        "cached_rerun_outputs_from_cache": second.cached_outputs,
        "cached_rerun_over_first_run": round(second_s / first_s, 4),
        "promptfoo_0_123_reference_ratio": 0.22,
    }


def _print(r: dict[str, Any]) -> None:
    rows = [
        ("ideal (examples x versions x latency / concurrency)", r["ideal_s"], "1.00 (baseline)"),
        (
            "gateway core (capped), bare asyncio loop",
            r["direct_gateway_s"],
            r["ideal_over_direct_gateway"],
        ),
        ("eval gate, first run (200 calls)", r["first_run_s"], r["ideal_over_first_run"]),
        ("eval gate, cached rerun", r["cached_rerun_s"], "-"),
    ]
    print(
        f"eval runner: {r['examples']} examples x {r['versions']} versions, "
        f"{r['latency_ms']:g} ms latency, concurrency {r['concurrency']}, "
        f"{r['cpu_count']} CPUs (shared machine: timings are noisy, read the ratios)"
    )
    print(f"{'what':<54} {'wall s':>8}  ideal / wall")
    for what, wall, ratio in rows:
        print(f"{what:<54} {wall:>8.3f}  {ratio}")
    print(
        f"first run provider calls {r['first_run_provider_calls']}; cached rerun provider calls "
        f"{r['cached_rerun_provider_calls']} ({r['cached_rerun_outputs_from_cache']} outputs "
        f"from the cache), rerun / first run time {r['cached_rerun_over_first_run']:.2%}"
    )
    print(f"promptfoo 0.123 on this shape reaches {r['promptfoo_0_123_reference_ratio']} of ideal")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args()
    result = asyncio.run(main(args.examples, args.latency_ms, args.concurrency))
    _print(result)
    print(json.dumps(result))
