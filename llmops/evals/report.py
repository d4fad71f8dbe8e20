"""Gate and run reports: plain text for the console, markdown for CI and Prefect
artifacts, JUnit XML for CI test panels."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from llmops.evals.gate import GateReport, MetricComparison
from llmops.evals.runner import RunResult

__all__ = ["gate_junit", "gate_markdown", "gate_text", "run_markdown"]


def _f(value: float | None, fmt: str = ".3f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _ci(m: MetricComparison) -> str:
    if m.ci is None:
        return "n/a"
    return f"{m.ci.mean:+.3f} [{m.ci.low:+.3f}, {m.ci.high:+.3f}]"


def _status(m: MetricComparison) -> str:
    if m.regressed:
        return "REGRESSED"
    if m.below_threshold:
        return "BELOW THRESHOLD"
    return "ok"


def _clip(text: str | None, n: int = 60) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def gate_text(report: GateReport) -> str:
    """The console report."""
    verdict = "PASSED" if report.passed else "FAILED"
    lines = [
        f"eval gate {verdict}: suite {report.suite}, prompt {report.prompt} "
        f"(model group {report.model_group})",
        f"  candidate {report.candidate} vs baseline {report.baseline or '(none)'}; "
        f"{report.examples} examples, {report.pairs} paired; rule {report.rule}",
        f"  provider calls {report.provider_calls}, cached outputs {report.cached_outputs}",
        "",
        f"  {'metric':<20} {'baseline':>9} {'candidate':>9}  {'diff [CI]':<28} "
        f"{'max_drop':>8} {'threshold':>9}  status",
    ]
    for m in report.metrics:
        lines.append(
            f"  {m.metric:<20} {_f(m.baseline_mean):>9} {_f(m.candidate_mean):>9}  "
            f"{_ci(m):<28} {m.max_drop:>8g} {_f(m.threshold, 'g'):>9}  {_status(m)}"
        )
    if report.regressions:
        lines += ["", f"  examples that regressed ({len(report.regressions)}):"]
        for r in report.regressions[:10]:
            lines.append(
                f"    {r['item_id']}: {r['baseline']:.2f} -> {r['candidate']:.2f}  "
                f"{_clip(r['baseline_output'], 30)!r} -> {_clip(r['candidate_output'], 30)!r}"
            )
    if report.unscored:
        lines += ["", f"  unscored ({len(report.unscored)}):"]
        for u in report.unscored[:10]:
            lines.append(f"    {u['item_id']} (trial {u['trial']}): {u['error']}")
    for note in report.notes:
        lines.append(f"  note: {note}")
    if report.reasons:
        lines += ["", "  gate failed because:"] + [f"    - {r}" for r in report.reasons]
    lines.append(f"  gate id {report.gate_id}")
    return "\n".join(lines)


def gate_markdown(report: GateReport) -> str:
    """The markdown report (CI summary, PR comment, Prefect artifact)."""
    icon = "✅ passed" if report.passed else "❌ failed"
    out = [
        f"## Eval gate {icon}: `{report.suite}`",
        "",
        f"Prompt `{report.prompt}`: candidate **{report.candidate}** vs baseline "
        f"**{report.baseline or '(none)'}**, model group `{report.model_group}`, "
        f"{report.examples} examples ({report.pairs} paired), rule `{report.rule}`. "
        f"Provider calls: {report.provider_calls}; cached outputs: {report.cached_outputs}.",
        "",
        "| metric | baseline | candidate | diff [CI] | max drop | threshold | status |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    for m in report.metrics:
        out.append(
            f"| {m.metric} | {_f(m.baseline_mean)} | {_f(m.candidate_mean)} | {_ci(m)} | "
            f"{m.max_drop:g} | {_f(m.threshold, 'g')} | {_status(m)} |"
        )
    if report.reasons:
        out += ["", "**Why it failed**", ""] + [f"- {r}" for r in report.reasons]
    if report.regressions:
        out += [
            "",
            f"### Examples that regressed ({len(report.regressions)})",
            "",
            "| example | baseline | candidate | baseline output | candidate output |",
            "|---|---:|---:|---|---|",
        ]
        for r in report.regressions[:20]:
            out.append(
                f"| {r['item_id']} | {r['baseline']:.2f} | {r['candidate']:.2f} | "
                f"{_md(r['baseline_output'])} | {_md(r['candidate_output'])} |"
            )
    out += _worst_md(report.worst)
    if report.unscored:
        out += ["", f"### Unscored examples ({len(report.unscored)})", ""]
        out += [f"- `{u['item_id']}` (trial {u['trial']}): {u['error']}" for u in report.unscored]
    out += ["", f"Gate id `{report.gate_id}`."]
    return "\n".join(out) + "\n"


def _md(text: str | None) -> str:
    return _clip(text, 60).replace("|", "\\|")


def _worst_md(worst: list[dict[str, Any]]) -> list[str]:
    if not worst:
        return []
    out = ["", "### Worst examples (candidate)", "", "| example | score | output | why |"]
    out.append("|---|---:|---|---|")
    for w in worst:
        out.append(
            f"| {w['item_id']} | {w['score']:.2f} | {_md(w['output'])} | {_md(w['reasons'])} |"
        )
    return out


def run_markdown(run: RunResult) -> str:
    """The markdown summary of one run (metrics and the worst examples)."""
    m = run.metrics
    c = run.candidate
    out = [
        f"## Eval run `{run.suite}`: {c.prompt.name} {c.label} on `{run.model_group}`",
        "",
        f"Run `{run.run_id}`: {len(run.results)} outputs, {m['scored']} scored, "
        f"{len(m['unscored'])} unscored, {run.provider_calls} provider calls, "
        f"cost ${run.cost_usd:.6f}, {run.wall_s:.1f}s.",
        "",
        "| metric | mean | pass rate | n | threshold |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, v in m["metrics"].items():
        out.append(
            f"| {name} | {_f(v['mean'])} | {_f(v['pass_rate'])} | {v['n']} | "
            f"{_f(v['threshold'], 'g')} |"
        )
    if m.get("failures"):
        out += ["", "**Failing:**", ""] + [f"- {f}" for f in m["failures"]]
    scored = [r for r in run.results if r.status == "scored" and r.score < 1.0]
    scored.sort(key=lambda r: (r.score, r.item_id))
    worst = [
        {
            "item_id": r.item_id,
            "score": r.score,
            "output": r.output,
            "reasons": "; ".join(s["reason"] for s in r.scores.values() if not s["passed"]),
        }
        for r in scored[:10]
    ]
    out += _worst_md(worst)
    if m["unscored"]:
        out += ["", f"### Unscored ({len(m['unscored'])})", ""]
        out += [f"- `{u['item_id']}` (trial {u['trial']}): {u['error']}" for u in m["unscored"]]
    return "\n".join(out) + "\n"


def gate_junit(report: GateReport) -> str:
    """JUnit XML: one test case per metric, plus one for unscored examples."""
    unscored_reasons = [r for r in report.reasons if "unscored" in r]
    suite = ET.Element(
        "testsuite",
        name=f"llmops-eval-gate.{report.suite}",
        tests=str(len(report.metrics) + 1),
        failures=str(sum(1 for m in report.metrics if m.failed) + bool(unscored_reasons)),
        errors="0",
    )
    for m in report.metrics:
        case = ET.SubElement(
            suite, "testcase", classname=f"eval.{report.suite}", name=f"{report.prompt}.{m.metric}"
        )
        if m.failed:
            failure = ET.SubElement(
                case, "failure", message=m.reason or _status(m), type=_status(m)
            )
            failure.text = "\n".join(
                f"{r['item_id']}: {r['baseline']:.2f} -> {r['candidate']:.2f}"
                for r in report.regressions[:50]
            )
        ET.SubElement(
            case, "system-out"
        ).text = f"baseline {_f(m.baseline_mean)} candidate {_f(m.candidate_mean)} diff {_ci(m)}"
    case = ET.SubElement(
        suite, "testcase", classname=f"eval.{report.suite}", name=f"{report.prompt}.unscored"
    )
    listing = "\n".join(f"{u['item_id']}: {u['error']}" for u in report.unscored)
    if unscored_reasons:
        failure = ET.SubElement(case, "failure", message=unscored_reasons[0], type="UNSCORED")
        failure.text = listing
    elif listing:
        ET.SubElement(case, "system-out").text = listing
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
