"""PII redaction: accuracy on the labelled corpus, and what it costs per request.

Prints the per-entity precision / recall / F1 table for ``tests/data/pii_corpus.jsonl``,
then the throughput of ``Redactor.redact_messages`` (what the gateway calls on every
request) on a ~2 KB prompt without PII and a ~2 KB prompt full of it, next to a baseline
measured in the same run: ``json.dumps`` of the same messages, which the request log pays
anyway. Then the cost of each detector alone on the no-PII prompt. Timings are the best
of several repeats (the least disturbed by other processes). The last line is one JSON
object with every figure. Not a test: nothing here asserts.

    uv run python bench/pii_accuracy.py [--seconds 0.2]
"""

from __future__ import annotations

import argparse
import json
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmops.gateway.pii.evaluation import evaluate, load_corpus
from llmops.gateway.redaction import BUILTIN_ENTITIES, EntityMode, RedactionPolicy, Redactor

CORPUS = Path(__file__).parents[1] / "tests" / "data" / "pii_corpus.jsonl"

NO_PII = """You are a support assistant for Acme Analytics. Answer in a friendly, concise tone.

Ticket #48213 (priority P2, opened 2024-03-15 09:42 UTC, product Acme Desktop 4.12.1):
The customer reports that the CSV export button does nothing in Firefox 124.0.2 on
Windows 11 (build 22631.3296). They tried clearing the cache, disabling extensions and
restarting; the export still fails silently after about 30 seconds. The same workspace
exports fine in Chrome 123. Their plan is Team (25 seats, $1,299.00 per year), renewed on
15/03/2024, invoice INV-2024-0042. Order ORD-2024-001234 added 5 seats on 2024-04-02.
Similar reports: #47990 and #48102, both on Firefox, both with workspaces over 50,000 rows.
Release notes for 4.12.0 mention a new streaming exporter (PR 8812) and a 10 MB limit per
chunk; 4.12.1 fixed a memory leak (issue 8840). Server logs show 3 retries at 09:43:07,
09:43:19 and 09:43:31 with HTTP 413, request ids 9f1c2d7e and 0a77b3c4.

Tasks:
1. Summarize the issue in three bullet points.
2. Suggest the two most likely causes, citing the release notes above.
3. Draft a reply asking for the browser console output, the approximate time of the last
   attempt and the number of rows in the export, and offer a workaround (export in
   smaller date ranges, e.g. 2024-01-01 to 2024-01-31, or use Chrome meanwhile).
4. Tag the ticket with one of: export, performance, browser-compat, billing.
Keep the reply under 150 words and do not promise a fix date.
"""

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PII_HEAVY = f"""Summarize these CRM records and flag anything unusual.

1. Maria Garcia, maria.garcia@example.com, +1 (415) 555-0132, card 4111 1111 1111 1111,
   IBAN DE89 3704 0044 0532 0130 00, SSN 536-22-1948, last login from 203.0.113.42.
2. Tom Nguyen, tom.nguyen@startup.ai, 020 7946 0958, card 5555-5555-5555-4444,
   IBAN GB82 WEST 1234 5698 7654 32, logged in from 2001:db8:85a3::8a2e:370:7334.
3. Lukas Mueller, l.mueller@outlook.de, 030 1234567 / +49 151 23456789,
   IBAN NL91ABNA0417164300, card 378282246310005, last seen at 198.51.100.7.
4. Sofia Rossi, sofia.rossi@company.fr, 01 23 45 67 89, +33 6 12 34 56 78,
   card 6011 1111 1111 1117, SSN 219-45-8766, IP 192.168.10.25.
5. Integration owner: devops@acme-corp.co.uk, key AKIAIOSFODNN7EXAMPLE,
   aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY,
   token ghp_0123456789abcdefghijABCDEFGHIJ012345, Stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc,
   OpenAI sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56Qr78St90Uv12Wx34,
   session {JWT}
6. Priya Patel, priya.patel@health.gov.au, +61 412 345 678, SSN 536-22-1949,
   card 3530 1113 3330 0000, IBAN FR14 2004 1010 0505 0001 3M02 606, from 10.0.3.17.
"""


def best_seconds(fn: Callable[[], Any], budget_s: float) -> float:
    """Best per-call time over 7 repeats of as many calls as fit in ``budget_s``."""
    fn()
    n = max(1, int(budget_s / max(timeit.timeit(fn, number=3) / 3, 1e-7)))
    return min(timeit.repeat(fn, number=n, repeat=7)) / n


def throughput(name: str, text: str, budget_s: float) -> dict[str, float]:
    messages = [{"role": "system", "content": "Be concise."}, {"role": "user", "content": text}]
    redactor = Redactor(RedactionPolicy())
    redaction = redactor.redact_messages(messages)
    kb = len(text.encode()) / 1024
    t_redact = best_seconds(lambda: redactor.redact_messages(messages), budget_s)
    t_json = best_seconds(lambda: json.dumps(messages, ensure_ascii=False), budget_s)
    return {
        "prompt": name,  # type: ignore[dict-item]
        "kb": round(kb, 2),
        "entities": redaction.total,
        "us_per_prompt": round(t_redact * 1e6, 1),
        "prompts_per_s": round(1 / t_redact),
        "us_per_kb": round(t_redact * 1e6 / kb, 1),
        "json_dumps_us": round(t_json * 1e6, 1),
        "ratio_to_json_dumps": round(t_redact / t_json, 1),
    }


def per_detector(text: str, budget_s: float) -> dict[str, float]:
    """Microseconds for one detector alone (the others off) on ``text``."""
    out = {}
    for entity in BUILTIN_ENTITIES:
        modes = {e: EntityMode.MASK if e == entity else EntityMode.OFF for e in BUILTIN_ENTITIES}
        redactor = Redactor(RedactionPolicy(entities=modes))
        out[entity] = round(best_seconds(lambda r=redactor: r.detect(text), budget_s) * 1e6, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.2, help="time budget per repeat")
    args = parser.parse_args()

    cases = load_corpus(CORPUS)
    t0 = time.perf_counter()
    report = evaluate(Redactor(RedactionPolicy()).detect, cases)
    corpus_s = time.perf_counter() - t0
    print(f"corpus: {len(cases)} cases ({report.negatives} hard negatives), {CORPUS.name}")
    print(report.table())
    print()

    runs = [
        throughput("no PII", NO_PII, args.seconds),
        throughput("PII-heavy", PII_HEAVY, args.seconds),
    ]
    header = (
        "prompt",
        "kb",
        "entities",
        "us/prompt",
        "prompts/s",
        "us/KB",
        "json.dumps us",
        "x json",
    )
    print(("{:<10}" + "{:>14}" * 7).format(*header))
    for r in runs:
        print(("{:<10}" + "{:>14}" * 7).format(*r.values()))
    print()
    detectors = per_detector(NO_PII, args.seconds / 4)
    print(
        "per detector on the no-PII prompt (us): "
        + ", ".join(f"{k} {v}" for k, v in detectors.items())
    )

    summary = {
        "corpus_cases": len(cases),
        "hard_negatives": report.negatives,
        "hard_negatives_with_findings": len(report.noisy_negatives),
        "corpus_seconds": round(corpus_s, 3),
        "entities": {
            entity: {
                "tp": s.tp,
                "fp": s.fp,
                "fn": s.fn,
                "precision": round(s.precision, 4),
                "recall": round(s.recall, 4),
                "f1": round(s.f1, 4),
            }
            for entity, s in sorted(report.scores.items())
        },
        "throughput": runs,
        "detector_us_no_pii": detectors,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
