"""The Great Expectations side of validate: one ephemeral context, the row expectations with a
reason (and fix) for each failing row, and the readable `Check` each expectation result becomes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pipeline.core.errors import DataValidationError
from pipeline.core.params import ValidateParams
from pipeline.modalities.registry import get_modality

_KEEP_INDEX_ENTRIES = 100  # per expectation in validation.json; the quarantine file lists all


@dataclass(frozen=True)
class Check:
    name: str
    level: str  # "row" or "dataset"
    severity: str  # "critical" or "warning"
    success: bool
    unexpected: int
    detail: str



def row_expectations(modality: str, labels: list[str], v: ValidateParams) -> list[tuple[Any, Any]]:
    """(expectation, reason(row) -> str) pairs; the reason tells the user the fix. The modality adds
    its own (decoding, sizes, durations, lengths)."""
    import great_expectations.expectations as gxe

    rows: list[tuple[Any, Any]] = [
        (gxe.ExpectColumnValuesToBeNull(column="error"), lambda r: r["error"]),
        (gxe.ExpectColumnValuesToBeInSet(column="label", value_set=labels), lambda r: _label_reason(r["label"], labels)),
    ]
    return rows + get_modality(modality).row_expectations(v, gxe)


def _label_reason(label: str, labels: list[str]) -> str:
    same = [c for c in labels if c.casefold().strip() == str(label).casefold().strip()]
    if same:
        return (f"label {label!r} differs from the class {same[0]!r} only by case or surrounding space: "
                "fix the row's spelling")
    return (f"label '{label}' is not one of validate.labels {labels}: fix the label, "
            "or add it to validate.labels in params.yaml to accept a new class")


class Suites:
    """One ephemeral GX context; each call validates one frame against a list of expectations."""

    def __init__(self) -> None:
        import great_expectations as gx

        logging.getLogger("great_expectations").setLevel(logging.ERROR)
        self.gx = gx
        self.ctx = gx.get_context(mode="ephemeral")
        self.ctx.variables.progress_bars = {"globally": False}
        self.source = self.ctx.data_sources.add_pandas("graft")
        self.raw: dict[str, Any] = {}

    def run(self, name: str, frame: pd.DataFrame, expectations: list[Any], index: str) -> list[Any]:
        gx = self.gx
        batch = self.source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        suite = self.ctx.suites.add(gx.ExpectationSuite(name=name))
        for exp in expectations:
            suite.add_expectation(exp)
        vd = self.ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
        result = vd.run(batch_parameters={"dataframe": frame}, result_format={
            "result_format": "COMPLETE", "unexpected_index_column_names": [index]})
        self.raw[name] = _trim(result.to_json_dict())
        by_id = {er.expectation_config.id: er for er in result.results}
        return [by_id[e.id] for e in suite.expectations]


def _trim(raw: dict[str, Any]) -> dict[str, Any]:
    for er in raw.get("results", []):
        res = er.get("result", {})
        for key in ("unexpected_index_list", "unexpected_list", "partial_unexpected_list",
                    "partial_unexpected_index_list", "partial_unexpected_counts", "unexpected_index_query"):
            if isinstance(res.get(key), list) and len(res[key]) > _KEEP_INDEX_ENTRIES:
                res[key] = [*res[key][:_KEEP_INDEX_ENTRIES], f"... {len(res[key]) - _KEEP_INDEX_ENTRIES} more"]
    return json.loads(json.dumps(raw, default=str))


def failed_keys(er: Any, index: str) -> list[Any]:
    if er.success:
        return []
    if er.exception_info and er.exception_info.get("raised_exception"):
        raise DataValidationError(f"validation check {er.expectation_config.type} could not run: "
                                  f"{er.exception_info.get('exception_message')}")
    return [entry[index] for entry in er.result.get("unexpected_index_list") or []]


def check_result(er: Any, level: str, detail: str, unexpected: int | None = None) -> Check:
    cfg = er.expectation_config
    kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id",)}
    name = f"{cfg.type}({', '.join(f'{k}={v}' for k, v in kwargs.items() if k != 'value_set')})"
    count = unexpected if unexpected is not None else int(er.result.get("unexpected_count") or 0)
    return Check(name, level, str(cfg.severity.value), bool(er.success), count, detail)
