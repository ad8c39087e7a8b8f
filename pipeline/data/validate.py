"""validate: a Great Expectations suite over the manifest.

Row-level expectations (readable, decodable, size, mode, label, text length) name the rows that
fail; those rows are quarantined with their reasons (`on_bad_rows: quarantine`) or stop the run
(`fail`). Dataset-level expectations (columns, examples per class per split, leakage across
splits, share of bad rows) always stop the run. Nothing downstream reads a manifest that failed.
"""

from __future__ import annotations

import importlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core.artifacts import (
    MANIFEST,
    PREPARE_SUMMARY,
    QUARANTINE,
    SPLITS,
    VALIDATION,
    VALIDATION_HTML,
    VALIDATION_METRICS,
    Workspace,
    require,
)
from pipeline.core.config import freeze_labels, save_resolved
from pipeline.core.errors import DataValidationError
from pipeline.core.io import write_json_atomic, write_parquet_atomic, write_text_atomic
from pipeline.core.params import Params, ValidateParams
from pipeline.data.expectations import Check, Suites, check_result, failed_keys, row_expectations
from pipeline.data.validate_report import render_html
from pipeline.modalities.registry import get_modality

REQUIRED_COLUMNS = ["id", "modality", "label", "sha256", "split", "error"]


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


SPLIT_ORDER = {s: i for i, s in enumerate(SPLITS)}
MISSING_LABELS = frozenset({"nan", "na", "n/a", "null", "none", "nil"})


def looks_missing(label: str) -> bool:
    """A label spelt like a missing value (pandas, R, JSON, Python), e.g. 'NaN', 'NA', 'null', 'None'."""
    return isinstance(label, str) and label.strip().casefold() in MISSING_LABELS


def label_collisions(labels: list[str]) -> list[list[str]]:
    """Groups of labels equal after casefold().strip(): 'spam', 'Spam', 'spam ' are one class spelt three ways."""
    groups: dict[str, list[str]] = {}
    for label in labels:
        groups.setdefault(label.casefold().strip(), []).append(label)
    return [sorted(g) for g in groups.values() if len(g) > 1]


def content_conflicts(frame: pd.DataFrame, modality: str) -> dict[str, str]:
    """Rows to set aside because another row has the same content (sha256): every copy when the
    copies disagree on the label (a label conflict: which one is right is for a person to say),
    and, when they agree, the copies outside the earliest split (train, val, test) they are in (a
    copy in a later split leaks training data into evaluation)."""
    key = get_modality(modality).key_column  # how the user finds the row
    out: dict[str, str] = {}
    rows = frame[frame["sha256"].notna()]
    for _sha, group in rows[rows.duplicated("sha256", keep=False)].groupby("sha256", sort=False):
        members = group.to_dict("records")
        if group["label"].nunique() > 1:
            listed = ", ".join(f"{r[key]} ({r['split']}) as '{r['label']}'" for r in members)
            for r in members:
                out[r["id"]] = (f"label conflict: the same content is labelled differently: {listed}; "
                                "fix the wrong label or remove the copy")
            continue
        first = min(members, key=lambda r: SPLIT_ORDER.get(r["split"], len(SPLITS)))
        for r in members:
            if r["split"] != first["split"]:
                out[r["id"]] = (f"the same content as {first[key]} in {first['split']}: a copy in {r['split']} "
                                f"would leak it; the {first['split']} copy is kept (remove this one)")
    return out


def validate_manifest(manifest: pd.DataFrame, v: ValidateParams, classes: list[str], data_root: str,
                      workers: int = 0) -> ValidationReport:
    """Run the suites; returns the report (success False on any failure: the caller decides)."""
    start = time.perf_counter()
    modality = str(manifest["modality"].iloc[0]) if len(manifest) and "modality" in manifest else "image"
    kind = get_modality(modality)
    frame = manifest.copy()
    explicit = set(v.labels)
    missing = frame["label"].map(lambda lbl: looks_missing(lbl) and lbl not in explicit) & frame["error"].isna()
    frame.loc[missing, "error"] = frame.loc[missing, "label"].map(
        lambda lbl: f"label {lbl!r} looks like a missing value: fill in the label, or list {lbl!r} in "
                    "validate.labels if it is a class")
    labels = list(v.labels) or sorted(c for c in classes if not (looks_missing(c) and c not in explicit))
    # Importing Great Expectations takes 4-5 s on 2 cores: it happens while the worker
    # processes decode the images.
    import_gx = lambda: importlib.import_module("great_expectations.expectations")  # noqa: E731
    if kind.folder_data and {"path", "error"} <= set(frame.columns):
        frame["decode_error"] = kind.decode_errors(frame, data_root, v, workers, meanwhile=import_gx)
    import great_expectations.expectations as gxe

    suites = Suites()
    checks: list[Check] = []
    failures: list[str] = []
    notes: list[str] = []

    (cols,) = suites.run("columns", manifest.head(0), [
        gxe.ExpectTableColumnsToMatchSet(column_set=REQUIRED_COLUMNS, exact_match=False)], "id")
    if not cols.success:
        missing = sorted(set(REQUIRED_COLUMNS) - set(manifest.columns))
        raise DataValidationError(f"the manifest lacks columns {missing}; re-run `graft prepare`")

    for group in label_collisions(labels):
        failures.append(f"labels {group} differ only by case or surrounding space: one class spelt "
                        + ("several ways in validate.labels; keep one spelling" if v.labels else
                           "several ways in the data; make the rows agree (or list the classes in validate.labels)"))

    # row level
    row_exps = row_expectations(modality, labels, v)
    reasons: dict[str, list[str]] = {}
    by_id = frame.set_index("id", drop=False)
    for (_exp, why), er in zip(row_exps, suites.run("rows", frame, [e for e, _ in row_exps], "id"), strict=True):
        bad = failed_keys(er, "id")
        for rid in bad:
            reasons.setdefault(rid, []).append(str(why(by_id.loc[rid])))
        checks.append(check_result(er, "row", f"{len(bad)} row(s) fail" if bad else "all rows pass"))
    content = content_conflicts(frame[~frame["id"].isin(list(reasons))], modality)
    for rid, why in content.items():
        reasons.setdefault(rid, []).append(why)
    checks.append(Check("label conflicts and cross-split copies", "dataset", "critical", not content, len(content),
                        f"{len(content)} row(s) conflict with another row's label or copy it into another split"))
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
    checks.append(check_result(class_results[0], "dataset", f"{len(labels)} classes"))
    for split, er in zip(SPLITS, class_results[1:], strict=True):
        short = failed_keys(er, "label")
        for label in short:
            n = int(counts_frame.set_index("label").at[label, split])
            folder = f" ({data_root}/{label} has no usable {kind.noun})" if kind.folder_data and n == 0 else ""
            total = int(counts_frame.set_index("label").loc[label, list(SPLITS)].sum())
            why = (f" (each example's split is drawn from its content hash, and {total} example(s) "
                   f"drew {n} for {split}: add examples, give train/val/test folders, or raise "
                   f"prepare.split.{split})") if total else ""
            failures.append(f"class '{label}' has {n} usable example(s) in {split}, below "
                            f"validate.min_per_class.{split}={getattr(mins, split)}{folder}{why}; "
                            "add examples or lower the minimum")
        checks.append(check_result(er, "dataset", f"{len(short)} class(es) short in {split}"))

    hashes = accepted[["sha256", "split"]].dropna().drop_duplicates()
    (leak,) = suites.run("leakage", hashes, [gxe.ExpectColumnValuesToBeUnique(column="sha256")], "sha256")
    leaked = sorted(set(failed_keys(leak, "sha256")))
    for sha in leaked[:20]:
        dup = accepted[accepted["sha256"] == sha]
        where = ", ".join(f"{getattr(r, kind.key_column)} ({r.split})" for r in dup.itertuples())
        failures.append(f"the same content is in more than one split: {where}; keep one copy")
    checks.append(check_result(leak, "dataset", f"{len(leaked)} content hash(es) in several splits", len(leaked)))

    (dups,) = suites.run("duplicates", accepted, [gxe.ExpectCompoundColumnsToBeUnique(
        column_list=["sha256", "split"], severity="warning")], "id")
    dup_ids = failed_keys(dups, "id")
    if dup_ids:
        notes.append(f"{len(dup_ids)} rows share their content with another row of the same split "
                     f"(e.g. {', '.join(map(str, dup_ids[:5]))}); they are kept")
    checks.append(check_result(dups, "dataset", f"{len(dup_ids)} duplicate row(s) within splits"))

    counts = {str(r["label"]): {s: int(r[s]) for s in SPLITS} for r in counts_frame.to_dict("records")}
    return ValidationReport(
        success=not failures, modality=modality, labels=labels, labels_inferred=not v.labels,
        accepted=accepted.reset_index(drop=True), quarantine=quarantine.reset_index(drop=True),
        checks=checks, failures=failures, warnings=notes, counts=counts, gx=suites.raw,
        seconds=time.perf_counter() - start)


def run_validate(params: Params, ws: Workspace) -> ValidationReport:
    """Stage entry: validate prepare's manifest and write the report, quarantine and accepted rows.

    On failure the reports are written and DataValidationError raised; the previous accepted
    manifest and params.yaml are left as they were. Inferred labels are frozen into
    ws.params_file when there is one.
    """
    prep, out, params_file = ws.prepare, ws.validate, ws.params_file
    manifest_path = require(prep / MANIFEST, "prepare")
    info = json.loads(require(prep / PREPARE_SUMMARY, "prepare").read_text(encoding="utf-8"))
    manifest = pd.read_parquet(manifest_path)
    report = validate_manifest(manifest, params.validate_, info["classes"], info["data_root"],
                               params.prepare.workers)
    summary = report.summary()
    write_json_atomic(out / VALIDATION, {"summary": summary, "great_expectations": report.gx})
    keep = ["id", "path", "text", "label", "split", "reason"]
    write_text_atomic(out / QUARANTINE, report.quarantine.reindex(columns=keep).to_csv(index=False))
    write_text_atomic(out / VALIDATION_HTML, render_html(summary, report.quarantine))
    if not report.success:
        raise DataValidationError(
            "validation failed:\n  - " + "\n  - ".join(report.failures), str(out / VALIDATION_HTML), summary)
    write_parquet_atomic(out / MANIFEST, report.accepted)
    write_json_atomic(out / VALIDATION_METRICS, {k: summary[k] for k in
                                             ("success", "rows", "accepted", "quarantined")})
    used = params.validate_.model_copy(update={"labels": report.labels})
    save_resolved(params.model_copy(update={"validate_": used}), out, "validate")
    if report.labels_inferred and params_file is not None and Path(params_file).exists():
        freeze_labels(params_file, report.labels)
    return report
