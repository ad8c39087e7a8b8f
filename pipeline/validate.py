"""validate: a Great Expectations suite over the manifest.

Row-level expectations (readable, decodable, size, mode, label, text length) name the rows that
fail; those rows are quarantined with their reasons (`on_bad_rows: quarantine`) or stop the run
(`fail`). Dataset-level expectations (columns, examples per class per split, leakage across
splits, share of bad rows) always stop the run. Nothing downstream reads a manifest that failed.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from pipeline.errors import DataValidationError
from pipeline.io import write_json_atomic, write_parquet_atomic, write_text_atomic
from pipeline.parallel import map_files
from pipeline.params import Params, ValidateParams, freeze_labels, save_resolved
from pipeline.prepare import SPLITS
from pipeline.validate_report import render_html

REQUIRED_COLUMNS = ["id", "modality", "label", "sha256", "split", "error"]
_KEEP_INDEX_ENTRIES = 100  # per expectation in validation.json; the quarantine file lists all


@dataclass(frozen=True)
class Check:
    name: str
    level: str  # "row" or "dataset"
    severity: str  # "critical" or "warning"
    success: bool
    unexpected: int
    detail: str


@dataclass(frozen=True)
class ValidationReport:
    success: bool
    modality: str
    labels: list[str]
    labels_inferred: bool
    accepted: pd.DataFrame
    quarantine: pd.DataFrame
    checks: list[Check]
    failures: list[str]
    warnings: list[str]
    counts: dict[str, dict[str, int]]
    gx: dict[str, Any]
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "modality": self.modality,
            "rows": len(self.accepted) + len(self.quarantine),
            "accepted": len(self.accepted),
            "quarantined": len(self.quarantine),
            "labels": self.labels,
            "labels_inferred": self.labels_inferred,
            "counts": self.counts,
            "failures": self.failures,
            "warnings": self.warnings,
            "checks": [c.__dict__ for c in self.checks],
            "seconds": round(self.seconds, 3),
        }


# ---------------------------------------------------------------- image decoding


def decode_check(args: tuple[str, str, int]) -> str | None:
    """None if the image verifies and a thumbnail really decodes, else the reason."""
    root, rel, side = args
    path = Path(root) / rel
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.verify()
            with Image.open(path) as im:
                # a full load: JPEG's reduced-scale draft decoding does not notice truncation
                im.load()
                im.thumbnail((side, side))
    except Exception as exc:
        return (f"image does not decode ({type(exc).__name__}: {exc}); "
                "re-export the file from its source or remove it")
    return None


def decode_errors(manifest: pd.DataFrame, root: str, side: int, workers: int,
                  meanwhile: Any = None) -> pd.Series:
    todo = manifest.index[manifest["error"].isna() & manifest["path"].notna()]
    items = [(root, manifest.at[i, "path"], side) for i in todo]
    result = pd.Series([None] * len(manifest), index=manifest.index, dtype=object)
    result.loc[todo] = list(map_files(decode_check, items, workers, "decoding images", meanwhile))
    return result


# ---------------------------------------------------------------- the GX suites


def _row_expectations(modality: str, labels: list[str], v: ValidateParams) -> list[tuple[Any, Any]]:
    """(expectation, reason(row) -> str) pairs; the reason tells the user the fix."""
    import great_expectations.expectations as gxe

    rows: list[tuple[Any, Any]] = [
        (gxe.ExpectColumnValuesToBeNull(column="error"), lambda r: r["error"]),
        (gxe.ExpectColumnValuesToBeInSet(column="label", value_set=labels),
         lambda r: (f"label '{r['label']}' is not one of validate.labels {labels}: fix the label, "
                    "or add it to validate.labels in params.yaml to accept a new class")),
    ]
    if modality == "image":
        im = v.image
        size = (f"validate.image allows {im.min_width}..{im.max_width} x "
                f"{im.min_height}..{im.max_height} pixels: resize it or change validate.image")
        rows += [
            (gxe.ExpectColumnValuesToBeNull(column="decode_error"), lambda r: r["decode_error"]),
            (gxe.ExpectColumnValuesToBeBetween(column="width", min_value=im.min_width, max_value=im.max_width),
             lambda r: f"image is {r['width']}x{r['height']}; {size}"),
            (gxe.ExpectColumnValuesToBeBetween(column="height", min_value=im.min_height, max_value=im.max_height),
             lambda r: f"image is {r['width']}x{r['height']}; {size}"),
            (gxe.ExpectColumnValuesToBeInSet(column="mode", value_set=im.modes),
             lambda r: (f"image mode {r['mode']}{_mode_note(r['mode'])} is not in validate.image.modes "
                        f"{im.modes}: convert it to RGB (PIL: Image.convert('RGB')) or allow the mode")),
        ]
    else:
        t = v.text
        rows += [
            (gxe.ExpectColumnValuesToBeBetween(column="n_chars", min_value=max(t.min_chars, 1), max_value=t.max_chars),
             lambda r: ("text is empty: fill it in or remove the row" if not r["n_chars"] else
                        f"text has {r['n_chars']} characters; validate.text allows "
                        f"{t.min_chars}..{t.max_chars}")),
        ]
    return rows


def _mode_note(mode: str | None) -> str:
    notes = {"CMYK": " (print colours)", "I;16": " (16-bit)", "I;16B": " (16-bit)", "I": " (32-bit integer)",
             "F": " (32-bit float)"}
    return notes.get(mode or "", "")


class _Suites:
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


def _failed_keys(er: Any, index: str) -> list[Any]:
    if er.success:
        return []
    if er.exception_info and er.exception_info.get("raised_exception"):
        raise DataValidationError(f"validation check {er.expectation_config.type} could not run: "
                                  f"{er.exception_info.get('exception_message')}")
    return [entry[index] for entry in er.result.get("unexpected_index_list") or []]


def _check(er: Any, level: str, detail: str, unexpected: int | None = None) -> Check:
    cfg = er.expectation_config
    kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id",)}
    name = f"{cfg.type}({', '.join(f'{k}={v}' for k, v in kwargs.items() if k != 'value_set')})"
    count = unexpected if unexpected is not None else int(er.result.get("unexpected_count") or 0)
    return Check(name, level, str(cfg.severity.value), bool(er.success), count, detail)


def validate_manifest(manifest: pd.DataFrame, v: ValidateParams, classes: list[str], data_root: str,
                      workers: int = 0) -> ValidationReport:
    """Run the suites; returns the report (success False on any failure: the caller decides)."""
    start = time.perf_counter()
    modality = str(manifest["modality"].iloc[0]) if len(manifest) and "modality" in manifest else "image"
    labels = list(v.labels) or sorted(classes)
    frame = manifest.copy()
    # Importing Great Expectations takes 4-5 s on 2 cores: it happens while the worker
    # processes decode the images.
    import_gx = lambda: importlib.import_module("great_expectations.expectations")  # noqa: E731
    if modality == "image" and {"path", "error"} <= set(frame.columns):
        frame["decode_error"] = decode_errors(frame, data_root, v.image.thumbnail, workers, meanwhile=import_gx)
    import great_expectations.expectations as gxe

    suites = _Suites()
    checks: list[Check] = []
    failures: list[str] = []
    notes: list[str] = []

    (cols,) = suites.run("columns", manifest.head(0), [
        gxe.ExpectTableColumnsToMatchSet(column_set=REQUIRED_COLUMNS, exact_match=False)], "id")
    if not cols.success:
        missing = sorted(set(REQUIRED_COLUMNS) - set(manifest.columns))
        raise DataValidationError(f"the manifest lacks columns {missing}; re-run `graft prepare`")

    # row level
    row_exps = _row_expectations(modality, labels, v)
    reasons: dict[str, list[str]] = {}
    by_id = frame.set_index("id", drop=False)
    for (_exp, why), er in zip(row_exps, suites.run("rows", frame, [e for e, _ in row_exps], "id"), strict=True):
        bad = _failed_keys(er, "id")
        for rid in bad:
            reasons.setdefault(rid, []).append(str(why(by_id.loc[rid])))
        checks.append(_check(er, "row", f"{len(bad)} row(s) fail" if bad else "all rows pass"))
    bad_mask = frame["id"].isin(list(reasons))
    quarantine = frame[bad_mask].assign(reason=frame.loc[bad_mask, "id"].map(lambda i: "; ".join(reasons[i])))
    accepted = frame[~bad_mask]
    if reasons and v.on_bad_rows == "fail":
        failures.append(f"{len(reasons)} row(s) fail row-level checks and validate.on_bad_rows is 'fail' "
                        "(set it to 'quarantine' to set them aside instead)")
    share = len(quarantine) / max(len(frame), 1)
    checks.append(Check("share of bad rows", "dataset", "critical", share <= v.max_bad_fraction,
                        len(quarantine), f"{share:.1%} of rows fail; validate.max_bad_fraction is {v.max_bad_fraction:.0%}"))
    if share > v.max_bad_fraction:
        failures.append(f"{share:.1%} of rows fail row-level checks, above validate.max_bad_fraction="
                        f"{v.max_bad_fraction}; see the quarantine list for the reasons")

    # dataset level, on the rows that would be used
    counts_frame = (accepted.groupby(["label", "split"]).size().unstack(fill_value=0)
                    .reindex(index=labels, columns=list(SPLITS), fill_value=0).reset_index())
    mins = v.min_per_class
    class_exps = [gxe.ExpectTableRowCountToBeBetween(min_value=2)] + [
        gxe.ExpectColumnValuesToBeBetween(column=s, min_value=getattr(mins, s)) for s in SPLITS]
    class_results = suites.run("classes", counts_frame, class_exps, "label")
    if not class_results[0].success:
        failures.append(f"only {len(labels)} class(es) {labels}: classification needs at least 2")
    checks.append(_check(class_results[0], "dataset", f"{len(labels)} classes"))
    for split, er in zip(SPLITS, class_results[1:], strict=True):
        short = _failed_keys(er, "label")
        for label in short:
            n = int(counts_frame.set_index("label").at[label, split])
            folder = f" ({data_root}/{label} has no usable images)" if modality == "image" and n == 0 else ""
            total = int(counts_frame.set_index("label").loc[label, list(SPLITS)].sum())
            why = (f" (each example's split is drawn from its content hash, and {total} example(s) "
                   f"drew {n} for {split}: add examples, give train/val/test folders, or raise "
                   f"prepare.split.{split})") if total else ""
            failures.append(f"class '{label}' has {n} usable example(s) in {split}, below "
                            f"validate.min_per_class.{split}={getattr(mins, split)}{folder}{why}; "
                            "add examples or lower the minimum")
        checks.append(_check(er, "dataset", f"{len(short)} class(es) short in {split}"))

    hashes = accepted[["sha256", "split"]].dropna().drop_duplicates()
    (leak,) = suites.run("leakage", hashes, [gxe.ExpectColumnValuesToBeUnique(column="sha256")], "sha256")
    leaked = sorted(set(_failed_keys(leak, "sha256")))
    for sha in leaked[:20]:
        dup = accepted[accepted["sha256"] == sha]
        where = ", ".join(f"{r.path if modality == 'image' else r.id} ({r.split})" for r in dup.itertuples())
        failures.append(f"the same content is in more than one split: {where}; keep one copy")
    checks.append(_check(leak, "dataset", f"{len(leaked)} content hash(es) in several splits", len(leaked)))

    (dups,) = suites.run("duplicates", accepted, [gxe.ExpectCompoundColumnsToBeUnique(
        column_list=["sha256", "split"], severity="warning")], "id")
    dup_ids = _failed_keys(dups, "id")
    if dup_ids:
        notes.append(f"{len(dup_ids)} rows share their content with another row of the same split "
                     f"(e.g. {', '.join(map(str, dup_ids[:5]))}); they are kept")
    checks.append(_check(dups, "dataset", f"{len(dup_ids)} duplicate row(s) within splits"))

    counts = {str(r["label"]): {s: int(r[s]) for s in SPLITS} for r in counts_frame.to_dict("records")}
    return ValidationReport(
        success=not failures, modality=modality, labels=labels, labels_inferred=not v.labels,
        accepted=accepted.reset_index(drop=True), quarantine=quarantine.reset_index(drop=True),
        checks=checks, failures=failures, warnings=notes, counts=counts, gx=suites.raw,
        seconds=time.perf_counter() - start)


def run_validate(params: Params, prepare_dir: str | Path, out_dir: str | Path,
                 params_file: str | Path | None = None) -> ValidationReport:
    """Stage entry: validate prepare's manifest and write the report, quarantine and accepted rows.

    On failure the reports are written and DataValidationError raised; the previous accepted
    manifest and params.yaml are left as they were.
    """
    prep, out = Path(prepare_dir), Path(out_dir)
    manifest_path = prep / "manifest.parquet"
    if not manifest_path.exists():
        raise DataValidationError(f"{manifest_path} does not exist; run `graft prepare` first")
    info = json.loads((prep / "prepare.json").read_text(encoding="utf-8"))
    manifest = pd.read_parquet(manifest_path)
    report = validate_manifest(manifest, params.validate_, info["classes"], info["data_root"],
                               params.prepare.workers)
    summary = report.summary()
    write_json_atomic(out / "validation.json", {"summary": summary, "great_expectations": report.gx})
    keep = ["id", "path", "text", "label", "split", "reason"]
    write_text_atomic(out / "quarantine.csv", report.quarantine.reindex(columns=keep).to_csv(index=False))
    write_text_atomic(out / "report.html", render_html(summary, report.quarantine))
    if not report.success:
        raise DataValidationError(
            "validation failed:\n  - " + "\n  - ".join(report.failures), str(out / "report.html"), summary)
    write_parquet_atomic(out / "manifest.parquet", report.accepted)
    write_json_atomic(out / "summary.json", {k: summary[k] for k in
                                             ("success", "rows", "accepted", "quarantined")})
    used = params.validate_.model_copy(update={"labels": report.labels})
    save_resolved(params.model_copy(update={"validate_": used}), out, "validate")
    if report.labels_inferred and params_file is not None and Path(params_file).exists():
        freeze_labels(params_file, report.labels)
    return report
