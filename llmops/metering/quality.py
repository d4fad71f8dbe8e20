"""The data-quality gate on rollups, run with Great Expectations (imported lazily: ~5 s).

Checks, on every rollup run and again before every Stripe sync:

- ``rollups``: key columns not null; token counts, calls and cost not negative; the grain
  (granularity, window, tenant, feature, model, prompt name, prompt version) unique;
- ``totals``: per (tenant, hour), the rollups' calls, tokens and cost minus the raw request
  log's (rows the rollup rejected excluded) is exactly zero (differences taken in Decimal);
- ``meter_usage`` (sync only): the billed quantity of each (tenant, meter, hour) minus the
  quantity recomputed from the rollups is zero.

A failure raises :class:`DataQualityError` carrying the full :class:`GateResult`, so the
flow fails visibly and publishes it; the Stripe sync sends nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from llmops.errors import LLMOpsError

#: A pandas DataFrame (pandas ships no type stubs here).
DataFrame = Any

__all__ = ["TOTAL_MEASURES", "Check", "DataQualityError", "GateResult", "run_gate"]

#: Measures compared between rollups and the raw request log, per (tenant, hour).
TOTAL_MEASURES = ("calls", "input_tokens", "output_tokens", "cached_tokens", "cost_usd")
_KEYS = ("granularity", "window_start", "tenant_id", "feature_id", "model")
_NON_NEGATIVE = (
    "calls",
    "successful_calls",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_usd",
    "errors",
)
_GRAIN = [*_KEYS, "prompt_name", "prompt_version"]


@dataclass(frozen=True)
class Check:
    """One expectation's outcome."""

    frame: str
    expectation: str
    column: str
    success: bool
    unexpected_count: int
    examples: list[Any]


@dataclass
class GateResult:
    """All checks of one gate run; ``success`` only if every check passed."""

    success: bool
    checks: list[Check] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.success]

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "rows": self.rows,
            "checks": [
                {
                    "frame": c.frame,
                    "expectation": c.expectation,
                    "column": c.column,
                    "success": c.success,
                    "unexpected_count": c.unexpected_count,
                    "examples": [str(e) for e in c.examples],
                }
                for c in self.checks
            ],
        }

    def markdown(self) -> str:
        verdict = "passed" if self.success else "FAILED"
        rows = ", ".join(f"{name}: {count} rows" for name, count in self.rows.items())
        lines = [
            f"# Metering data-quality gate: {verdict}",
            "",
            rows,
            "",
            "| frame | expectation | column | result | unexpected | examples |",
            "|---|---|---|---|---|---|",
        ]
        for c in self.checks:
            examples = ", ".join(str(e) for e in c.examples[:5])
            lines.append(
                f"| {c.frame} | {c.expectation} | {c.column} | "
                f"{'ok' if c.success else 'FAIL'} | {c.unexpected_count} | {examples} |"
            )
        return "\n".join(lines)


class DataQualityError(LLMOpsError):
    """The data-quality gate failed: rollups are not billable as they stand."""

    def __init__(self, result: GateResult, where: str) -> None:
        self.result = result
        failed = "; ".join(
            f"{c.frame}.{c.column} {c.expectation} ({c.unexpected_count} rows, e.g. "
            f"{', '.join(str(e) for e in c.examples[:3])})"
            for c in result.failures
        )
        super().__init__(f"data-quality gate failed on {where}: {failed}")


def _suite_for(frame: str, df: DataFrame) -> list[Any]:
    from great_expectations.expectations.core.expect_column_values_to_be_between import (
        ExpectColumnValuesToBeBetween,
    )
    from great_expectations.expectations.core.expect_column_values_to_not_be_null import (
        ExpectColumnValuesToNotBeNull,
    )
    from great_expectations.expectations.core.expect_compound_columns_to_be_unique import (
        ExpectCompoundColumnsToBeUnique,
    )

    expectations: list[Any] = []
    if frame == "rollups":
        for column in _KEYS:
            expectations.append(ExpectColumnValuesToNotBeNull(column=column))
        for column in _NON_NEGATIVE:
            expectations.append(ExpectColumnValuesToBeBetween(column=column, min_value=0))
        expectations.append(ExpectCompoundColumnsToBeUnique(column_list=list(_GRAIN)))
    else:
        for column in df.columns:
            if column.endswith("_diff"):
                expectations.append(
                    ExpectColumnValuesToBeBetween(column=column, min_value=0, max_value=0)
                )
    return expectations


def _prepared(frame: str, df: DataFrame) -> DataFrame:
    """A copy GX can compare: Decimal columns as floats (exact for sign and for zero)."""
    out = df.copy()
    for column in out.columns:
        if out[column].dtype == object and column in ("cost_usd", "cost_usd_diff"):
            out[column] = out[column].map(float)
    return out


def _examples(df: DataFrame, column: str, result: dict[str, Any]) -> list[Any]:
    """Up to 10 offending values; for a ``*_diff`` column, the rows' keys with the diff."""
    if column.endswith("_diff") and column in df.columns:
        keys = [c for c in df.columns if not c.endswith("_diff")]
        bad = df[df[column] != 0].head(10)
        return [
            " ".join(f"{k}={row[k]}" for k in keys) + f" {column}={row[column]}"
            for _, row in bad.iterrows()
        ]
    return list(result.get("partial_unexpected_list") or [])[:10]


def run_gate(frames: dict[str, DataFrame]) -> GateResult:
    """Validate ``frames`` (``rollups``, ``totals``, optionally ``meter_usage``) with GX."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("metering")
    result = GateResult(success=True)
    for name, df in frames.items():
        result.rows[name] = len(df)
        if df.empty:
            continue
        expectations = _suite_for(name, df)
        if not expectations:
            continue
        asset = source.add_dataframe_asset(name)
        batch = asset.add_batch_definition_whole_dataframe(f"{name}-all")
        suite = context.suites.add(gx.ExpectationSuite(name=f"metering-{name}"))
        for expectation in expectations:
            suite.add_expectation(expectation)
        validation = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"metering-{name}", data=batch, suite=suite)
        )
        outcome = validation.run(
            batch_parameters={"dataframe": _prepared(name, df)}, result_format="SUMMARY"
        )
        for item in outcome.results:
            config = item.expectation_config
            assert config is not None  # GX fills it on every result of a suite run
            kwargs = config.kwargs
            column = kwargs.get("column") or ",".join(kwargs.get("column_list") or [])
            check = Check(
                frame=name,
                expectation=config.type,
                column=str(column),
                success=bool(item.success),
                unexpected_count=int(item.result.get("unexpected_count") or 0),
                examples=_examples(df, str(column), item.result),
            )
            result.checks.append(check)
            if not check.success:
                result.success = False
    return result
