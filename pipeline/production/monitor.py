"""monitor: is production still like what the champion saw on data it did not train on? (Evidently 0.7)

Reference: the champion's profile of its held-out (val and test) examples - summary features,
predicted class, confidence, embedding - computed once at export with the served model and stored
with the version. Current: the production log's records for that champion in the last
`window_hours` (at most `window_records`). Evidently reports: DataDriftPreset over the summary
features, confidence (Kolmogorov-Smirnov) and pred (a two-sample chi-square test: stattests.py), on every row, and
EmbeddingsDrift (classifier ROC AUC) on the same number of rows from each side. The rule
(`rule.py`) fires on any column or the embedding and says its false-alarm rate; at least
`min_records` current records are needed; a retraining is triggered once per episode
(`cooldown_hours` per champion), recorded in state.json.
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.params import MonitorParams, Params
from pipeline.core.storage import Store
from pipeline.modalities.registry import get_modality
from pipeline.production import performance_report, stattests
from pipeline.production.estimate import estimate_performance
from pipeline.production.novelty import novelty_test
from pipeline.production.prodlog import read_log
from pipeline.production.realised import load_labels, realised_performance
from pipeline.production.reference import load_reference, reference_rows
from pipeline.production.retention import prune_log
from pipeline.production.rule import DriftRule, drift_rule
from pipeline.release.registry import Registry, champion_dir


@dataclass
class DriftResult:
    champion: str
    decision: str  # drift | no_drift | insufficient_data
    drift: bool
    trigger: bool
    reasons: list[str]
    current_records: int
    reference_records: int
    window: dict[str, Any]
    columns: dict[str, dict[str, Any]] = field(default_factory=dict)
    drift_share: float = 0.0
    embedding: dict[str, Any] = field(default_factory=dict)
    rule: dict[str, Any] = field(default_factory=dict)  # the decision rule and its false-alarm rate
    performance: dict[str, Any] = field(default_factory=dict)  # the label-free estimate and the estimated drop
    reference_rows: dict[str, int] = field(default_factory=dict)  # per split: what the reference holds
    report_html: str = ""
    performance_html: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------ the report

def _embedding_method(mp: MonitorParams, threshold: float) -> Any:
    from evidently.legacy.metrics.data_drift import embedding_drift_methods as methods

    return getattr(methods, mp.embedding_method)(threshold=threshold)


def _embedding_rows(reference: pd.DataFrame, current: pd.DataFrame, rows: int,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """At most `rows` embeddings from each side (seeded): the rows the classifier method sees,
    in the decision and in embedding.html alike."""
    rng = np.random.default_rng(seed)
    out = []
    for frame in (current, reference):
        emb = np.stack(frame["embedding"].to_numpy()).astype(np.float32)
        out.append(emb[np.sort(rng.choice(len(emb), rows, replace=False))] if len(emb) > rows else emb)
    return out[0], out[1]


# p-value tests, so the rule can set their level; the categorical one is two-sample (stattests.py)
COLUMN_TESTS = {"numerical": "ks", "categorical": stattests.NAME}


def drift_tests(reference: pd.DataFrame, current: pd.DataFrame, features: list[str] | tuple[str, ...],
                mp: MonitorParams) -> tuple[dict[str, dict[str, Any]], dict[str, Any], DriftRule]:
    """The numbers the decision reads, from Evidently's own stat tests and embedding drift method
    (the ones its reports run, without their plots): a p-value per column (every row), the
    classifier's AUC on the same number of rows from each side (at most `embedding_sample`: its
    cost grows with rows x dimensions, and with unequal sides it drifts towards predicting the
    larger one), and the novelty test on every row. Returns (per column, embedding, rule)."""
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    stattests.register()
    kinds = {**{c: ColumnType.Numerical for c in [*features, "confidence"]}, "pred": ColumnType.Categorical}
    rows = min(mp.embedding_sample, len(current), len(reference))
    rule = drift_rule(mp, len(kinds), rows)
    per_col: dict[str, dict[str, Any]] = {}
    with warnings.catch_warnings(), np.errstate(all="ignore"):  # constant columns (no OOV words) divide by 0
        warnings.simplefilter("ignore")
        for col, kind in kinds.items():
            name = COLUMN_TESTS["numerical" if kind == ColumnType.Numerical else "categorical"]
            ref, cur = reference[col].reset_index(drop=True), current[col].reset_index(drop=True)
            test = get_stattest(ref, cur, kind, name)(ref, cur, kind, rule.column_alpha)
            per_col[col] = {"method": name, "threshold": rule.column_alpha, "score": float(test.drift_score),
                            "drifted": bool(test.drifted)}
        cur_sample, ref_sample = _embedding_rows(reference, current, rows, mp.seed)
        score, _, _ = _embedding_method(mp, rule.embedding_threshold)(pd.DataFrame(cur_sample),
                                                                      pd.DataFrame(ref_sample))
    novelty = novelty_test(np.stack(reference["embedding"].to_numpy()), np.stack(current["embedding"].to_numpy()),
                           rule.novelty_alpha, seed=mp.seed)
    embedding = {"method": mp.embedding_method, "threshold": rule.embedding_threshold, "score": float(score),
                 "drifted": bool(score > rule.embedding_threshold), "rows_per_side": rows, "novelty": novelty}
    return per_col, embedding, rule


def drift_report(reference: pd.DataFrame, current: pd.DataFrame, features: list[str] | tuple[str, ...],
                 mp: MonitorParams) -> tuple[list[Any], dict[str, dict[str, Any]], dict[str, Any], DriftRule]:
    """drift_tests, and the Evidently reports a person reads (report.html: the columns with the
    same tests and levels; embedding.html: the embedding method with its plots). Returns
    ([feature snapshot, embedding snapshot], per column, embedding, rule)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift
    from evidently.presets import DataDriftPreset

    per_col, embedding, rule = drift_tests(reference, current, features, mp)
    numeric = [*features, "confidence"]
    columns = [*numeric, "pred"]
    cur_sample, ref_sample = _embedding_rows(reference, current, embedding["rows_per_side"], mp.seed)
    emb_columns = [f"emb_{i}" for i in range(cur_sample.shape[1])]
    features_def = DataDefinition(numerical_columns=numeric, categorical_columns=["pred"])
    emb_def = DataDefinition(embeddings={"embedding": emb_columns})
    preset = DataDriftPreset(columns=columns, num_method=COLUMN_TESTS["numerical"],
                             cat_method=COLUMN_TESTS["categorical"], num_threshold=rule.column_alpha,
                             cat_threshold=rule.column_alpha)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        feat = Report([preset], include_tests=True).run(
            current_data=Dataset.from_pandas(current[columns].reset_index(drop=True), data_definition=features_def),
            reference_data=Dataset.from_pandas(reference[columns].reset_index(drop=True), data_definition=features_def))
        emb = Report([EmbeddingsDrift(embeddings_name="embedding",
                                      drift_method=_embedding_method(mp, rule.embedding_threshold))]).run(
            current_data=Dataset.from_pandas(pd.DataFrame(cur_sample, columns=emb_columns), data_definition=emb_def),
            reference_data=Dataset.from_pandas(pd.DataFrame(ref_sample, columns=emb_columns), data_definition=emb_def))
    return [feat, emb], per_col, embedding, rule


def drift_decision(per_col: dict[str, dict[str, Any]], emb: dict[str, Any], rule: DriftRule) -> tuple[bool, list[str]]:
    """Drift when any column's test, the embedding test or the novelty test fires; the reasons end with the rule."""
    drifted = [c for c, r in per_col.items() if r.get("drifted")]
    reasons = []
    if drifted:
        detail = ", ".join(f"{c} (p={per_col[c]['score']:.2g})" for c in drifted)
        reasons.append(f"{len(drifted)} of {len(per_col)} columns drifted (p < {rule.column_alpha:.2g}): {detail}")
    if emb["drifted"]:
        reasons.append(f"embedding drift score {emb['score']:.3f} > {emb['threshold']:.3f} ({emb['method']}, "
                       f"{emb['rows_per_side']} rows per side)")
    nov = emb["novelty"]
    novel = f"{nov['score']:.1%} of rows unlike the reference (expected {nov['expected']:.1%}, p={nov['p_value']:.2g})"
    if nov["drifted"]:
        reasons.append(novel)
    drift = bool(reasons)
    if not drift:
        reasons.append(f"no column drifted (each p >= {rule.column_alpha:.2g}); embedding score "
                       f"{emb['score']:.3f} <= {emb['threshold']:.3f}; {novel}")
    return drift, [*reasons, f"rule: {rule.describe()}"]


# ------------------------------------------------------------------------ performance without labels


def estimated_performance(params: Params, name: str, model_dir: Path, reference: pd.DataFrame,
                          current: pd.DataFrame) -> dict[str, Any]:
    """The label-free estimate on the window and its drop from the champion's test accuracy."""
    mp = params.monitor
    labels = json.loads((model_dir / "preprocess.json").read_text(encoding="utf-8"))["labels"]
    estimate = estimate_performance(reference, current.reset_index(drop=True), labels, mp.estimator, seed=mp.seed)
    test = Registry(params.paths.registry).get(name).summary.get("test", {}).get("accuracy")
    drop = None if test is None else float(test) - estimate.accuracy
    summary = estimate.describe()
    if drop is not None:
        summary += (f"; {drop:.3f} below the test accuracy {float(test):.3f}" if drop >= 0 else
                    f"; {-drop:.3f} above the test accuracy {float(test):.3f}")
    realised = realised_performance(current, load_labels(params.paths.monitor), reference, labels, mp.estimator,
                                    mp.seed)
    return {**estimate.to_dict(), "test_accuracy": test, "estimated_drop": drop,
            "harmful": bool(drop is not None and drop > mp.max_estimated_drop),
            "max_estimated_drop": mp.max_estimated_drop, "summary": summary, "realised": realised}


def trigger_rule(mp: MonitorParams, result: DriftResult) -> tuple[bool, str]:
    """Whether this window asks for retraining under monitor.trigger, and the sentence that says why."""
    if result.decision == "insufficient_data":
        return False, ""
    harmful = bool(result.performance.get("harmful"))
    wanted = {"drift": result.drift, "estimated_drop": harmful, "drift_and_drop": result.drift and harmful,
              "drift_or_drop": result.drift or harmful}[mp.trigger]
    said = {"drift": "input drift", "estimated_drop": f"an estimated accuracy drop > {mp.max_estimated_drop:g}",
            "drift_and_drop": f"input drift with an estimated accuracy drop > {mp.max_estimated_drop:g}",
            "drift_or_drop": f"input drift or an estimated accuracy drop > {mp.max_estimated_drop:g}"}[mp.trigger]
    return wanted, (f"monitor.trigger={mp.trigger}: {said} "
                    + ("asks for retraining" if wanted else "does not hold: no retraining"))


# ------------------------------------------------------------------------ the stage

def _state(out: Store) -> dict[str, Any]:
    return out.read_json("state.json") if out.exists("state.json") else {}


def _html(out: Store, name: str, snapshot: Any) -> str:
    """An Evidently report saved into the monitor's folder or store; its location."""
    with tempfile.TemporaryDirectory(prefix="graft-monitor-") as tmp:
        path = Path(tmp) / name
        snapshot.save_html(str(path))
        out.put(path.read_bytes(), name)
    return out.show(name)


def run_monitor(params: Params, out_dir: str | Path, now: datetime | None = None,
                current: pd.DataFrame | None = None) -> DriftResult:
    """Stage entry: drift of the production log's window against the champion's reference.

    Writes report.html, drift.json and appends to history.jsonl in out_dir (paths.monitor: a
    folder, or a URL the machines that monitor share); state.json there holds the last retraining
    trigger (the cooldown)."""
    start = time.perf_counter()
    mp, out = params.monitor, Store(out_dir)
    now = now or datetime.now(timezone.utc)
    name, model_dir = champion_dir(params.paths.registry)
    reference = load_reference(model_dir)
    features = get_modality(json.loads((model_dir / "preprocess.json").read_text(encoding="utf-8"))["modality"]
                            ).feature_names
    read_from_log = current is None
    if current is None:
        current = read_log(params.paths.log, hours=mp.window_hours, now=now)
        if len(current):
            current = current[current["model_version"] == name]  # pred, confidence and embedding are per model
        current = current.tail(mp.window_records) if mp.window_records else current
    window = {"hours": mp.window_hours, "max_records": mp.window_records, "end": now.isoformat(),
              "log": params.paths.log,
              "skipped_parts": {name: why for name, why in current.attrs.get("skipped_parts", [])}}
    if read_from_log:  # retention, once the window is read; never inside a window
        sp = params.serve
        keep = max(sp.keep_inputs_days, mp.window_hours / 24) if sp.keep_inputs_days else 0.0
        window["pruned"] = prune_log(params.paths.log, keep, sp.keep_inputs_mb, now).to_dict()
    base = dict(champion=name, current_records=len(current), reference_records=len(reference), window=window,
                reference_rows=reference_rows(reference) if "split" in reference else {})
    if len(current) < mp.min_records:
        result = DriftResult(**base, decision="insufficient_data", drift=False, trigger=False, reasons=[
            f"{len(current)} production records of {name} in the window, fewer than monitor.min_records="
            f"{mp.min_records}: no decision"])
    else:
        (feat, emb_snap), per_col, emb, rule = drift_report(reference, current.reset_index(drop=True),
                                                            features, mp)
        html = _html(out, "report.html", feat)
        _html(out, "embedding.html", emb_snap)
        drift, reasons = drift_decision(per_col, emb, rule)
        drifted = sum(bool(c.get("drifted")) for c in per_col.values())
        performance = estimated_performance(params, name, model_dir, reference, current)
        reasons.insert(-1, performance["summary"])
        if performance["realised"]:
            reasons.insert(-1, performance["realised"]["summary"])
        result = DriftResult(**base, decision="drift" if drift else "no_drift", drift=drift, trigger=False,
                             reasons=reasons, columns=per_col, drift_share=drifted / max(len(per_col), 1),
                             embedding=emb, rule=rule.to_dict(), performance=performance, report_html=html)
    wanted, why = trigger_rule(mp, result)
    if why:
        result.reasons.append(why)
    if wanted:
        state = _state(out)
        last = datetime.fromisoformat(state["last_trigger"]) if state.get("champion") == name else None
        if last is not None and now - last < timedelta(hours=mp.cooldown_hours):
            result.reasons.append(f"retraining already triggered for {name} at {last:%Y-%m-%d %H:%M} UTC "
                                  f"(monitor.cooldown_hours={mp.cooldown_hours:g}): not triggered again")
        else:
            result.trigger = True
            out.put_json({"champion": name, "last_trigger": now.isoformat(), "reasons": result.reasons}, "state.json")
    history = out.read_bytes("history.jsonl") if out.exists("history.jsonl") else b""
    if result.performance:
        past = [json.loads(x) for x in history.decode().splitlines() if x.strip()]
        out.put(performance_report.render(result.to_dict(), [h for h in past if h.get("champion") == name]).encode(),
                "performance.html")
        result.performance_html = out.show("performance.html")
    result.seconds = time.perf_counter() - start
    out.put_json(result.to_dict(), "drift.json")
    line = json.dumps({k: v for k, v in result.to_dict().items() if k != "columns"}, default=str) + "\n"
    out.put(history + line.encode(), "history.jsonl")  # one monitoring run at a time writes here
    return result
