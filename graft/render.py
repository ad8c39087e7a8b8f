"""Terminal rendering of stage results: one screen each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape
from rich.table import Table

from pipeline.core.artifacts import SPLITS, Workspace
from pipeline.modalities.registry import get_modality


def esc(text: str) -> str:
    return escape(text)


def _counts_table(counts: dict[str, dict[str, int]]) -> Table:
    table = Table()
    table.add_column("label")
    for split in SPLITS:
        table.add_column(split, justify="right")
    table.add_column("total", justify="right")
    for label, c in counts.items():
        table.add_row(escape(label), *(str(c.get(s, 0)) for s in SPLITS), str(sum(c.values())))
    return table


def prepare_summary(console: Console, s: dict[str, Any], out_dir: Path) -> None:
    console.print(f"prepare: {s['rows']} {s['modality']} examples from {escape(s['data_root'])}")
    console.print(_counts_table(s["counts"]))
    if s["rows_with_errors"]:
        console.print(f"[yellow]{s['rows_with_errors']} row(s) could not be read; validate will "
                      "quarantine them with the reason[/]")
    if s["skipped_files"]:
        console.print(f"skipped {len(s['skipped_files'])} file(s) without an image extension, "
                      f"e.g. {escape(s['skipped_files'][0])}")
    console.print(f"manifest: {out_dir / 'manifest.parquet'}  ({s['seconds']:.2f} s)")


def validation_summary(console: Console, s: dict[str, Any], out_dir: Path) -> None:
    verdict = "[bold green]PASSED[/]" if s["success"] else "[bold red]FAILED[/]"
    console.print(f"validate: {verdict}  {s['rows']} rows, {s['accepted']} accepted, "
                  f"{s['quarantined']} quarantined  ({s['seconds']:.2f} s)")
    console.print(_counts_table(s["counts"]))
    failed = [c for c in s["checks"] if not c["success"]]
    if failed:
        table = Table(title="checks that did not pass", title_justify="left")
        for col in ("level", "severity", "check", "rows", "detail"):
            table.add_column(col, justify="right" if col == "rows" else "left")
        for c in failed:
            table.add_row(c["level"], c["severity"], escape(c["name"]), str(c["unexpected"]), escape(c["detail"]))
        console.print(table)
    for w in s["warnings"]:
        console.print(f"[yellow]warning:[/] {escape(w)}", soft_wrap=True)
    for f in s["failures"]:
        console.print(f"[red]failure:[/] {escape(f)}", soft_wrap=True)
    if s["quarantined"]:
        console.print(f"quarantined rows and reasons: {out_dir / 'quarantine.csv'}")
    console.print(f"report: {out_dir / 'report.html'}")


def leaderboard(console: Console, result: Any, out_dir: Path) -> None:
    table = Table(title_justify="left")
    for col in ("#", "candidate", "status", "ranking macro-F1", "ranking acc", "params (M)", "MB", "ms (b1)"):
        left = col in ("candidate", "status")
        table.add_column(col, justify="left" if left else "right", overflow="fold",
                         min_width=24 if col == "candidate" else None)
    for i, s in enumerate(result.scores, 1):
        status = s.status if s.status == "ok" else f"[yellow]{s.status}[/]"
        f1 = "-" if s.probe_macro_f1 != s.probe_macro_f1 else f"{s.probe_macro_f1:.3f}±{s.probe_macro_f1_std:.3f}"
        acc = "-" if s.probe_accuracy != s.probe_accuracy else f"{s.probe_accuracy:.3f}"
        ms = "-" if s.latency_ms != s.latency_ms else f"{s.latency_ms:.1f}"
        table.add_row(str(i), escape(s.name), status, f1, acc, f"{s.params / 1e6:.2f}", f"{s.size_mb:.1f}", ms)
    console.print(f"select: {len(result.scores)} candidate(s), ranked by a ridge probe cross-validated on a sample of "
                  f"{result.sample_size} training examples (a ranking score, not the model's accuracy)", soft_wrap=True)
    console.print(table)
    for s in result.scores:
        if s.reason:
            console.print(f"[yellow]{escape(s.name)}:[/] {escape(s.reason)}", soft_wrap=True)
    pv = result.probe_val
    console.print(f"full probe of {escape(result.chosen.name)} (logistic regression on all of train, on val): "
                  f"macro-F1 {pv['macro_f1']:.3f}, accuracy {pv['accuracy']:.3f}", soft_wrap=True, highlight=False)
    console.print(f"chosen: [bold]{escape(result.chosen.name)}[/], strategy [bold]{result.strategy}[/]")
    for reason in result.reasons:
        console.print(f"  - {escape(reason)}", soft_wrap=True)
    audit = result.audit
    if audit is not None:
        colour = "yellow" if len(audit.issues) else "green"
        console.print(f"label audit ({audit.mode}): [{colour}]{len(audit.issues)} of {audit.examined}[/] train/val "
                      "labels look wrong (cleanlab, out-of-fold probabilities)"
                      + ("; the training ones are left out of training" if audit.mode == "quarantine" and
                         len(audit.issues) else ""), soft_wrap=True)
        if len(audit.issues):
            table = Table("id", "split", "label", "suggested", "P(label)", title_justify="left")
            for r in audit.issues.head(10).itertuples():
                table.add_row(escape(str(r.id)), r.split, escape(str(r.label)), escape(str(r.suggested)),
                              f"{r.label_probability:.3f}")
            console.print(table)
            console.print(f"all of them: {out_dir / 'label_issues.csv'}")
    console.print(f"leaderboard: {out_dir / 'leaderboard.md'}")


def epoch(console: Console, row: dict[str, Any]) -> None:
    if "trainable_groups" not in row and int(row["epoch"]) % 10:  # head epochs are cheap and many
        return
    groups = f"  groups {int(row['trainable_groups'])}" if "trainable_groups" in row else ""
    took = f"  ({row['seconds']:.0f} s)" if "seconds" in row else ""
    console.print(f"epoch {int(row['epoch']) + 1:3d}  train loss {row['train_loss']:.4f}  "
                  f"val loss {row['val_loss']:.4f}  val acc {row['val_accuracy']:.4f}  "
                  f"val macro-F1 {row['val_macro_f1']:.4f}{groups}{took}", highlight=False)


def train_summary(console: Console, r: Any) -> None:
    if r.strategy == "linear_probe":
        best = f"C={r.history[r.best_epoch]['C']:g} of {r.epochs_run} tried"
    elif r.best_epoch >= 0:
        best = f"best epoch {r.best_epoch + 1} of {r.epochs_run}"
    else:
        best = (f"[yellow]no fine-tuned epoch of {r.epochs_run} beat the frozen probe on val by train.min_gain "
                "with a gain val can vouch for (train.gain_confidence): the probe head is kept[/]")
    console.print(f"train: strategy [bold]{r.strategy}[/], {best} ({r.seconds:.0f} s); stopped by {escape(r.stopped)}",
                  soft_wrap=True)
    console.print(f"shipped weights: {escape(r.refit)}", soft_wrap=True, highlight=False)
    if r.tta.get("gain") is not None:
        console.print(f"test-time augmentation: {r.tta['tta']} (mirrored view, val macro-F1 {r.tta['gain']:+.4f}): "
                      f"{escape(r.tta['reason'])}", soft_wrap=True, highlight=False)
    cal = r.calibration
    console.print(f"calibration: temperature {cal['temperature']:.2f}, val ECE {cal['val_ece_before']:.4f} -> "
                  f"{cal['val_ece_after']:.4f}", highlight=False)
    table = Table()
    for col in ("split", "macro-F1", "accuracy", "loss"):
        table.add_column(col, justify="left" if col == "split" else "right")
    table.add_row("frozen probe (val)", f"{r.probe_val['macro_f1']:.4f}", f"{r.probe_val['accuracy']:.4f}",
                  f"{r.probe_val['loss']:.4f}")
    for name, m in (("val", r.val), ("test", r.test)):
        table.add_row(name, f"{m['macro_f1']:.4f}", f"{m['accuracy']:.4f}", f"{m['loss']:.4f}")
    console.print(table)
    console.print(f"model: {r.model_dir}")


def export_summary(console: Console, r: Any) -> None:
    p = r.parity
    console.print(f"export: {r.onnx_path} on {r.provider}: max |logit diff| {p.max_abs_diff_logits:.2e}, "
                  f"top-1 agreement {p.top1_agreement:.2%} over {p.examples} test examples", soft_wrap=True)
    table = Table()
    for col in ("runtime", "p50 b1 (ms)", "p95 b1", "p50 b32 (ms)", "p95 b32", "vs torch b1", "vs torch b32"):
        table.add_column(col, justify="left" if col == "runtime" else "right")
    lat = r.latency_ms
    for name in ("torch", "onnx", "onnx_int8"):
        if f"{name}_b1" not in lat:
            continue
        b1, b32 = lat[f"{name}_b1"], lat[f"{name}_b32"]
        table.add_row(name, f"{b1['p50']:.2f}", f"{b1['p95']:.2f}", f"{b32['p50']:.1f}", f"{b32['p95']:.1f}",
                      f"{lat['torch_b1']['p50'] / b1['p50']:.2f}x", f"{lat['torch_b32']['p50'] / b32['p50']:.2f}x")
    console.print(table)
    if r.int8:
        q = r.int8
        verdict = "shipped" if q["shipped"] else "NOT shipped: " + "; ".join(q["reasons"])
        console.print(f"int8 ({q['method']}): accuracy {q['accuracy_int8']:.4f} vs fp32 {q['accuracy_fp32']:.4f}, "
                      f"top-1 agreement {q['top1_agreement']:.2%}, {q['speedup_b1']:.2f}x fp32 at batch 1, "
                      f"{q['size_mb']:.1f} MB: {verdict}", soft_wrap=True, highlight=False)


def evaluation_summary(console: Console, r: Any, out_dir: Path) -> None:
    m = r.metrics
    console.print(f"evaluate (test): macro-F1 {m['macro_f1']:.4f}  accuracy {m['accuracy']:.4f}  "
                  f"ROC-AUC {m['roc_auc']:.4f}  ECE {m['ece']:.4f} (uncalibrated {m.get('ece_uncalibrated', m['ece']):.4f})  "
                  f"loss {m['loss']:.4f}", highlight=False)
    table = Table()
    for col in ("class", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for label, c in r.per_class.items():
        table.add_row(escape(label), f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", str(c["support"]))
    console.print(table)
    for column, values in r.slices.items():
        parts = ", ".join(f"{k}: {v['macro_f1']:.3f} (n={v['count']})" for k, v in values.items())
        console.print(f"slice {escape(column)}: {escape(parts)}")
    console.print("behaviour (unchanged predictions): " +
                  ", ".join(f"{k} {v:.1%}" for k, v in r.behaviour.items()))
    console.print(f"plots: {out_dir / 'confusion.png'}, {out_dir / 'reliability.png'}")


def gate_summary(console: Console, g: Any, _ws: Workspace | None = None) -> None:
    colour = {"blessed": "green", "rejected": "red", "needs_approval": "yellow", "unchanged": "cyan"}[g.status]
    console.print(f"model {escape(g.model)} ({g.strategy}), registered as [bold]{g.version}[/]: [{colour}]{g.status}[/]"
                  + (" and promoted to champion" if g.promoted else ""))
    t = g.test_metrics
    console.print(f"test: macro-F1 {t['macro_f1']:.4f}, accuracy {t['accuracy']:.4f}, ECE {t['ece']:.4f}, "
                  f"ONNX b1 {t['latency_ms_b1']:.1f} ms, {t['size_mb']:.1f} MB", highlight=False)
    console.print(Markdown(g.decision.to_markdown()))
    console.print(f"champion: {g.champion or 'none'} (was {g.previous_champion or 'none'});  "
                  f"data {g.data_version or 'not tracked'}")


def run_summary(console: Console, s: Any) -> None:
    console.rule("graft run")
    if not s.ran:
        console.print("[cyan]nothing changed since the last run[/]: its gate decision stands")
    gate_summary(console, s.gate)
    console.print(f"via {s.via};  {s.path}")


def models(console: Console, versions: list[Any], champion: str | None) -> None:
    if not versions:
        console.print("no model versions yet: `graft run` registers one")
        return
    table = Table()
    for col in ("version", "status", "champion", "model", "strategy", "test macro-F1", "created"):
        table.add_column(col)
    for v in versions:
        test = v.summary.get("test", {})
        table.add_row(v.name, v.status, "*" if v.name == champion else "", escape(v.summary.get("model", "")),
                      v.summary.get("strategy", ""), f"{test.get('macro_f1', float('nan')):.4f}", v.created)
    console.print(table)


def score_summary(console: Console, r: Any, log: str | None) -> None:
    counts = ", ".join(f"{k} {v}" for k, v in sorted(r.counts.items()))
    console.print(f"scored {r.scored} inputs with {r.model_version}: {counts or 'nothing'} -> {r.output}")
    for path, why in r.skipped[:10]:
        console.print(f"[yellow]skipped[/] {esc(path)}: {esc(why)}")
    if len(r.skipped) > 10:
        console.print(f"[yellow]... and {len(r.skipped) - 10} more skipped[/]")
    if log:
        console.print(f"logged to {log}")


def queue_summary(console: Console, r: Any) -> None:
    console.print(f"label queue: {len(r.picked)} of {r.considered} logged inputs of {r.version} chosen "
                  f"(the {r.pool} least certain, then the most varied; asked for {r.asked})"
                  + (" - the rest were near-duplicates" if r.stopped_early else ""), soft_wrap=True)
    if len(r.picked):
        field = "text" if "text" in r.picked else "image"
        table = Table(field, "predicted", "confidence", "margin", title_justify="left")
        for row in r.picked.head(10).itertuples():
            value = str(getattr(row, field))
            table.add_row(esc(value[:80] + ("..." if len(value) > 80 else "")), esc(str(row.predicted)),
                          f"{row.confidence:.3f}", f"{row.margin:.3f}")
        console.print(table)
    for f in r.files:
        console.print(f"wrote {f}")
    console.print("import the .json into a Label Studio project made with label_config.xml; drop the labelled "
                  "export (JSON or CSV) into the inbox and `graft ingest` merges it", soft_wrap=True)


def drift_summary(console: Console, r: Any) -> None:
    colour = {"drift": "bold red", "no_drift": "green", "insufficient_data": "yellow"}[r.decision]
    console.print(f"monitor {r.champion}: [{colour}]{r.decision}[/] ({r.current_records} current vs "
                  f"{r.reference_records} reference records, {r.seconds:.1f} s)")
    if r.columns:
        table = Table("column", "method", "score", "threshold", "drifted")
        for col, c in r.columns.items():
            table.add_row(col, c["method"], f"{c['score']:.4g}", f"{c['threshold']:g}",
                          "[red]yes[/]" if c.get("drifted") else "no")
        e = r.embedding
        table.add_row("embedding", e["method"], f"{e['score']:.4g}", f"{e['threshold']:.4g}",
                      "[red]yes[/]" if e["drifted"] else "no")
        if "novelty" in e:
            n = e["novelty"]
            table.add_row("novel rows", "nearest neighbour", f"{n['score']:.1%} (p={n['p_value']:.2g})",
                          f"p < {n['threshold']:.2g}", "[red]yes[/]" if n["drifted"] else "no")
        console.print(table)
    for reason in r.reasons:
        console.print(f"- {esc(reason)}")
    if r.trigger:
        console.print("[bold]retraining triggered[/]")
    if r.report_html:
        console.print(f"report: {r.report_html}")
    if r.performance_html:
        console.print(f"performance without labels: {r.performance_html}")


_STAGE_SUMMARY = {
    "prepare": lambda c, r, ws: prepare_summary(c, r.summary(), ws.prepare),
    "validate": lambda c, r, ws: validation_summary(c, r.summary(), ws.validate),
    "select": lambda c, r, ws: leaderboard(c, r, ws.select),
    "train": lambda c, r, ws: train_summary(c, r),
    "evaluate": lambda c, r, ws: evaluation_summary(c, r, ws.evaluate),
    "export": lambda c, r, ws: export_summary(c, r),
    "gate": gate_summary,
}


def stage_summary(console: Console, name: str, result: Any, ws: Workspace) -> None:
    """One screen for a stage's result (None: the stage ran through DVC, which printed its own)."""
    if result is not None:
        _STAGE_SUMMARY[name](console, result, ws)


def init_summary(console: Console, r: Any) -> None:
    d = r.detected
    what = (f"{get_modality(d.modality).noun}: {d.rows} files in {len(d.labels)} class folders"
            if get_modality(d.modality).folder_data else
            f"text table: {d.rows} rows, texts in '{d.text_column}', labels in '{d.label_column}'")
    console.print(f"[bold]graft workspace[/] {esc(str(r.root))}")
    console.print(f"  data     {esc(r.data_ref)} ({what})")
    console.print(f"  labels   {esc(', '.join(d.labels[:12]))}{' ...' if len(d.labels) > 12 else ''} ({len(d.labels)})")
    for note in d.notes:
        console.print(f"  detected {esc(note)}")
    console.print(f"  DVC      {'data tracked by dvc add' if r.tracked else 'data outside: versioned in dvc.lock'}; "
                  f"scm: {r.scm}; remote: dvcstore/")
    console.print(f"  wrote    {', '.join(r.written)}")
    console.print("next:")
    for line in r.next_commands:
        console.print(f"  {esc(line)}")
