"""Terminal rendering of stage results: one screen each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

SPLITS = ("train", "val", "test")


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
